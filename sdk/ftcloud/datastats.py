"""``ftcloud data stats``: what a data set looks like before training, and what max_length will do to it.

Lengths are measured the way training measures them: with a tokenizer, each row goes through
:func:`ftcloud_train.data.tokenize_row` (chat template, EOS) and the over-length policy through
:func:`ftcloud_train.data.apply_length_policy`, so the counts here are the counts the job reports.
Without a tokenizer lengths are characters. transformers and matplotlib load only when asked for.
"""

from __future__ import annotations

import math
import os
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Percentiles reported (and drawn as lines on the plot).
PERCENTILES = (50, 90, 95, 99)


@dataclass
class DataStats:
    """Counts and length distribution of a data set (``unit``: tokens or characters)."""

    format: str
    rows: int
    valid_rows: int
    problems: int
    unit: str
    sources: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    min: int = 0
    max: int = 0
    mean: float = 0.0
    percentiles: dict[str, int] = field(default_factory=dict)
    histogram: list[tuple[int, int, int]] = field(default_factory=list)  # (low, high, count), high exclusive
    max_length: int = 0
    overlength: str = ""
    over_max_length: int = 0
    truncated: int = 0
    dropped_overlength: int = 0
    dropped_no_target: int = 0
    examples: list[str] = field(default_factory=list)  # locations of a few over-length rows
    lengths: array = field(default_factory=lambda: array("l"), repr=False)

    def policy_effect(self) -> str:
        """One sentence: what the over-length policy will do in training."""
        n = self.over_max_length
        where = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        if self.unit != "tokens":
            return "lengths are characters: pass --model or --tokenizer to see what max_length will do."
        if not n:
            return f"every row fits in max_length={self.max_length}."
        head = f"{n} row(s) longer than max_length={self.max_length}{where}: overlength={self.overlength} "
        if self.overlength == "error":
            return head + "stops the job at the first of them. Raise max_length, or choose truncate or drop."
        if self.overlength == "drop":
            return head + f"drops them ({self.dropped_overlength} rows)."
        return (head + f"cuts them to {self.max_length} tokens without EOS (so they do not teach stopping early)"
                + (f"; {self.dropped_no_target} of them keep no completion tokens and are dropped" if self.dropped_no_target
                   else "") + ".")

    def text_histogram(self, width: int = 40) -> str:
        if not self.histogram:
            return "(no rows)"
        top = max(c for _, _, c in self.histogram) or 1
        label_w = len(f"{self.histogram[-1][1] - 1:,}") * 2 + 3
        lines = []
        for low, high, count in self.histogram:
            bar = "#" * max(1 if count else 0, round(width * count / top))
            rng = f"{low:,}-{high - 1:,}"
            mark = " <- max_length" if self.max_length and low <= self.max_length < high else ""
            lines.append(f"{rng:>{label_w}} | {bar:<{width}} {count:,}{mark}")
        return "\n".join(lines)

    def summary(self) -> str:
        pct = " ".join(f"{k}={v:,}" for k, v in self.percentiles.items())
        lines = [
            f"{self.rows:,} rows ({self.format or 'format unknown'}) in {len(self.sources)} source(s)"
            + (f"; {self.problems} problem(s): run 'ftcloud data validate' to list them" if self.problems else ""),
            *(f"  {name}: {count:,} rows" for name, count in self.sources.items()),
        ]
        if self.labels:
            lines.append("labels: " + ", ".join(f"{k}={v:,}" for k, v in self.labels.items()))
        if self.valid_rows:
            lines.append(f"length ({self.unit}): min={self.min:,} mean={self.mean:,.1f} max={self.max:,} {pct}")
            lines.append(self.text_histogram())
        lines.append(self.policy_effect())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "lengths"}
        out["histogram"] = [{"low": lo, "high": hi, "count": c} for lo, hi, c in self.histogram]
        out["policy_effect"] = self.policy_effect()
        return out

    def save_plot(self, path: str | os.PathLike) -> Path:
        """Draw the length histogram (with percentiles and max_length) as a PNG."""
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        try:
            if self.histogram:
                edges = [lo for lo, _, _ in self.histogram] + [self.histogram[-1][1]]
                ax.hist(list(self.lengths), bins=edges, color="#4c72b0")
            for name, value in self.percentiles.items():
                ax.axvline(value, color="#999999", linestyle=":", linewidth=1)
                ax.text(value, ax.get_ylim()[1] * 0.95, name, fontsize=7, rotation=90, va="top")
            if self.unit == "tokens" and self.max_length:
                ax.axvline(self.max_length, color="#c44e52", linewidth=1.5, label=f"max_length={self.max_length}")
                ax.legend()
            ax.set_xlabel(f"row length ({self.unit})")
            ax.set_ylabel("rows")
            ax.set_title(f"{self.valid_rows:,} rows ({self.format})")
            out = Path(path)
            fig.savefig(out, dpi=100, bbox_inches="tight")
            return out
        finally:
            plt.close(fig)


