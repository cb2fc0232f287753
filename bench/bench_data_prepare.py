"""``data prepare`` rows/s vs a bare ``datasets`` pipeline doing the same operations, and peak memory.

Both sides run in this process on the same synthetic chat file (default 100k rows: colour
questions with filler, some HTML, e-mail addresses, medical abbreviations and ~10% duplicates)
and apply the same per-row functions: NFC normalisation, whitespace/control cleanup, HTML
stripping, PII redaction, the medical glossary, exact de-duplication and a 10% validation split,
then write train/validation JSONL. ``data prepare`` also writes its data card (a second read of
the output for lengths, and content hashes) and, without ``--no-cache-check``, hashes the input for
its cache key: that is part of what it costs. The baseline is ``Dataset.from_json`` -> ``map`` ->
``filter`` (dedup + split) -> ``to_json``. Target: ratio >= 0.8x.

Peak memory is the process's maximum resident set size (ru_maxrss) after ``data prepare`` (run
first, before ``datasets`` is imported) and after the baseline.

    python bench/bench_data_prepare.py [--rows 100000] [--near-dedup]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "sdk"), str(REPO / "training_image")]


def synthetic(path: Path, n: int, seed: int = 0) -> None:
    from ftcloud_train.tiny import make_rows

    rng = random.Random(seed)
    base = make_rows(min(n, 20_000), "chat", seed=seed, filler=(0, 8), phrasings=4)
    extras = ["", " <b>urgent</b>", " mail me at pat{i}@example.org", " history of MI and HTN", " caf\u0065\u0301  ok"]
    recent: list[str] = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            if recent and rng.random() < 0.1:  # an exact duplicate of a recent row
                line = rng.choice(recent)
            else:
                row = base[i % len(base)]
                user = f"{row['messages'][0]['content']} (case {i}){rng.choice(extras).format(i=i)}"
                line = json.dumps({"messages": [{"role": "user", "content": user}, row["messages"][1]]})
                recent = (recent + [line])[-1000:]
            fh.write(line + "\n")


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_prepare(src: Path, out: Path, near_dedup: bool) -> tuple[float, dict]:
    from ftcloud_train.prepare import PrepareOptions, prepare

    options = PrepareOptions(strip_html=True, redact_pii=True, glossary=["medical"], near_dedup=near_dedup)
    start = time.perf_counter()
    result = prepare([src], out, options)
    return time.perf_counter() - start, result.card["counts"]


def run_datasets(src: Path, out: Path, near_dedup: bool) -> tuple[float, int]:
    """The same row functions, driven by datasets.map / filter / to_json."""
    import datasets

    from ftcloud_train.prepare import PrepareOptions
    from ftcloud_train.prepare.pipeline import RowSteps
    from ftcloud_train.prepare.split import StratifiedSplitter

    datasets.disable_progress_bars()
    options = PrepareOptions(strip_html=True, redact_pii=True, glossary=["medical"], near_dedup=near_dedup)
    start = time.perf_counter()
    steps = RowSteps(options, "chat")
    ds = datasets.Dataset.from_json(str(src), cache_dir=str(out / "cache"))
    ds = ds.map(lambda row: {"keep": (new := steps({"messages": row["messages"]})) is not None,
                             "messages": new["messages"] if new is not None else row["messages"]},
                load_from_cache_file=False)
    ds = ds.filter(lambda row: row["keep"], load_from_cache_file=False).remove_columns("keep")
    splitter = StratifiedSplitter(options.validation_fraction, options.seed)
    ds = ds.map(lambda row: {"validation": splitter.is_validation(None)}, load_from_cache_file=False)
    ds.filter(lambda r: not r["validation"], load_from_cache_file=False).remove_columns("validation") \
        .to_json(str(out / "train.jsonl"))
    ds.filter(lambda r: r["validation"], load_from_cache_file=False).remove_columns("validation") \
        .to_json(str(out / "validation.jsonl"))
    return time.perf_counter() - start, len(ds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--near-dedup", action="store_true", help="also MinHash/LSH near-duplicate removal")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        src = tmp_path / "raw.jsonl"
        synthetic(src, args.rows)
        size_mib = src.stat().st_size / 2**20
        baseline_rss = maxrss_mib()
        ours_s, counts = run_prepare(src, tmp_path / "prepared", args.near_dedup)
        ours_rss = maxrss_mib()
        theirs_s, kept = run_datasets(src, tmp_path / "hf", args.near_dedup)
        theirs_rss = maxrss_mib()
        if kept != counts["kept"]:
            raise SystemExit(f"the two pipelines disagree: datasets kept {kept}, data prepare {counts['kept']}")
        shutil.rmtree(tmp_path / "hf", ignore_errors=True)
    ours, theirs = args.rows / ours_s, args.rows / theirs_s
    print(f"rows: {args.rows} ({size_mib:.1f} MiB JSONL), kept {counts['kept']}, "
          f"dropped {counts['dropped']}, near-dedup {'on' if args.near_dedup else 'off'}")
    print(f"data prepare:  {ours_s:7.2f} s  {ours:9.0f} rows/s   peak RSS {ours_rss:7.1f} MiB "
          f"(+{ours_rss - baseline_rss:.1f} MiB over the interpreter + input generation)")
    print(f"datasets.map:  {theirs_s:7.2f} s  {theirs:9.0f} rows/s   peak RSS {theirs_rss:7.1f} MiB")
    print(f"ratio (data prepare / datasets): {ours / theirs:.2f}x  (target >= 0.8x)")


if __name__ == "__main__":
    main()
