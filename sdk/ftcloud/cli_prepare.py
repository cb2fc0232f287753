"""``ftcloud data prepare``: one SDK call (:meth:`ftcloud.sdk.Client.prepare_data`) plus printing.

The pipeline's flags come from :class:`ftcloud_train.prepare.options.PrepareOptions` (one
definition for the CLI, the container and the cache key). Added to the ``data`` group of
:mod:`ftcloud.cli_data` (which imports this module at its end). Imports only click and light modules at start-up.
"""

from __future__ import annotations

from typing import Any

import click

from ftcloud.cli import _as_json, _client, _emit_json, _header, common_options, key_value_pairs
from ftcloud.cli_data import data, source_options


def _pipeline_options(f: Any) -> Any:
    """One click option per PrepareOptions field (``--near-dedup/--no-near-dedup`` for booleans)."""
    from ftcloud_train.prepare.options import option_specs

    for spec in reversed(option_specs()):
        flag, kind = spec["flag"], spec["type"]
        if kind is bool:
            f = click.option(f"{flag}/--no-{flag[2:]}", spec["name"], default=spec["default"], show_default=True,
                             help=spec["help"])(f)
        elif kind is list:
            f = click.option(flag, spec["name"], multiple=True, help=spec["help"])(f)
        else:
            f = click.option(flag, spec["name"], type=click.Choice(spec["choices"]) if spec["choices"] else kind,
                             default=spec["default"], show_default=spec["default"] is not None, help=spec["help"])(f)
    return f


@data.command("prepare", epilog="Docs: docs/data.md (what each step does, and why no stopword removal for "
                                 "generative data).")
@click.argument("sources", nargs=-1, required=True, metavar="PATH...")
@click.option("--out", "-o", help="Output directory (local), or s3:// URI with --backend sagemaker "
                                  "(default there: the artifact bucket's ftcloud/prepared/JOB/).")
@source_options
@click.option("--file-format", default="auto", show_default=True,
              help="File format when the suffix does not say: jsonl, json, csv, tsv, parquet.")
@_pipeline_options
@click.option("--instance-type", default="ml.m5.xlarge", show_default=True, help="SageMaker: Processing instance type.")
@click.option("--instance-count", type=int, default=1, show_default=True,
              help="SageMaker: instances; the input objects are sharded across them (ShardedByS3Key).")
@click.option("--volume-size-gb", type=int, default=30, show_default=True, help="SageMaker: volume per instance.")
@click.option("--max-runtime", default="24h", show_default=True, help="SageMaker: max run time (seconds or 90m/24h).")
@click.option("--network-isolation/--no-network-isolation", default=True, show_default=True,
              help="SageMaker: run without network access (models for --tokenizer/--back-translate must be local).")
