"""``ftcloud deploy | endpoints | undeploy | invoke``: serving models, locally or on SageMaker.

Each command is one SDK call (:meth:`ftcloud.sdk.Client.deploy` and friends) plus printing.
Imports only click and the CLI helpers at start-up; registered from :mod:`ftcloud.cli`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ftcloud.cli import _as_json, _client, _emit_json, _header, cli, common_options
from ftcloud.cli import format_time as _when
from ftcloud.cli import key_value_pairs as _pairs


def _complete_endpoints(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    from ftcloud.endpoints.local import endpoints_root

    root = endpoints_root()
    if not root.is_dir():
        return []
    return [p.name for p in sorted(root.iterdir())
            if p.name.startswith(incomplete) and (p / "endpoint.json").is_file()]


# ---------------------------------------------------------------------- deploy
@cli.command(epilog=(
    "Large models: --image URI of an AWS LLM inference container (LMI/vLLM, e.g. a djl-inference "
    "...-lmi... image) with --env OPTION_ENABLE_LORA=true and friends; the request shape stays the same."))
@click.argument("target", metavar="TARGET", required=False)
@click.option("--from-tuning", metavar="TUNE",
              help="Serve the best trial of tuning TUNE (a job of its backend) instead of a TARGET.")
@click.option("--name", help="Endpoint name (default: from TARGET).")
@click.option("--instance-type", help="SageMaker instance type (default ml.g5.xlarge).")
@click.option("--instance-count", type=click.IntRange(1), help="Initial instances (default 1).")
@click.option("--serverless-memory", type=int, metavar="MB", help="Serverless endpoint memory: 1024-6144 in 1024 steps.")
@click.option("--serverless-concurrency", type=int, metavar="N", help="Serverless max concurrency: 1-200.")
@click.option("--min-capacity", type=int, help="Autoscaling minimum instances (default: --instance-count).")
@click.option("--max-capacity", type=int, help="Autoscaling maximum instances (default: max(min, 2)).")
@click.option("--target-invocations", type=int, help="Autoscaling target: invocations per instance per minute (default 5).")
@click.option("--scale-in-cooldown", type=int, metavar="SECONDS", help="Seconds between scale-ins (default 900).")
@click.option("--scale-out-cooldown", type=int, metavar="SECONDS", help="Seconds between scale-outs (default 300).")
@click.option("--strategy", type=click.Choice(["canary", "linear", "all-at-once"]),
              help="Traffic shifting when updating an existing endpoint (default canary).")
@click.option("--canary-percent", type=int, help="Canary: % of capacity that takes traffic first (default 10).")
@click.option("--linear-step-percent", type=int, help="Linear: % of capacity shifted per step (default 25).")
@click.option("--bake-seconds", type=int, help="Wait between traffic steps, watching the alarms (default 600).")
@click.option("--rollback-alarm", "rollback_alarms", multiple=True, metavar="NAME",
              help="CloudWatch alarm that rolls an update back (repeatable; default: ENDPOINT-latency-p99 "
                   "and ENDPOINT-5xx-rate, created with the endpoint). The platform's execution role may "
                   "read only alarms whose names end in -latency-p99 or -5xx-rate.")
@click.option("--image", help="Serving image URI (default: the platform image; e.g. an LMI/vLLM container).")
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE", help="Container environment (repeatable).")
@click.option("--network-isolation/--no-network-isolation", default=None,
              help="Serve without network access (default: the job's setting, else on).")
@click.option("--vpc/--no-vpc", default=None, help="Use the platform's subnets (default: on when it has a VPC).")
@click.option("--data-capture", "data_capture_percent", type=int, metavar="PERCENT",
              help="Capture this % of requests/responses to the artifact bucket.")
@click.option("--tag", "tag_pairs", multiple=True, metavar="KEY=VALUE", help="Tag (repeatable).")
@click.option("--timeout", type=float, metavar="SECONDS", help="How long to wait for the endpoint.")
@click.option("--wait/--no-wait", default=True, help="Wait until the endpoint serves (default).")
@click.option("--dry-run", is_flag=True, help="Print the exact requests and create nothing.")
@common_options
def deploy(target: str | None, from_tuning: str | None, name: str | None, env_pairs: tuple[str, ...], tag_pairs: tuple[str, ...],
           rollback_alarms: tuple[str, ...], timeout: float | None, wait: bool, dry_run: bool, **flags: Any) -> None:
    """Serve TARGET as an endpoint: a training job, GROUP:VERSION, GROUP (its newest Approved
    version) or a model package ARN.

    \b
    Registry versions must be Approved; a job deploys its artifact directly (a shortcut).
    Local (--backend local): starts 'python -m ftcloud_train serve' on a free port and waits for /ping.
    SageMaker: CreateModel + CreateEndpointConfig + CreateEndpoint, or a blue/green UpdateEndpoint
    with automatic rollback on the endpoint's alarms, then autoscaling on invocations per instance.
    """
    if (target is None) == (from_tuning is None):
        raise click.UsageError("give a TARGET or --from-tuning TUNE (one of the two).")
    client = _client()
    if from_tuning:
        from ftcloud.sdk import best_trial_name

        target = best_trial_name(client.tuner_for(from_tuning).status(from_tuning))
    endpoints = client._endpoints_for(target=target)
    _header(client, endpoints)
    options = {k: v for k, v in flags.items() if v is not None}
    if env_pairs:
        options["env"] = _pairs(env_pairs, "--env")
    if tag_pairs:
        options["tags"] = _pairs(tag_pairs, "--tag")
    if rollback_alarms:
        options["rollback_alarms"] = list(rollback_alarms)
    quiet = _as_json() or dry_run
    status = endpoints.deploy(
        target, name, wait=wait, timeout=timeout, dry_run=dry_run,
        progress=None if quiet else (lambda message: click.echo(message, err=True)), **options,
    )
    if dry_run:
        _emit_json(status.requests)
        return
    if _as_json():
        _emit_json(status.to_dict())
        return
    for note in status.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{status.name}: {status.status}" + (f"  {status.url}" if status.url else ""))
    click.echo(f'Ask it: ftcloud invoke {status.name} "Hello"   Remove it: ftcloud undeploy {status.name}')


# ---------------------------------------------------------------------- endpoints / undeploy
@cli.command("endpoints")
@common_options
def endpoints_cmd() -> None:
    """List endpoints with their live state (local: a dead server shows Failed)."""
    client = _client()
    backend = client.endpoints_backend()
    _header(client, backend)
    rows = backend.list()
    if _as_json():
        _emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("No endpoints. Deploy one with: ftcloud deploy JOB|GROUP:VERSION")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("NAME", "STATUS", "TARGET", "URL / ARN", "INSTANCES", "CREATED"):
        table.add_column(col, overflow="fold")
    for r in rows:
        size = (f"serverless {r.serverless.get('MemorySizeInMB')} MB" if r.serverless
                else f"{r.instance_count or '-'} x {r.instance_type or '-'}")
        table.add_row(escape(r.name), escape(r.status), escape(r.target or "-"), escape(r.url or "-"), escape(size),
                      _when(r.created))
    Console(highlight=False, soft_wrap=True).print(table)
    for r in rows:
        if r.failure_reason:
            click.echo(f"{r.name}: {r.failure_reason}", err=True)


@cli.command()
@click.argument("endpoint", shell_complete=_complete_endpoints)
@common_options
def undeploy(endpoint: str) -> None:
    """Delete ENDPOINT: local server / SageMaker endpoint, config, model, autoscaling and the alarms
    deploy created. The job and the registry entry stay."""
    client = _client()
    backend = client._endpoints_for(endpoint)
    _header(client, backend)
    status = backend.undeploy(endpoint)
    if _as_json():
        _emit_json(status.to_dict())
        return
    kept = f" ({status.target} is kept)" if status.target else ""
    click.echo(f"Undeployed {endpoint}{kept}.")


# ---------------------------------------------------------------------- invoke
@cli.command()
@click.argument("endpoint", shell_complete=_complete_endpoints)
@click.argument("prompt", required=False)
@click.option("--adapter", help="Adapter to answer with (sent as CustomAttributes adapter=NAME).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Generation parameter, e.g. max_new_tokens=64 temperature=0.7 (repeatable; JSON values).")
@click.option("--messages-file", type=click.Path(dir_okay=False, allow_dash=True),
              help='A chat instead of PROMPT: JSON list of {"role","content"} (or {"messages": [...]}); - for stdin.')
@click.option("--stream", is_flag=True, help="Print the answer as it is generated (server-sent events).")
@common_options
def invoke(endpoint: str, prompt: str | None, adapter: str | None, params: tuple[str, ...],
           messages_file: str | None, stream: bool) -> None:
    """Ask ENDPOINT and print the generated text (--json: the whole response)."""
    from ftcloud.endpoints.base import generated_text, parse_params

    messages = _read_messages(messages_file) if messages_file else None
    if (prompt is None) == (messages is None):
        raise click.UsageError("give either PROMPT or --messages-file.")
    client = _client()
    backend = client._endpoints_for(endpoint)
    _header(client, backend)
    result = client.invoke(endpoint, prompt, messages=messages, parameters=parse_params(params),
                           adapter=adapter, stream=stream)
    if stream:
        for piece in result:
            if _as_json():
                click.echo(json.dumps({"text": piece}))
            else:
                click.echo(piece, nl=False)
                sys.stdout.flush()
        if not _as_json():
            click.echo()
        return
    if _as_json():
        _emit_json(result)
        return
    click.echo(generated_text(result))


def _read_messages(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"--messages-file {path}: not JSON ({exc}).") from None
    if isinstance(data, dict):
        data = data.get("messages")
    if not isinstance(data, list):
        raise click.UsageError(f'--messages-file {path}: expected a JSON list of messages or {{"messages": [...]}}.')
    return data
