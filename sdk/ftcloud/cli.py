"""The ``ftcloud`` command line: a thin layer over :mod:`ftcloud.sdk`.

Each command is one SDK call plus printing: rich tables for people, ``--json`` for scripts.
Start-up imports only click and the light spec module; boto3, rich, yaml and the backends load
inside the commands that need them, so ``ftcloud --help`` stays fast.

Exit codes: 0 ok, 1 failed (AWS error, failed job), 2 bad flag / file / value, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

BACKEND_CHOICES = ("local", "sagemaker")
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _SpecChoice(click.Choice):
    """A Choice whose values come from :mod:`ftcloud.spec`, imported only when click needs them
    (``launch --help`` or parsing the flag), so ``ftcloud --help`` does not build the spec."""

    def __init__(self, constant: str):
        self._constant = constant
        self.case_sensitive = True

    @property
    def choices(self):  # type: ignore[override]
        from ftcloud import spec

        return getattr(spec, self._constant)


# ---------------------------------------------------------------------- shared helpers
def key_value_pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    """``("a=1", "b=2")`` -> ``{"a": "1", "b": "2"}`` for repeatable ``--flag KEY=VALUE`` options."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{flag} {item!r}: expected KEY=VALUE.")
        out[key] = value
    return out


def format_time(ts: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


# ---------------------------------------------------------------------- shared options
def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # Group-level and command-level options share ctx.meta; the later (command) value wins.
    if value is not None and value is not False:
        ctx.meta[f"ftcloud.{param.name}"] = value
    return value


def common_options(f):
    """--backend/--stack/--profile/--region/--json, accepted before or after the command name."""
    opts = [
        click.option("--json", "as_json", is_flag=True, default=False, expose_value=False, callback=_remember,
                     help="Print machine-readable JSON on stdout."),
        click.option("--region", expose_value=False, callback=_remember, help="AWS region."),
        click.option("--profile", expose_value=False, callback=_remember, help="AWS named profile."),
        click.option("--stack", expose_value=False, callback=_remember,
                     help="Platform stack name (default: the one from 'ftcloud platform use', else FtcloudPlatform)."),
        click.option("--backend", type=click.Choice(BACKEND_CHOICES), expose_value=False, callback=_remember,
                     help="Where jobs run (default: the selected platform, else local)."),
    ]
    for opt in opts:
        f = opt(f)
    return f


def _meta(name: str) -> Any:
    return click.get_current_context().meta.get(f"ftcloud.{name}")


def _as_json() -> bool:
    return bool(_meta("as_json"))


def _client():
    from ftcloud.sdk import Client

    return Client(_meta("backend"), profile=_meta("profile"), region=_meta("region"), stack=_meta("stack"))


def _header(client: Any, backend: Any) -> None:
    """Every command says which backend and platform it uses (stderr, so --json stays clean)."""
    click.echo(client.context_line(backend), err=True)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _complete_job_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    from ftcloud.backends.local import jobs_root

    root = jobs_root()
    if not root.is_dir():
        return []
    return [p.name for p in sorted(root.iterdir()) if p.name.startswith(incomplete) and (p / "job.json").is_file()]


# ---------------------------------------------------------------------- the group
@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="ftcloud", prog_name="ftcloud", message="%(prog)s %(version)s")
@common_options
def cli() -> None:
    """Fine-tune LLMs (LoRA, QLoRA, DoRA, full) locally or on Amazon SageMaker.

    \b
    Start here:
      ftcloud init                      # writes a commented job.yaml
      ftcloud launch -c job.yaml        # runs it (local until you pick a platform)
      ftcloud platform use STACK        # send later jobs to SageMaker
      ftcloud jobs | status JOB | logs JOB --follow | stop JOB | resume JOB
    """


# ---------------------------------------------------------------------- launch
@cli.command(epilog="Any training hyperparameter: --set KEY=VALUE (list them with 'ftcloud hyperparameters').")
@click.option("--config", "-c", type=click.Path(dir_okay=False), help="Job YAML file ('ftcloud init' writes one).")
@click.option("--name", help="Job name (default: generated).")
@click.option("--technique", type=_SpecChoice("TECHNIQUES"), help="Fine-tuning technique.")
@click.option("--model", help="Base model: Hugging Face id or local path.")
@click.option("--data", help="Training data: JSONL file/directory, local or s3://.")
@click.option("--validation-data", help="Validation data (optional).")
@click.option("--model-data", help="Base model weights as the 'model' channel (needed with network isolation).")
@click.option("--instance-type", help="SageMaker instance type, e.g. ml.g5.2xlarge (default auto: the cheapest that fits, see 'ftcloud plan').")
@click.option("--instance-count", type=int, help="Instances (>1: distributed).")
@click.option("--volume-size-gb", type=int, help="Volume size per instance (GB).")
@click.option("--max-runtime", help="Max training time: seconds or 90m / 24h / 2d.")
@click.option("--spot/--no-spot", default=None, help="Managed spot capacity (default: on).")
@click.option("--max-wait", help="Spot: max time including waiting for capacity (>= max runtime).")
@click.option("--max-retry-attempts", type=int, help="Retries on internal SageMaker errors (0: none).")
@click.option("--subnet", "subnets", multiple=True, help="Subnet id (repeat for several).")
@click.option("--security-group", "security_group_ids", multiple=True, help="Security group id (repeatable).")
@click.option("--network-isolation/--no-network-isolation", default=None, help="Run without network access.")
@click.option("--inter-container-encryption/--no-inter-container-encryption", default=None,
              help="Encrypt traffic between instances (default: on).")
