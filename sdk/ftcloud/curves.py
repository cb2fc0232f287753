"""Loss curves from metric lines: a small text chart for the terminal, a sparkline, and a PNG.

One job's curve is built from its ``ftcloud-metric`` lines (the same lines SageMaker's metric
regexes read), so it works for any backend and any job that logged. The container draws its
``loss.png`` with :func:`write_png` too. matplotlib is imported only when a PNG is drawn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcloud.contract import parse_metric_line

SPARK_CHARS = "▁▂▃▄▅▆▇█"


@dataclass
class Curve:
    """Train and eval loss by optimizer step for one job (a step logged twice, e.g. after a resume,
    keeps its latest value)."""

    name: str
    train: dict[int, float] = field(default_factory=dict)
    eval: dict[int, float] = field(default_factory=dict)
    #: the latest value of every metric (tokens_per_second, epoch, ...)
    latest: dict[str, float] = field(default_factory=dict)
    #: tokens/s of every metric line that had it (for the mean)
    throughput: list[float] = field(default_factory=list)

    def add(self, step: int, metrics: dict[str, float]) -> None:
        if "train_loss" in metrics:
            self.train[step] = metrics["train_loss"]
        if "eval_loss" in metrics:
            self.eval[step] = metrics["eval_loss"]
        if "tokens_per_second" in metrics:
            self.throughput.append(metrics["tokens_per_second"])
        self.latest.update(metrics)
        self.latest["step"] = float(step)

    def add_line(self, line: str) -> bool:
        """Fold one log line in; False when it is not a metric line."""
        parsed = parse_metric_line(line)
        if parsed is None or "step" not in parsed:
            return False
        step = int(parsed.pop("step"))
        self.add(step, parsed)
        return True

    @classmethod
    def from_lines(cls, name: str, lines: Iterable[str]) -> Curve:
        curve = cls(name)
        for line in lines:
            curve.add_line(line)
        return curve

    @classmethod
    def from_history(cls, name: str, history: Iterable[dict[str, Any]]) -> Curve:
        """From the container's ``loss_history.json`` records (``{"step": 5, "train_loss": ...}``)."""
        curve = cls(name)
        for record in history:
            curve.add(int(record["step"]), {k: float(v) for k, v in record.items() if k != "step"})
        return curve

    @property
    def empty(self) -> bool:
        return not self.train and not self.eval

    def train_points(self) -> list[tuple[int, float]]:
        return sorted(self.train.items())

    def eval_points(self) -> list[tuple[int, float]]:
        return sorted(self.eval.items())

    def final(self) -> dict[str, float | None]:
        """Final figures for a comparison: last train / eval loss, perplexity, mean tokens/s, steps."""
        train, evals = self.train_points(), self.eval_points()
        return {
            "steps": max([s for s, _ in train + evals], default=None),
            "train_loss": train[-1][1] if train else None,
            "eval_loss": evals[-1][1] if evals else None,
            "eval_perplexity": self.latest.get("eval_perplexity") if evals else None,
            "tokens_per_second": sum(self.throughput) / len(self.throughput) if self.throughput else None,
        }


def sparkline(values: Sequence[float], width: int = 16) -> str:
    """The last ``width`` values as ``▁▂▃▅▇`` (low to high); non-finite values are skipped."""
    values = [v for v in values if math.isfinite(v)][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[round((v - low) / span * top) if span else top // 2] for v in values)


def text_chart(curve: Curve, width: int = 60, height: int = 10) -> str:
    """A small plain-text loss chart: ``*`` train loss, ``o`` eval loss, step on the x axis."""
    train = [(s, v) for s, v in curve.train_points() if math.isfinite(v)]
    evals = [(s, v) for s, v in curve.eval_points() if math.isfinite(v)]
    points = train + evals
    if not points:
        return "(no loss values logged yet)"
    width, height = max(width, 10), max(height, 3)
    first, last = min(s for s, _ in points), max(s for s, _ in points)
    low, high = min(v for _, v in points), max(v for _, v in points)
    if high == low:
        low, high = low - 0.5, high + 0.5

    def col(step: int) -> int:
        return 0 if last == first else round((step - first) / (last - first) * (width - 1))

    def row(value: float) -> int:
        return round((high - value) / (high - low) * (height - 1))

    grid = [[" "] * width for _ in range(height)]
    # Several steps may share a column: plot their mean, so a long run still reads as one line.
    for series, mark in ((train, "*"), (evals, "o")):
        by_col: dict[int, list[float]] = {}
        for step, value in series:
            by_col.setdefault(col(step), []).append(value)
        for c, values in by_col.items():
            grid[row(sum(values) / len(values))][c] = mark
    labels = {0: high, (height - 1) // 2: (high + low) / 2, height - 1: low}
    lines = [f"{(f'{labels[r]:.4g}' if r in labels else ''):>9} |{''.join(cells)}" for r, cells in enumerate(grid)]
    lines.append(f"{'':>9} +{'-' * width}")
    left, right = f"step {first}", str(last)
    lines.append(f"{'':>9}  {left}{right:>{max(width - len(left), len(right) + 1)}}")
    legend = "* train loss" + ("   o eval loss" if evals else "")
    lines.append(f"{'':>9}  {legend}")
    return "\n".join(lines)


def write_png(curves: Sequence[Curve], path: str | os.PathLike, title: str = "ftcloud fine-tuning") -> Path:
    """Draw every curve (train: line, eval: dots, one colour per job) into ``path``, atomically.

    Raises :class:`~ftcloud.errors.UsageError` when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        from ftcloud.errors import UsageError

        raise UsageError("Drawing a PNG needs matplotlib, which is not installed.",
                         hint="pip install matplotlib (or the 'train' extra: pip install 'ftcloud[train]').") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    several = len(curves) > 1
    fig, ax = plt.subplots(figsize=(7 if several else 6, 4), dpi=100)
    for index, curve in enumerate(curves):
        colour = f"C{index % 10}"
        prefix = f"{curve.name}: " if several else ""
        if curve.train:
            ax.plot(*zip(*curve.train_points(), strict=True), color=colour, label=f"{prefix}train loss")
        if curve.eval:
            ax.plot(*zip(*curve.eval_points(), strict=True), "o", color=colour, label=f"{prefix}eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(not c.empty for c in curves):
        ax.legend(fontsize="small")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
