"""How the CLI shows things to people (rich). Imported only by commands that print for people."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_STYLE = {"Completed": "green", "Failed": "red", "Stopped": "yellow", "Stopping": "yellow", "InProgress": "cyan"}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _status(text: str) -> str:
    style = _STYLE.get(text)
    return f"[{style}]{text}[/{style}]" if style else text


def launched(result: Any) -> None:
    if result.uploaded:
        err.print(f"uploaded {len(result.uploaded)} file(s); reused {len(result.reused)} unchanged")
    elif result.reused:
        err.print(f"inputs unchanged, reused {len(result.reused)} file(s) already in S3")
    out.print(f"Launched [bold]{escape(result.name)}[/bold] on {result.backend}"
              + (f"  ({escape(result.location)})" if result.location else ""))


def watch(job: Any, quiet: bool = False) -> Any:
    """Follow a job to its end: log lines above, a status spinner below."""
    if quiet:
        return job.wait()
    with err.status(f"{job.name}: starting") as spinner:

        def on_update(st: Any) -> None:
            label = f"{st.status}" + (f" / {st.secondary_status}" if st.secondary_status else "")
            spinner.update(f"{escape(job.name)}: {label}")
            err.print(f"[dim]status:[/dim] {_status(st.status)}"
                      + (f" - {escape(st.secondary_status)}" if st.secondary_status else ""))

        return job.wait(on_update=on_update, on_log=lambda ev: log_line(ev))


def watch_live(job: Any, *, cursor: Any = None) -> Any:
    """Follow a job to its end in the live progress view (a terminal only), then print its summary.

    Metric and progress lines become the view; every other log line is printed above it as usual.
    """
    import threading

    from rich.live import Live

    from ftcloud.watch import WatchState, render, summary_table

    state = WatchState(job.name)
    # rich redraws from its own thread: folding and drawing take turns. Printing happens outside the lock
    # (the redraw holds rich's lock while it waits for ours).
    lock = threading.Lock()

    def draw() -> Any:
        with lock:
            return render(state)

    def on_update(st: Any) -> None:
        with lock:
            state.on_status(st)

    def on_log(event: Any) -> None:
        with lock:
            folded = state.on_log(event)
        if not folded:
            log_line(event)  # lines printed on `out` while the view is live appear above it

    with Live(console=out, refresh_per_second=4, get_renderable=draw):
        final_status = job.wait(on_update=on_update, on_log=on_log, cursor=cursor)
        on_update(final_status)
    out.print(summary_table(state, loss_png=local_loss_png(final_status)))
    return final_status


def local_loss_png(st: Any) -> str | None:
    """The container's loss.png, when the artifacts are on this machine (local jobs)."""
    from pathlib import Path

    if st.backend == "local" and st.artifacts and (Path(st.artifacts) / "loss.png").is_file():
        return str(Path(st.artifacts) / "loss.png")
    return None


def final(st: Any) -> None:
    line = f"{escape(st.name)}: {_status(st.status)}"
    if st.artifacts and st.status == "Completed":
        line += f"  artifacts: {escape(st.artifacts)}"
    out.print(line)
    if st.failure_reason:
        out.print(f"[red]reason:[/red] {escape(st.failure_reason)}")


def log_line(event: Any, timestamps: bool = False) -> None:
    prefix = f"[dim]{_when(event.timestamp / 1000)}[/dim] " if timestamps and event.timestamp else ""
    out.print(f"{prefix}[blue]\\[{escape(event.host)}][/blue] {escape(event.message)}")


def jobs_table(rows: list[Any]) -> None:
    if not rows:
        out.print("No jobs yet. Start one with: ftcloud launch -c job.yaml")
        return
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "STATUS", "DETAIL", "TECHNIQUE", "CREATED", "DURATION"):
        table.add_column(col)
    for r in rows:
        duration = (r.ended or time.time()) - r.started if r.started else None
        table.add_row(escape(r.name), _status(r.status), escape(r.secondary_status or ""), r.technique or "-",
                      _when(r.created), _duration(duration))
    out.print(table)


def status_panel(st: Any) -> None:
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", escape(st.name))
    table.add_row("status", _status(st.status) + (f" / {escape(st.secondary_status)}" if st.secondary_status else ""))
    if st.failure_reason:
        table.add_row("failure reason", f"[red]{escape(st.failure_reason)}[/red]")
    table.add_row("technique", escape(st.technique or "-"))
    if st.model:
        table.add_row("model", escape(st.model))
    table.add_row("instances", f"{st.instance_count or 1} x {st.instance_type or '-'}")
    table.add_row("created", _when(st.created))
    table.add_row("started / ended", f"{_when(st.started)} / {_when(st.ended)}")
    if st.training_seconds is not None:
        table.add_row("training time", _duration(st.training_seconds))
    if st.billable_seconds is not None:
        table.add_row("billable time", _duration(st.billable_seconds))
    if st.spot:
        savings = st.spot_savings_percent
        table.add_row("spot savings", f"{savings:.1f}%" if savings is not None else "spot (known when it ends)")
    if st.artifacts:
        table.add_row("artifacts", escape(st.artifacts))
    if st.checkpoints:
        table.add_row("checkpoints", escape(st.checkpoints))
    out.print(table)
    if st.history:
        hist = Table(title="status history", box=None, header_style="bold", title_justify="left")
        for col in ("STATUS", "START", "END", "MESSAGE"):
            hist.add_column(col)
        for t in st.history:
            hist.add_row(escape(t.status), _when(t.start), _when(t.end), escape(t.message or ""))
        out.print(hist)
    if st.metrics:
        met = Table(title="latest metrics", box=None, header_style="bold", title_justify="left")
        met.add_column("METRIC")
        met.add_column("VALUE", justify="right")
        for key in sorted(st.metrics):
            met.add_row(escape(key), f"{st.metrics[key]:.6g}")
        out.print(met)


def platform_table(found: Any, config: Any) -> None:
    table = Table(title=f"platform stack {found.stack} ({found.source})", box=None, header_style="bold",
                  title_justify="left")
    for col in ("OUTPUT", "VALUE", "WHAT IT IS"):
        table.add_column(col)
    for row in found.rows():
        value = row["value"]
        table.add_row(row["output"], escape(value) if value else "[dim]not set[/dim]", escape(row["description"]))
    out.print(table)
    default = f"sagemaker (stack {config.stack})" if config.backend == "sagemaker" else "local"
    out.print(f"default backend: {default}.  Change it: ftcloud platform use STACK | local")


def keys_table(rows: list[dict]) -> None:
    """Every key as a short block (name, type, default, --set name; its meaning wrapped under it), grouped by
    section: it reads at 80 columns, where a five-column table wrapped into one word per line."""
    import textwrap

    width = max(min(out.width, 100), 40)

    def fill(text: str, **indents: str) -> str:  # names like flash-attn or s3://x stay whole
        return textwrap.fill(text, width, break_on_hyphens=False, break_long_words=False, **indents)

    section = None
    for r in rows:
        head, _, key = r["path"].partition(".")
        if head != section:
            section = head
            out.print(("\n" if section and r is not rows[0] else "") + f"{head}:", style="bold", markup=False)
        first = f"  {key}: {r['type']} = {r['default']!r}   (--set {r['set_key']})"
        out.print(fill(first, subsequent_indent=" " * 8), markup=False)
        meaning = r["help"] + (f" Choices: {', '.join(r['choices'])}." if r["choices"] else "")
        out.print(fill(meaning, initial_indent=" " * 6, subsequent_indent=" " * 6), markup=False)