@click.option("--image", help="Training image URI (default: the stack's).")
@click.option("--role", help="Execution role ARN (default: the stack's).")
@click.option("--kms-key", help="KMS key ARN (default: the stack's).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag (repeatable).")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE", help="Set any spec key (repeatable).")
@click.option("--wait/--no-wait", default=True, help="Follow the job until it ends (default) or return at once.")
@click.option("--plain", is_flag=True,
              help="Print the raw log lines instead of the live progress view (the default off a terminal).")
@click.option("--dry-run", is_flag=True, help="Print the exact request (CreateTrainingJob JSON) and create nothing.")
@click.option("--skip-validation", is_flag=True,
              help="Do not validate local data before launching (it is validated by default: 'ftcloud data validate').")
@click.option("--force", is_flag=True,
              help="Launch even if 'ftcloud plan' says the job will not fit the instance's GPU memory.")
@common_options
def launch(config, set_values, wait, plain, dry_run, skip_validation, force, **flags) -> None:
    """Launch a fine-tuning job from a job file and/or flags (flags win)."""
    overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items()}
    overrides = {k: v for k, v in overrides.items() if v is not None and v != []}
    client = _client()
    spec = client.build_spec(config=config, set_values=list(set_values), **overrides)
    backend = client.backend(spec=spec)
    _header(client, backend)
    job = client.launch(spec, dry_run=dry_run, skip_validation=skip_validation, force=force)
    result = job.launch_result
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if dry_run:
        _emit_json(result.request)
        return
    if _as_json() and not wait:
        _emit_json(result.to_dict())
        return
    if not _as_json():
        from ftcloud import cli_output

        cli_output.launched(result)
    if wait:
        _follow_to_end(job, lambda final: {"launch": result.to_dict(), "status": final.to_dict()}, plain=plain)


#: launch's options that act (follow, print, check) rather than describe the job: every other
#: option of launch builds the job spec, and commands that take a job (plan, tune) reuse those.
LAUNCH_ACTION_OPTIONS = ("wait", "plain", "dry_run", "skip_validation", "force")


def job_options(keep: tuple[str, ...] = ()) -> list[click.Parameter]:
    """launch's job-spec options (flat keys, --config, --set: the same objects, one definition), plus
    the action options named in ``keep``."""
    return [p for p in launch.params if p.expose_value and (p.name not in LAUNCH_ACTION_OPTIONS or p.name in keep)]


def _follow_to_end(job: Any, as_json: Callable[[Any], Any], plain: bool = False) -> None:
    """Follow a running job until it ends, print the outcome; exit 1 if it failed, 130 on Ctrl-C.

    On a terminal: the live progress view and a summary; otherwise (or --plain / --json) the line stream.
    """
    from ftcloud import cli_output
    from ftcloud.watch import use_live_view

    live = use_live_view(cli_output.out.is_terminal, _as_json(), plain)
    try:
        final = cli_output.watch_live(job) if live else cli_output.watch(job, quiet=_as_json())
    except KeyboardInterrupt:
        click.echo(
            f"\nDetached; the job keeps running. Follow: ftcloud logs {job.name} --follow   Stop: ftcloud stop {job.name}",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    if _as_json():
        _emit_json(as_json(final))
    elif not live:  # the live view ended with its summary
        cli_output.final(final)
    if final.status == "Failed":
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------- jobs / status / logs / stop
@cli.command()
@click.option("--limit", "-n", type=click.IntRange(1, 100), default=20, show_default=True, help="How many jobs.")
@common_options
def jobs(limit: int) -> None:
    """List recent jobs of the selected backend."""
    client = _client()
    backend = client.backend()
    _header(client, backend)
    rows = client.jobs(limit)
    if _as_json():
        _emit_json([r.to_dict() for r in rows])
        return
    from ftcloud import cli_output

    cli_output.jobs_table(rows)


@cli.command()
@click.argument("job", shell_complete=_complete_job_names)
@common_options
def status(job: str) -> None:
    """Status, secondary status history, latest metrics, spot savings, failure reason and the loss curve
    (a text chart here, and the path of its PNG)."""
    client = _client()
    backend = client.backend_for_job(job)
    _header(client, backend)
    st = backend.status(job)
    if _as_json():
        _emit_json(st.to_dict())
        return
    from ftcloud import cli_output

    cli_output.status_panel(st)
    cli_watch.show_status_curve(backend, st)  # imported at the bottom of this module


@cli.command()
@click.argument("job", shell_complete=_complete_job_names)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--cursor", "cursor_file", type=click.Path(dir_okay=False),
              help="Resume file: print only lines after the previous run that used it, then update it.")
