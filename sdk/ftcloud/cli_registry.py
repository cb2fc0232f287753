"""``ftcloud register | approve | reject | versions``: the model registry commands.

Each is one SDK call (:meth:`ftcloud.sdk.Client.register` and friends) plus printing. Imports only
click and the CLI helpers at start-up; registered from :mod:`ftcloud.cli`.
"""

from __future__ import annotations

from typing import Any

import click

from ftcloud.cli import (
    _as_json,
    _client,
    _complete_job_names,
    _emit_json,
    cli,
    common_options,
    key_value_pairs,
)
from ftcloud.cli import format_time as _when


def _registry_header(registry: Any) -> None:
    click.echo(f"registry: {registry.name} · {registry.describe_target()}", err=True)


def _status_line(version: Any) -> str:
    line = f"{version.ref}: {version.status}"
    if version.approval_reason:
        line += f" ({version.approval_reason})"
    return line + (f"  {version.arn}" if version.arn else "")


@cli.command()
@click.argument("job", required=False, shell_complete=_complete_job_names)
@click.option("--from-tuning", metavar="TUNE", help="Register the best trial of tuning TUNE instead of a named JOB.")
@click.option("--group", help="Model group (default: the platform's ModelPackageGroupName; locally ftcloud-models).")
@click.option("--description", help="Description kept with the version.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag the version (repeatable).")
@common_options
def register(job: str | None, from_tuning: str | None, group: str | None, description: str | None,
             tags: tuple[str, ...]) -> None:
    """Register a Completed job (or the best trial of --from-tuning TUNE) as a new model version,
    pending manual approval.

    The version records the artifact, the serving image and environment, the evaluation metrics
    and the lineage (base model, data content hash, spec hash, technique, code version).
    """
    if (job is None) == (from_tuning is None):
        raise click.UsageError("give a JOB or --from-tuning TUNE (one of the two).")
    client = _client()
    backend_name = client.tuner_for(from_tuning).name if from_tuning else client.backend_for_job(job).name
    _registry_header(client.registry(backend_name))
    version = client.register(job, group, description=description, tags=key_value_pairs(tags, "--tag"),
                              from_tuning=from_tuning)
    if _as_json():
        _emit_json(version.to_dict())
        return
    job = job or version.lineage.get("training_job", "the best trial")
    click.echo(f"Registered {job}{f' (best trial of {from_tuning})' if from_tuning else ''} as {version.ref} "
               f"({version.status}).")
    if version.arn:
        click.echo(f"  package: {version.arn}")
    click.echo(f"  artifact: {version.artifact}")
    if "eval_loss" in version.metrics:
        click.echo(f"  eval_loss: {version.metrics['eval_loss']:.4g}")
    click.echo(f"Approve it: ftcloud approve {version.ref} --reason TEXT   (or reject it with a reason)")


def _decide(ref: str, reason: str | None, verb: str) -> None:
    """approve / reject: one SDK call on the registry REF lives in, then print the new status."""
    client = _client()
    _registry_header(client.registry_for_ref(ref))
    version = getattr(client, verb)(ref, reason)
    if _as_json():
        _emit_json(version.to_dict())
    else:
        click.echo(_status_line(version))


@cli.command()
@click.argument("ref", metavar="REF")
@click.option("--reason", help="Why it is approved (kept with the version).")
@common_options
def approve(ref: str, reason: str | None) -> None:
    """Approve a model version: REF is a package ARN, GROUP:VERSION or GROUP (its latest)."""
    _decide(ref, reason, "approve")


@cli.command()
@click.argument("ref", metavar="REF")
@click.option("--reason", required=True, help="Why it is rejected (required; kept with the version).")
@common_options
def reject(ref: str, reason: str) -> None:
    """Reject a model version: REF is a package ARN, GROUP:VERSION or GROUP (its latest)."""
    _decide(ref, reason, "reject")


@cli.command()
@click.argument("group", required=False)
@common_options
def versions(group: str | None) -> None:
    """List a model group's versions with status, metrics and lineage (default: the default group)."""
    client = _client()
    registry = client.registry()
    _registry_header(registry)
    rows = client.versions(group)
    if _as_json():
        _emit_json([v.to_dict() for v in rows])
        return
    if not rows:
        click.echo(f"No versions in {group or registry.default_group} yet. Add one: ftcloud register JOB")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("VERSION", "STATUS", "CREATED", "EVAL_LOSS", "TECHNIQUE", "BASE MODEL", "JOB"):
        # fold, not ellipsis: a model id or job name cut short is no use to copy from.
        table.add_column(col, justify="right" if col in ("VERSION", "EVAL_LOSS") else "left", overflow="fold")
    for v in rows:
        loss = v.metrics.get("eval_loss")
        table.add_row(
            str(v.version),
            escape(v.status),
            _when(v.created),
            f"{loss:.4g}" if loss is not None else "-",
            escape(v.lineage.get("technique", "-")),
            escape(v.lineage.get("base_model", "-")),
            escape(v.lineage.get("training_job", "-")),
        )
    Console(highlight=False, soft_wrap=True).print(table)
