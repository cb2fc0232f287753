"""``ftcloud tune | tunings | tuning TUNE | tuning stop TUNE``: hyperparameter tuning.

Each command is one SDK call (:meth:`ftcloud.sdk.Client.tune` and friends) plus printing. ``tune``
takes every job option of ``launch`` (the same click options, not copies) plus the tuning flags.
Imports only click and the CLI helpers at start-up; registered from :mod:`ftcloud.cli`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ftcloud.cli import _as_json, _client, _emit_json, cli, common_options, job_options


def _with_launch_options(command: click.Command) -> click.Command:
    """Give ``command`` every job option of ``launch``: those naming a job spec key, plus --config and
    --set (shared objects: one definition, one help; launch's own --wait/--dry-run/... stay its own)."""
    command.params = [*job_options(keep=("skip_validation", "force")), *command.params]
    return command


# ---------------------------------------------------------------------- printing
def _header(tuner: Any) -> None:
    """Which backend the command uses (stderr, so --json stays clean)."""
    target = getattr(tuner, "describe_target", None)
    click.echo(f"backend: {tuner.name}" + (f" · {target()}" if target else ""), err=True)


_TRIAL_STYLE = {"Completed": "green", "Failed": "red", "Pruned": "yellow", "Stopped": "yellow",
                "Stopping": "yellow", "InProgress": "cyan"}


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(status: Any) -> Any:
    """The rich table of a tuning's trials; the best one marked with *."""
    from rich.markup import escape
    from rich.table import Table

    names = sorted({k for t in status.trials for k in t.parameters})
    best = status.best.name if status.best else None
    title = (f"{status.name}: {status.status} · {status.strategy} · {status.objective.goal} "
             f"{status.objective.metric}")
    table = Table(title=escape(title), title_justify="left", box=None, header_style="bold")
    for col in ("#", "TRIAL", "STATUS", *(n.upper() for n in names), status.objective.metric.upper(), "STEPS"):
        table.add_column(col, overflow="fold")
    for t in status.trials:
        style = _TRIAL_STYLE.get(t.status)
        label = f"[{style}]{t.status}[/{style}]" if style else escape(t.status)
        table.add_row(
            ("* " if t.name == best else "") + ("-" if t.number is None else str(t.number)),
            escape(t.name),
            label,
            *(escape(_num(t.parameters.get(n))) for n in names),
            _num(t.objective),
            _num(t.steps),
        )
    return table


def _trial_line(t: Any) -> str:
    params = " ".join(f"{k}={_num(v)}" for k, v in sorted(t.parameters.items()))
    objective = f" objective={_num(t.objective)}" if t.objective is not None else ""
    return f"trial {t.name}: {t.status}{objective} {params}".rstrip()


def _print_best(status: Any) -> None:
    if status.best is None:
        click.echo(f"{status.name}: {status.status}; no best trial yet.")
        return
    b = status.best
    params = ", ".join(f"{k}={_num(v)}" for k, v in sorted(b.parameters.items()))
    click.echo(f"Best trial: {b.name} ({status.objective.metric}={_num(b.objective)}; {params})")
    click.echo(f"Register it: ftcloud register --from-tuning {status.name}")


def _follow(handle: Any, poll: float) -> Any:
    """Wait for the tuning: a live table on a terminal, one line per trial change otherwise."""
    if _as_json():
        return handle.wait(poll=poll)
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        with Live(console=console, refresh_per_second=2) as live:
            return handle.wait(poll=poll, on_update=lambda st: live.update(trials_table(st)))
    seen: dict[str, tuple] = {}

    def on_update(st: Any) -> None:
        for t in st.trials:
            key = (t.status, t.objective)
            if seen.get(t.name) != key:
                seen[t.name] = key
                click.echo(_trial_line(t), err=True)

    return handle.wait(poll=poll, on_update=on_update)


# ---------------------------------------------------------------------- tune
@cli.command(epilog=(
    "Search space: --param NAME=LOW:HIGH[:SCALING] (scaling linear, log or reverse_log; "
    "LOW:HIGH:integer for a whole-number range of a float key) or --param NAME=V1,V2,... "
    "(categorical); repeat it. Or a 'tune:' section in the job file (see docs/tuning.md)."))
@click.option("--param", "params", multiple=True, metavar="NAME=RANGE",
              help="A training key to search (repeatable), e.g. learning_rate=1e-5:1e-3:log or lora_r=8,16,32.")
@click.option("--strategy", type=click.Choice(["bayesian", "random", "grid", "hyperband"]),
              help="Search strategy (default bayesian).")
@click.option("--max-trials", type=int, help="Training jobs to run in all (default 10).")
@click.option("--max-parallel", type=int, help="Trials at the same time (default 1).")
@click.option("--objective", help="Metric to optimise, one the container prints (default eval_loss).")
@click.option("--goal", type=click.Choice(["minimize", "maximize"]), help="Minimize (default) or maximize it.")
@click.option("--early-stopping", type=click.Choice(["off", "auto"]),
              help="auto: stop trials clearly worse than the others at the same step (default off).")
@click.option("--tune-seed", type=int, help="Random seed of the search (the training seed is --set seed=N).")
@click.option("--max-tuning-runtime", help="Stop the whole tuning after this long: seconds or 90m / 24h / 2d.")
@click.option("--target", type=float, help="Stop the tuning once a trial's objective reaches this value.")
@click.option("--warm-start-from", multiple=True, metavar="TUNE", help="Earlier tuning whose trials seed this one (repeatable).")
@click.option("--warm-start-type", type=click.Choice(["IdenticalDataAndAlgorithm", "TransferLearning"]),
              help="Warm start with the same data and image (default) or transfer learning.")
@click.option("--resource", type=click.Choice(["num_train_epochs", "max_steps"]),
              help="Hyperband: the key that measures a trial's length (default: max_steps if set, else epochs).")
@click.option("--min-resource", type=int, help="Hyperband: resource every trial gets before it may be stopped (default 1).")
@click.option("--max-resource", type=int, help="Hyperband: resource of a full trial (default: the key's value).")
@click.option("--poll", type=float, default=15.0, show_default=True, help="Seconds between status polls while waiting.")
@click.option("--wait/--no-wait", default=True, help="Follow the tuning with a live table of trials (default) or return at once.")
@click.option("--dry-run", is_flag=True, help="Print the exact request (CreateHyperParameterTuningJob JSON) and create nothing.")
@common_options
def tune(config, set_values, poll, wait, dry_run, **flags) -> None:
    """Tune hyperparameters: run many trials of a job (file and/or flags) and keep the best.

    \b
    Local (--backend local): Optuna drives trials through the local backend; the study resumes
    when 'ftcloud tune' runs again. SageMaker: one hyperparameter tuning job
    (CreateHyperParameterTuningJob) whose trials get the very request 'launch' would send.
    """
    checks = {"skip_validation": flags.pop("skip_validation", False), "force": flags.pop("force", False)}
    flags = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items()}
    overrides = {k: v for k, v in flags.items() if v is not None and v != []}
    client = _client()
    handle = client.tune(config=config, set_values=list(set_values), dry_run=dry_run, **checks, **overrides)
    tuner, result = handle.tuner, handle.launch_result
    _header(tuner)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if dry_run:
        _emit_json(result.request)
        return
    if not wait:
        if _as_json():
            _emit_json(result.to_dict())
        else:
            click.echo(f"Started tuning {result.name} on {result.backend}"
                       + (f" ({result.location})" if result.location else "")
                       + f". Follow: ftcloud tuning {result.name}")
        return
    if not _as_json():
        click.echo(f"Started tuning {result.name} on {result.backend}. Ctrl-C detaches; it keeps running.")
    try:
        final = _follow(handle, poll)
    except KeyboardInterrupt:
        click.echo(f"\nDetached; the tuning keeps running. Check: ftcloud tuning {result.name}   "
                   f"Stop: ftcloud tuning stop {result.name}", err=True)
        raise click.exceptions.Exit(130) from None
    if _as_json():
        _emit_json({"launch": result.to_dict(), "status": final.to_dict()})
    else:
        from rich.console import Console

        Console(highlight=False, soft_wrap=True).print(trials_table(final))
        _print_best(final)
    if final.status == "Failed":
        raise click.exceptions.Exit(1)