@click.option("--timestamps", "-t", is_flag=True, help="Prefix each line with its time.")
@click.option("--plain", is_flag=True,
              help="Print the raw log lines instead of the live progress view (the default off a terminal).")
@common_options
def logs(job: str, follow: bool, cursor_file: str | None, timestamps: bool, plain: bool) -> None:
    """Print a job's logs: all hosts, interleaved in time order.

    With --follow on a terminal: the live progress view (metric lines fold into it); --plain for the lines.
    """
    from pathlib import Path

    from ftcloud.backends.base import LogCursor

    client = _client()
    backend = client.backend_for_job(job)
    _header(client, backend)
    cursor = LogCursor()
    if cursor_file and not Path(cursor_file).absolute().parent.is_dir():
        # Checked first: the file is written only after the logs were printed.
        raise click.UsageError(
            f"--cursor {cursor_file}: directory {Path(cursor_file).absolute().parent} does not exist; "
            "create it or choose a path in an existing directory."
        )
    if cursor_file and Path(cursor_file).exists():
        try:
            cursor = LogCursor.from_dict(json.loads(Path(cursor_file).read_text()))
        except ValueError:
            raise click.UsageError(f"--cursor {cursor_file}: not a cursor file written by 'ftcloud logs'.") from None
    from ftcloud import cli_output
    from ftcloud.watch import use_live_view

    try:
        if follow and not timestamps and use_live_view(cli_output.out.is_terminal, _as_json(), plain):
            cli_output.watch_live(client.job(job), cursor=cursor)
            return
        for event in client.logs(job, follow=follow, cursor=cursor):
            if _as_json():
                click.echo(json.dumps(event.to_dict()))
            else:
                cli_output.log_line(event, timestamps=timestamps)
    except KeyboardInterrupt:
        pass
    finally:
        if cursor_file:
            Path(cursor_file).write_text(json.dumps(cursor.to_dict()))


@cli.command()
@click.argument("job", shell_complete=_complete_job_names)
@common_options
def stop(job: str) -> None:
    """Stop a job. It gets SIGTERM and writes a checkpoint before exiting."""
    client = _client()
    backend = client.backend_for_job(job)
    _header(client, backend)
    st = client.stop(job)
    if _as_json():
        _emit_json(st.to_dict())
        return
    if st.terminal:
        click.echo(f"{job} already ended: {st.status}.")
    else:
        click.echo(f"Stopping {job} (it checkpoints first). Check with: ftcloud status {job}")


@cli.command()
@click.argument("job", shell_complete=_complete_job_names)
@click.option("--wait/--no-wait", default=True, help="Follow the job until it ends (default) or return at once.")
@click.option("--plain", is_flag=True,
              help="Print the raw log lines instead of the live progress view (the default off a terminal).")
@common_options
def resume(job: str, wait: bool, plain: bool) -> None:
    """Continue a stopped or failed job from its newest complete checkpoint.

    Local: the job runs again in its own directory. SageMaker: a new job JOB-r2 (r3, ...)
    with the same request and the same S3 checkpoint prefix.
    """
    client = _client()
    backend = client.backend_for_job(job)
    _header(client, backend)
    st = client.resume(job)
    if not wait:
        if _as_json():
            _emit_json(st.to_dict())
        else:
            click.echo(f"Resumed {job} as {st.name}. Follow: ftcloud logs {st.name} --follow")
        return
    _follow_to_end(client.job(st.name), lambda final: final.to_dict(), plain=plain)


# ---------------------------------------------------------------------- platform
@cli.group(invoke_without_command=True)
@click.option("--cached", is_flag=True, help="Show the outputs cached by 'platform use' (no AWS call).")
@common_options
@click.pass_context
def platform(ctx: click.Context, cached: bool) -> None:
    """Show the platform stack's outputs (role, buckets, image, KMS key, VPC, ...)."""
    if ctx.invoked_subcommand is not None:
        return
    client = _client()
    backend = client.backend("sagemaker")
    _header(client, backend)
    found = client.platform(refresh=not cached)
    if _as_json():
        _emit_json({**found.to_dict(), "default_backend": client.config.backend})
        return
    from ftcloud import cli_output

    cli_output.platform_table(found, client.config)


