"""``ftcloud compare`` and the loss curve that ``ftcloud status`` shows (registered on the ``cli`` group).

Curves come from each job's metric lines (its logs), so local and SageMaker jobs compare side by side.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from ftcloud.cli import _as_json, _client, _complete_job_names, _emit_json, _header, cli, common_options


def curves_dir() -> Path:
    """Where the CLI draws PNGs for jobs whose artifacts are not on this machine."""
    from ftcloud.config import ftcloud_home

    return ftcloud_home() / "curves"


def job_curve(backend: Any, name: str) -> Any:
    """The job's loss curve from all its log lines so far."""
    from ftcloud.curves import Curve

    return Curve.from_lines(name, (event.message for event in backend.logs(name)))


def loss_png(st: Any, curve: Any) -> tuple[str | None, str | None]:
    """(path of a PNG of the curve, note when there is none): the container's loss.png for a finished
    local job, else one drawn from the log lines into :func:`curves_dir`."""
    from ftcloud import cli_output
    from ftcloud.errors import UsageError

    local = cli_output.local_loss_png(st)
    if local:
        return local, None
    if curve.empty:
        return None, None
    from ftcloud.curves import write_png

    try:
        return str(write_png([curve], curves_dir() / f"{_safe(st.name)}.png", title=st.name)), None
    except UsageError as exc:
        return None, f"no PNG: {exc.message} Fix: {exc.hint}"


def show_status_curve(backend: Any, st: Any) -> None:
    """Print the text loss chart under ``ftcloud status`` and name the PNG."""
    from ftcloud import cli_output
    from ftcloud.curves import text_chart

    curve = job_curve(backend, st.name)
    if curve.empty:
        return
    cli_output.out.print("[bold]loss curve[/bold]")
    cli_output.out.print(text_chart(curve, width=max(min(cli_output.out.width - 14, 60), 20)), markup=False)
    png, note = loss_png(st, curve)
    if png:
        cli_output.out.print(f"loss curve PNG: {png}", markup=False)
    if note:
        cli_output.err.print(note, markup=False)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:120]


@cli.command(epilog="Example: ftcloud compare lora-a lora-b --png runs.png")
@click.argument("jobs", nargs=-1, required=True, shell_complete=_complete_job_names)
@click.option("--png", "png_path", type=click.Path(dir_okay=False),
              help="Where to draw all curves in one PNG (default: FTCLOUD_HOME/curves/compare-JOBS.png).")
@common_options
def compare(jobs: tuple[str, ...], png_path: str | None) -> None:
    """Compare jobs side by side, with all their loss curves in one PNG.

    Per job: status, steps, final train and eval loss, perplexity, mean tokens/s, time, train-loss trend.
    Local and SageMaker jobs can be mixed.
    """
    from ftcloud.curves import write_png
    from ftcloud.errors import UsageError

    if len(set(jobs)) != len(jobs):
        raise click.UsageError("a job is named twice; name each job once.")
    target = Path(png_path) if png_path else curves_dir() / f"compare-{_safe('-'.join(jobs))}.png"
    if not target.absolute().parent.is_dir() and png_path:
        raise click.UsageError(f"--png {png_path}: directory {target.absolute().parent} does not exist.")
    client = _client()
    rows, curves, headers = [], [], set()
    for name in jobs:
        backend = client.backend_for_job(name)
        if client.context_line(backend) not in headers:  # once per backend when jobs share one
            headers.add(client.context_line(backend))
            _header(client, backend)
        st = backend.status(name)
        curve = job_curve(backend, name)
        curves.append(curve)
        rows.append({"name": name, "backend": st.backend, "status": st.status, "technique": st.technique,
                     "duration_seconds": _duration_seconds(st), **curve.final(),
                     "train_loss_trend": [v for _, v in curve.train_points()]})
    png, note = None, None
    if any(not c.empty for c in curves):
        try:
            png = str(write_png(curves, target, title="ftcloud compare"))
        except UsageError as exc:
            note = f"no PNG: {exc.message} Fix: {exc.hint}"
    if _as_json():
        _emit_json({"jobs": rows, "png": png})
    else:
        _compare_table(rows, png)
    if note:
        click.echo(note, err=True)


def _duration_seconds(st: Any) -> float | None:
    if st.training_seconds is not None:
        return float(st.training_seconds)
    if st.started and st.ended:
        return st.ended - st.started
    return None


def _compare_table(rows: list[dict], png: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ftcloud import cli_output
    from ftcloud.curves import sparkline
    from ftcloud.watch import duration

    def num(value: Any, fmt: str) -> str:
        return format(value, fmt) if value is not None else "-"

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, justify in (("JOB", "left"), ("STATUS", "left"), ("STEPS", "right"), ("TRAIN LOSS", "right"),
                         ("EVAL LOSS", "right"), ("PPL", "right"), ("TOK/S", "right"), ("TIME", "right"),
                         ("TREND", "left")):
        # Names and statuses are read whole; the numbers' headers may wrap.
        table.add_column(col, justify=justify, no_wrap=col in ("JOB", "STATUS"), overflow="fold")
    for r in rows:
        table.add_row(escape(r["name"]), r["status"], num(r["steps"], "d"), num(r["train_loss"], ".4f"),
                      num(r["eval_loss"], ".4f"), num(r["eval_perplexity"], ".2f"),
                      num(r["tokens_per_second"], ",.0f"), duration(r["duration_seconds"]),
                      sparkline(r["train_loss_trend"], width=10))
    cli_output.out.print(table)
    if png:
        cli_output.out.print(f"curves PNG: {png}", markup=False)