def _histogram(sorted_lengths: array, bins: int) -> list[tuple[int, int, int]]:
    if not sorted_lengths:
        return []
    lo, hi = sorted_lengths[0], sorted_lengths[-1]
    step = max(1, math.ceil((hi - lo + 1) / bins))
    counts = Counter((n - lo) // step for n in sorted_lengths)
    n_bins = (hi - lo) // step + 1
    return [(lo + i * step, lo + (i + 1) * step, counts.get(i, 0)) for i in range(n_bins)]


def _percentile(sorted_lengths: array, q: int) -> int:
    """Nearest-rank percentile (a length some row really has)."""
    rank = max(1, math.ceil(q / 100 * len(sorted_lengths)))
    return sorted_lengths[rank - 1]


def compute_stats(
    sources: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    fmt: str = "auto",
    tokenizer: Any = None,
    max_length: int | None = None,
    overlength: str | None = None,
    completion_only_loss: bool = True,
    bins: int = 20,
    query: str | None = None,
    table: str | None = None,
) -> DataStats:
    """Read ``sources`` (validated first: invalid rows are counted, not measured) and measure them.

    ``tokenizer``: a loaded tokenizer, or None for character lengths. ``max_length`` and
    ``overlength`` default to the training spec's defaults."""
    from ftcloud.spec import TrainingSpec
    from ftcloud_train import datasource

    defaults = TrainingSpec()
    max_length = max_length or defaults.max_length
    overlength = overlength or defaults.overlength
    report = datasource.validate(sources, fmt=fmt, max_problems=0, query=query, table=table)
    stats = DataStats(format=report.format, rows=report.rows, valid_rows=0, problems=report.problem_count,
                      unit="tokens" if tokenizer is not None else "characters",
                      sources={s.location: s.rows for s in report.sources},
                      max_length=max_length, overlength=overlength)
    if not report.format:
        return stats
    if tokenizer is not None:
        from ftcloud_train.data import IGNORE_INDEX, DataReport, Tokenized, apply_length_policy, tokenize_row

        policy_report = DataReport(split="stats", max_length=max_length)
    labels: Counter = Counter()
    lengths = array("l")
    for src in datasource.expand_sources(sources if not isinstance(sources, (str, os.PathLike)) else [sources],
                                         query=query, table=table):
        for item in datasource.read_source(src):
            if isinstance(item, datasource.Problem):
                continue
            try:
                row = datasource.normalize(item, report.format)
            except datasource.DataError:
                continue
            if report.format == "classification":
                labels[str(row["label"])] += 1
            if tokenizer is None:
                lengths.append(datasource.row_chars(row))
                continue
            if report.format == "classification":
                # as ftcloud_train.classification.build_split: the text alone, no EOS, one label target
                ids = tokenizer(row["text"], add_special_tokens=True)["input_ids"]
                sample = Tokenized(ids, ids, item.source)
            else:
                sample = tokenize_row(item, report.format, tokenizer, completion_only_loss)
            n = len(sample.input_ids)
            lengths.append(n)
            if n > max_length:
                stats.over_max_length += 1
                if len(stats.examples) < 3:
                    stats.examples.append(item.source)
                if overlength == "error":
                    continue
                kept = apply_length_policy(sample, max_length, overlength, policy_report)
                if kept is not None and report.format != "classification" and all(
                        t == IGNORE_INDEX for t in kept.labels):
                    stats.dropped_no_target += 1
    if tokenizer is not None:
        stats.truncated = policy_report.truncated
        stats.dropped_overlength = policy_report.dropped_overlength
    stats.valid_rows = len(lengths)
    stats.labels = dict(sorted(labels.items()))
    if lengths:
        ordered = array("l", sorted(lengths))
        stats.lengths = ordered
        stats.min, stats.max = ordered[0], ordered[-1]
        stats.mean = sum(ordered) / len(ordered)
        stats.percentiles = {f"p{q}": _percentile(ordered, q) for q in PERCENTILES}
        stats.histogram = _histogram(ordered, bins)
    return stats


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer training would use (same loader as the container)."""
    from ftcloud.errors import UsageError
    from ftcloud_train.job import UserError
    from ftcloud_train.modeling import load_tokenizer as _load

    try:
        return _load(name_or_path, False)
    except UserError as exc:
        raise UsageError(str(exc), hint="Pass a local model directory or a cached Hugging Face id.") from None