_with_launch_options(tune)


# ---------------------------------------------------------------------- tunings
@cli.command()
@click.option("--limit", "-n", type=click.IntRange(1, 100), default=20, show_default=True, help="How many tunings.")
@common_options
def tunings(limit: int) -> None:
    """List recent tunings of the selected backend, newest first."""
    client = _client()
    tuner = client.tuner()
    _header(tuner)
    rows = tuner.list_tunings(limit)
    if _as_json():
        _emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("No tunings yet. Start one with: ftcloud tune -c job.yaml --param learning_rate=1e-5:1e-3:log")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ftcloud.cli import format_time

    table = Table(box=None, header_style="bold")
    for col in ("NAME", "STATUS", "STRATEGY", "OBJECTIVE", "TRIALS", "CREATED"):
        table.add_column(col, overflow="fold")
    for r in rows:
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(r.counts().items()))
        table.add_row(escape(r.name), escape(r.status), r.strategy, escape(f"{r.objective.goal} {r.objective.metric}"),
                      escape(counts or (f"max {r.max_trials}" if r.max_trials else "-")), format_time(r.created))
    Console(highlight=False, soft_wrap=True).print(table)


# ---------------------------------------------------------------------- tuning TUNE / tuning stop TUNE
class _TuningGroup(click.Group):
    """``ftcloud tuning TUNE`` is short for ``ftcloud tuning show TUNE``; ``stop`` is a subcommand."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "show", self.commands["show"], args
        return super().resolve_command(ctx, args)


@cli.group(cls=_TuningGroup)
@common_options
def tuning() -> None:
    """Show a tuning (ftcloud tuning TUNE) or stop it (ftcloud tuning stop TUNE)."""


@tuning.command("show")
@click.argument("tune", metavar="TUNE")
@common_options
def tuning_show(tune: str) -> None:
    """Trials of TUNE with their parameters, objective, steps and status; the best one marked *."""
    client = _client()
    tuner = client.tuner_for(tune)
    _header(tuner)
    status = tuner.status(tune)
    if _as_json():
        _emit_json(status.to_dict())
        return
    from rich.console import Console

    Console(highlight=False, soft_wrap=True).print(trials_table(status))
    if status.failure_reason:
        click.echo(f"reason: {status.failure_reason}")
    _print_best(status)


@tuning.command("stop")
@click.argument("tune", metavar="TUNE")
@common_options
def tuning_stop(tune: str) -> None:
    """Stop TUNE and its running trials (they checkpoint first); finished trials are kept."""
    client = _client()
    tuner = client.tuner_for(tune)
    _header(tuner)
    status = tuner.stop(tune)
    if _as_json():
        _emit_json(status.to_dict())
    elif status.status in ("Completed", "Failed"):
        click.echo(f"{tune} already ended: {status.status}.")
    else:
        click.echo(f"Stopping {tune} ({status.status}). Check with: ftcloud tuning {tune}")
