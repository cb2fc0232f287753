"""The live progress view of a running job: a state folded from log lines and status polls, rendered with rich.

:class:`WatchState` is fed the same two things for every backend: log events (``ftcloud-metric`` and
``ftcloud-progress`` lines from the container; other lines are left for the caller to print) and
:class:`~ftcloud.backends.base.JobStatus` polls (SageMaker's secondary status, instance, spot,
billable time). :func:`render` draws it (phase, step N of total with a bar, ETA, epoch, losses with a
sparkline trend, tokens/s, instance, spot, billable time so far); :func:`summary_table` closes the run.
Everything takes ``now`` explicitly, so a recorded log renders the same in tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ftcloud.contract import parse_metric_line, parse_progress_line
from ftcloud.curves import Curve, sparkline

#: The phases the view names, in order ("saving": the container writes the artifacts, which SageMaker
#: then uploads).
PHASES = ("starting", "downloading", "training", "evaluating", "saving", "uploading", "done")

# SageMaker secondary statuses (and the local runner's) -> phase. Unknown ones (Interrupted,
# MaxRuntimeExceeded, Restarting, ...) are shown as they are.
_SECONDARY_PHASE = {
    "Starting": "starting",
    "Pending": "starting",
    "LaunchingMLInstances": "starting",
    "PreparingTrainingStack": "starting",
    "Downloading": "downloading",
    "DownloadingTrainingImage": "downloading",
    "Training": "training",
    "Uploading": "uploading",
    "Completed": "done",
    "Failed": "done",
    "Stopped": "done",
    "Stopping": "stopping",
}


def phase_of(status: str, secondary_status: str, container_phase: str | None) -> str:
    """The phase to show, from the job status, its secondary status and the container's last progress line.

    The container knows more than the secondary status while it is ``Training`` (it first loads the model
    and data, then trains, evaluates and saves; ``None``: it has announced nothing yet); SageMaker knows
    more before the container starts and after it exits (download, upload).
    """
    if status in ("Completed", "Failed", "Stopped"):
        return "done"
    phase = _SECONDARY_PHASE.get(secondary_status, secondary_status.lower() or "starting")
    if phase == "training":
        return container_phase or "starting"
    return phase


def use_live_view(is_terminal: bool, as_json: bool, plain: bool) -> bool:
    """The live view is for a person at a terminal; scripts, CI logs and ``--plain`` keep the line stream."""
    return is_terminal and not as_json and not plain


@dataclass
class WatchState:
    """What the live view knows about one job; fold events and statuses in with the ``on_*`` methods."""

    name: str
    backend: str = ""
    status: str = "InProgress"
    secondary_status: str = ""
    container_phase: str | None = None
    step: int | None = None
    start_step: int = 0  # where this run started (a resumed run starts past 0)
    total_steps: int | None = None
    num_epochs: float | None = None
    epoch: float | None = None
    curve: Curve = field(default_factory=lambda: Curve(""))
    tokens_per_second: float | None = None
    # SageMaker facts (status polls)
    instance_type: str | None = None
    instance_count: int | None = None
    spot: bool = False
    started: float | None = None  # epoch seconds
    ended: float | None = None
    billable_seconds: int | None = None
    training_seconds: int | None = None
    spot_savings_percent: float | None = None
    failure_reason: str | None = None
    artifacts: str | None = None
    # (epoch ms, step) of the training start and of each train-loss line: the ETA's rate
    _marks: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.curve.name = self.name

    # ---- folding ------------------------------------------------------------------------
    def on_log(self, event: Any) -> bool:
        """Fold one log event in; True when it was a metric/progress line (the view shows it), False
        for any other line (the caller prints it)."""
        progress = parse_progress_line(event.message)
        if progress is not None:
            self.container_phase = str(progress["phase"])
            if self.container_phase == "training":
                self.start_step = int(progress.get("step", 0))
                self.step = self.start_step
                if "total_steps" in progress:
                    self.total_steps = int(progress["total_steps"])
                if "num_epochs" in progress:
                    self.num_epochs = float(progress["num_epochs"])
                # A (re)start: the rate is measured from here, not across the restart.
                self._marks = [(event.timestamp, self.start_step)] if event.timestamp else []
            return True
        metrics = parse_metric_line(event.message)
        if metrics is None or "step" not in metrics:
            return False
        if self.container_phase is None:  # a container that does not announce phases
            self.container_phase = "training"
        step = int(metrics["step"])
        self.curve.add_line(event.message)
        self.step = step if self.step is None else max(self.step, step)
        if "epoch" in metrics:
            self.epoch = metrics["epoch"]
        if "tokens_per_second" in metrics:
            self.tokens_per_second = metrics["tokens_per_second"]
        if "train_loss" in metrics and event.timestamp:
            self._marks.append((event.timestamp, step))
        return True

    def on_status(self, st: Any) -> None:
        """Fold a :class:`~ftcloud.backends.base.JobStatus` in."""
        self.backend = st.backend
        self.status, self.secondary_status = st.status, st.secondary_status
        self.instance_type, self.instance_count, self.spot = st.instance_type, st.instance_count, st.spot
        self.started, self.ended = st.started, st.ended
        self.billable_seconds, self.training_seconds = st.billable_seconds, st.training_seconds
        self.spot_savings_percent = st.spot_savings_percent
        self.failure_reason, self.artifacts = st.failure_reason, st.artifacts

    # ---- derived ------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        return phase_of(self.status, self.secondary_status, self.container_phase)

    def seconds_per_step(self) -> float | None:
        """Measured over this run's train-loss lines (from the training start when it was announced)."""
        if len(self._marks) < 2:
            return None
        (t0, s0), (t1, s1) = self._marks[0], self._marks[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return (t1 - t0) / 1000.0 / (s1 - s0)

    def eta_seconds(self, now: float) -> float | None:
        """Seconds until the last step, from the measured rate, counted from the last metric line."""
        per_step = self.seconds_per_step()
        if per_step is None or self.total_steps is None or self.step is None:
            return None
        remaining = max(self.total_steps - self.step, 0) * per_step
        return max(remaining - max(now - self._marks[-1][0] / 1000.0, 0.0), 0.0)

    def elapsed_seconds(self, now: float) -> float | None:
        if self.started is None:
            return None
        return max((self.ended or now) - self.started, 0.0)


# ---------------------------------------------------------------------- rendering
def duration(seconds: float | None) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m05s``; None -> ``-``."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _loss(values: dict[int, float]) -> str:
    if not values:
        return "-"
    series = [v for _, v in sorted(values.items())]
    return f"{series[-1]:.4f}  {sparkline(series)}"


def _machine(state: WatchState, now: float) -> str | None:
    if state.backend != "sagemaker" and state.instance_type in (None, "local"):
        return None
    parts = [f"{state.instance_count or 1} x {state.instance_type or '?'}", "spot" if state.spot else "on-demand"]
    if state.billable_seconds is not None:
        parts.append(f"billable {duration(state.billable_seconds)}")
    elif state.started is not None:
        # SageMaker reports billable seconds at the end; until then it is the time since the instances
        # started (spot savings, if any, are known only at the end).
        parts.append(f"billable so far ~{duration(state.elapsed_seconds(now))}")
    return " | ".join(parts)


def render(state: WatchState, now: float | None = None) -> Any:
    """The live view as a rich renderable."""
    from rich.markup import escape
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    now = time.time() if now is None else now
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    head = f"[bold]{escape(state.name)}[/bold]  {state.phase if state.phase != 'done' else state.status}"
    if state.secondary_status and state.secondary_status.lower() not in (state.phase, state.status.lower()):
        head += f" [dim]({escape(state.secondary_status)})[/dim]"
    grid.add_row("job", head)
    if state.total_steps:
        step = state.step or 0
        bar = Table.grid(padding=(0, 1))
        bar.add_row(f"{step}/{state.total_steps}", ProgressBar(total=state.total_steps, completed=step, width=30),
                    f"{100 * step / state.total_steps:.0f}%")
        grid.add_row("step", bar)
    elif state.step is not None:
        grid.add_row("step", f"{state.step} (total not announced)")
    eta = state.eta_seconds(now)
    if state.phase == "training" or eta is not None:
        grid.add_row("ETA", duration(eta) if eta is not None else "measuring...")
    if state.epoch is not None:
        grid.add_row("epoch", f"{state.epoch:.2f}" + (f" of {state.num_epochs:g}" if state.num_epochs else ""))
    if state.curve.train:
        grid.add_row("train loss", _loss(state.curve.train))
    if state.curve.eval:
        grid.add_row("eval loss", _loss(state.curve.eval))
    if state.tokens_per_second is not None:
        grid.add_row("tokens/s", f"{state.tokens_per_second:,.0f}")
    machine = _machine(state, now)
    if machine:
        grid.add_row("instance", escape(machine))
    elapsed = state.elapsed_seconds(now)
    if elapsed is not None:
        grid.add_row("elapsed", duration(elapsed))
    return grid


def summary_table(state: WatchState, now: float | None = None, loss_png: str | None = None) -> Any:
    """The table printed when the job ends."""
    from rich.markup import escape
    from rich.table import Table

    now = time.time() if now is None else now
    style = {"Completed": "green", "Failed": "red", "Stopped": "yellow"}.get(state.status, "")
    table = Table(title=f"{state.name}: summary", box=None, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # paths are copied: fold them, never cut them
    table.add_row("status", f"[{style}]{state.status}[/{style}]" if style else state.status)
    if state.failure_reason:
        table.add_row("failure reason", f"[red]{escape(state.failure_reason)}[/red]")
    if state.step is not None:
        table.add_row("steps", f"{state.step}" + (f" of {state.total_steps}" if state.total_steps else ""))
    if state.epoch is not None:
        table.add_row("epochs", f"{state.epoch:.2f}")
    train = state.curve.train_points()
    if train:
        table.add_row("train loss", f"{train[0][1]:.4f} -> {train[-1][1]:.4f}  {sparkline([v for _, v in train])}")
    final = state.curve.final()
    if final["eval_loss"] is not None:
        ppl = final["eval_perplexity"]
        table.add_row("eval loss", f"{final['eval_loss']:.4f}" + (f"  (perplexity {ppl:.2f})" if ppl else ""))
    if final["tokens_per_second"] is not None:
        table.add_row("tokens/s (mean)", f"{final['tokens_per_second']:,.0f}")
    table.add_row("duration", duration(state.elapsed_seconds(now)))
    machine = _machine(state, now)
    if machine:
        table.add_row("instance", escape(machine))
    if state.spot_savings_percent is not None:
        table.add_row("spot savings", f"{state.spot_savings_percent:.1f}%")
    if state.artifacts and state.status == "Completed":
        table.add_row("artifacts", escape(state.artifacts))
    if loss_png:
        table.add_row("loss curve", escape(loss_png))
    return table