@platform.command("use")
@click.argument("target", metavar="STACK")
@common_options
def platform_use(target: str) -> None:
    """Send later jobs to STACK's SageMaker platform ('local' switches back). Saved in the user config."""
    client = _client()
    found = client.use_platform(target)
    from ftcloud.config import config_path

    if found is None:
        message = f"Default backend: local (saved in {config_path()})."
    else:
        message = (f"Default backend: sagemaker, platform stack {target}"
                   f"{' in ' + found.region if found.region else ''} (saved in {config_path()}).")
    if _as_json():
        _emit_json({"backend": client.config.backend, "stack": client.config.stack, "config": str(config_path())})
    else:
        click.echo(message)


# ---------------------------------------------------------------------- init / hyperparameters / completion
@cli.command()
@click.argument("path", default="job.yaml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: str, force: bool) -> None:
    """Write a commented starter job file (default ./job.yaml)."""
    from pathlib import Path

    from ftcloud.templates import starter_job_yaml

    target = Path(path)
    if target.exists() and not force:
        raise click.UsageError(f"{path} already exists; pass --force to overwrite it.")
    target.write_text(starter_job_yaml(), encoding="utf-8")
    click.echo(f"Wrote {path}. Edit it, then: ftcloud launch -c {path}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def hyperparameters(as_json: bool) -> None:
    """Every job spec key: YAML path, --set name, type, default and meaning."""
    from ftcloud.job import FLAT_KEYS, JobSpec

    flat_for = {}
    for flat, (section, name) in FLAT_KEYS.items():
        flat_for.setdefault(f"{section}.{name}" if section else name, flat)
    rows = [{**row, "set_key": flat_for.get(row["path"], row["path"])} for row in JobSpec.describe()]
    if as_json:
        _emit_json(rows)
        return
    from ftcloud import cli_output

    cli_output.keys_table(rows)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g.  eval "$(ftcloud completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    click.echo(cls(cli, {}, "ftcloud", "_FTCLOUD_COMPLETE").source())


# ---------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: errors become one clear line and an exit code, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        rv = cli.main(args=args, prog_name="ftcloud", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.NoArgsIsHelpError as exc:  # bare 'ftcloud' / 'ftcloud platform'
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        code = 0
    except click.UsageError as exc:
        prefix = f"{exc.ctx.command_path}: " if exc.ctx else "ftcloud: "
        click.echo(f"{prefix}error: {_one_line(exc.format_message())}", err=True)
        code = 2
    except click.ClickException as exc:
        click.echo(f"ftcloud: error: {_one_line(exc.format_message())}", err=True)
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as exc:  # noqa: BLE001 - translated below, unknown ones re-raised
        code = _report(exc)
    sys.stdout.flush()
    return code


def _report(exc: Exception) -> int:
    from ftcloud.errors import FtcloudError, translate_aws_error
    from ftcloud.spec import SpecError

    if type(exc).__module__.startswith(("botocore", "boto3")):  # safety net: say it plainly
        exc = translate_aws_error(exc, profile=_meta_or_none("profile"), region=_meta_or_none("region"))
    if isinstance(exc, SpecError):
        click.echo(f"ftcloud: error: {_one_line(str(exc))}", err=True)
        return 2
    if isinstance(exc, FtcloudError):  # a multi-line message (a list of data problems) keeps its lines
        lines = [_one_line(line) for line in exc.message.splitlines() if line.strip()] or [""]
        click.echo("ftcloud: error: " + "\n  ".join(lines), err=True)
        if exc.hint:
            click.echo(f"  fix: {exc.hint}", err=True)
        return exc.exit_code
    raise exc


def _meta_or_none(name: str) -> Any:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(f"ftcloud.{name}") if ctx else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# Each command module adds its commands to `cli`: deploy/endpoints/undeploy/invoke,
# register/approve/reject/versions and tune/tunings/tuning.
from ftcloud import (  # noqa: E402,F401
    cli_data,  # noqa: E402,F401  (data validate/stats/prepare)
    cli_endpoints,
    cli_plan,  # noqa: E402,F401  (plan, models)
    cli_registry,
    cli_tuning,
    cli_watch,  # noqa: E402,F401  (compare)
)

if __name__ == "__main__":  # pragma: no cover
    # `python -m ftcloud.cli`: run the group of the imported module, the one the command modules above
    # registered their commands on (this __main__ copy has none of them).
    from ftcloud.cli import main as _main

    sys.exit(_main())