@click.option("--subnet", "subnets", multiple=True, help="SageMaker: subnet id (repeatable; default: the stack's).")
@click.option("--security-group", "security_group_ids", multiple=True, help="SageMaker: security group id (repeatable).")
@click.option("--image", help="SageMaker: image URI (default: the stack's training image).")
@click.option("--role", help="SageMaker: execution role ARN (default: the stack's).")
@click.option("--kms-key", help="SageMaker: KMS key ARN (default: the stack's).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="SageMaker: tag the job (repeatable).")
@click.option("--wait/--no-wait", default=True, help="SageMaker: follow the job until it ends (default).")
@click.option("--dry-run", is_flag=True, help="Check sources and options and print the plan (SageMaker: the "
                                              "CreateProcessingJob request); write and create nothing.")
@common_options
def prepare(sources: tuple[str, ...], out: str | None, fmt: str, file_format: str, query: str | None,
            table: str | None, instance_type: str, instance_count: int, volume_size_gb: int, max_runtime: str,
            network_isolation: bool, subnets: tuple[str, ...], security_group_ids: tuple[str, ...],
            image: str | None, role: str | None, kms_key: str | None, tags: tuple[str, ...], wait: bool,
            dry_run: bool, **option_values: Any) -> None:
    """Clean, normalise, de-duplicate, expand glossaries, split, augment and balance data; write it
    with a data card (data_card.json/.md) and a content hash.

    \b
    Steps (each optional, each counted in the card): Unicode normalisation, whitespace and control
    characters, HTML, PII, glossary expansion, stopwords (classification), empty/short rows, exact and
    near duplicates, train/validation split or --kfold, augmentation, oversampling / SMOTE features.
    Cached: the same inputs and options leave the output untouched ("cached").

    \b
    Examples:
      ftcloud data prepare raw/ --out prepared/ --glossary medical --near-dedup --redact-pii
      ftcloud data prepare reviews.csv --out cls/ --oversample --kfold 5
      ftcloud data prepare raw/ --out prepared/ --tokenizer MODEL --token-cache --set max_length=2048
      ftcloud data prepare s3://bucket/raw/ --backend sagemaker --instance-count 4 --dry-run
    """
    from ftcloud_train.prepare.options import PrepareOptions

    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in option_values.items()}
    options = PrepareOptions.from_dict(values)
    client = _client()
    if client.explicit_backend == "sagemaker":
        from ftcloud.dataprep.processing import ProcessingSettings
        from ftcloud.job import parse_duration

        settings = ProcessingSettings(
            instance_type=instance_type, instance_count=instance_count, volume_size_gb=volume_size_gb,
            max_runtime=parse_duration(max_runtime, "--max-runtime", "flags"), network_isolation=network_isolation,
            subnets=list(subnets), security_group_ids=list(security_group_ids), image=image, role=role,
            kms_key=kms_key, tags=key_value_pairs(tags, "--tag"))
        _header(client, client.backend("sagemaker"))
        result = client.prepare_data(list(sources), out, options=options, fmt=fmt, dry_run=dry_run, wait=wait,
                                     settings=settings)
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        if dry_run:
            _emit_json(result.request)
            return
        if _as_json():
            _emit_json(result.to_dict())
        else:
            click.echo(f"Processing job {result.name}: {result.status}"
                       + (f" ({result.failure_reason})" if result.failure_reason else ""))
            click.echo(f"  output: {result.output_uri}\n  train channel: {result.channels['train']}\n"
                       f"  validation channel: {result.channels['validation']}")
        if result.status == "Failed":
            raise click.exceptions.Exit(1)
        return
    if not out:
        raise click.UsageError("--out DIR is required (where the prepared files and the data card go).")
    click.echo("backend: local", err=True)
    log = None if _as_json() else (lambda m: click.echo(m, err=True))
    result = client.prepare_data(list(sources), out, options=options, fmt=fmt, file_format=file_format,
                                 query=query, table=table, dry_run=dry_run, log=log)
    if _as_json() or dry_run:
        _emit_json(result.to_dict())
        return
    _summary(result)


def _summary(result: Any) -> None:
    card = result.card
    c = card["counts"]
    state = "cached (inputs and options unchanged; nothing rewritten)" if result.cached else "prepared"
    click.echo(f"{result.out}: {state}")
    click.echo(f"  {card['format']}: read {c['read']}, kept {c['kept']}, written {c['written']} rows")
    for key, value in c.get("changed", {}).items():
        click.echo(f"  changed by {key}: {value}")
    for key, value in c.get("dropped", {}).items():
        click.echo(f"  dropped ({key}): {value}")
    for key, value in c.get("pii_redacted", {}).items():
        click.echo(f"  redacted {key}: {value}")
    if card.get("glossary"):
        top = ", ".join(f"{k} x{v}" for k, v in list(card["glossary"]["replaced"].items())[:10]) or "none found"
        click.echo(f"  glossary expansions: {top}")
    for name, split in card["splits"].items():
        classes = split.get("classes")
        click.echo(f"  {name}: {split['rows']} rows" + (f"  classes {classes}" if classes else ""))
    if card.get("token_cache"):
        tc = card["token_cache"]
        click.echo(f"  token cache for {tc['tokenizer']} with {tc['training']}: "
                   + ", ".join(f"{name} {e['samples']} samples" for name, e in tc["entries"].items()))
        click.echo(f"  channels: --data {result.out}/train/"
                   + (f" --validation-data {result.out}/validation/" if "validation" in tc["entries"] else ""))
    click.echo(f"  data card: {result.out}/data_card.md   content hash: {card['content_hash'][:16]}")
