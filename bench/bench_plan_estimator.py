"""Estimator error per technique on tiny models: estimated / measured training memory (CPU).

Each row trains one optimizer step of a generated tiny model through the real entrypoint and counts
the real tensors (``tests/training/memory_probe.py`` says how), then asks the planner for the same
job (same micro-batch shape, CPU dtypes). Prints one table; ``--json`` for the raw numbers.

    python bench/bench_plan_estimator.py [--json]

About a minute on 2 CPU cores. The same comparison at 8B scale on a GPU: ``bench/gpu_check.py``
(its "plan GiB" column next to the measured peak).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROWS = [
    ("llama", "lora", {}),
    ("llama", "qlora", {}),
    ("llama", "dora", {}),
    ("llama", "full", {}),
    ("llama", "full", {"gradient_checkpointing": "false"}),
    ("mixtral", "lora", {}),
]
PARTS = ("weights", "gradients", "optimizer", "activations")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)

    import pytest

    from ftcloud.planning.catalog import resolve_model
    from ftcloud.planning.memory import MemoryInputs, estimate_memory
    from ftcloud.spec import TrainingSpec
    from ftcloud_train.tiny import build_model
    from tests.training.memory_probe import measure

    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    models = {arch: build_model(work / arch, arch=arch) for arch in {r[0] for r in ROWS}}
    results = []
    for i, (arch, technique, extra) in enumerate(ROWS):
        hp = {"technique": technique, **extra}
        with pytest.MonkeyPatch.context() as mp:
            m = measure(work / f"job-{i}", models[arch], mp, **hp)
        spec = TrainingSpec(**{**hp, "max_length": m.seq_len, "per_device_train_batch_size": m.micro_batch})
        est = estimate_memory(resolve_model(str(models[arch])), MemoryInputs.from_spec(spec, gpu_bf16=None))
        row = {"model": f"tiny-{arch}", "technique": technique,
               "checkpointing": spec.resolved_gradient_checkpointing, "tokens": m.seq_len * m.micro_batch}
        for part in PARTS:
            row[f"{part}_measured"] = getattr(m, part)
            row[f"{part}_estimated"] = est.components.get(part, 0)
        row["total_measured"] = m.tensors
        row["total_estimated"] = sum(est.components.get(p, 0) for p in PARTS)
        results.append(row)
        print(f"[bench_plan] {arch} {technique} {extra or ''} done", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    header = ["model", "technique", "ckpt", *[p[:5] for p in PARTS], "total KiB est/meas", "est/meas"]
    table = [header]
    for r in results:
        ratios = [f"{r[f'{p}_estimated'] / r[f'{p}_measured']:.2f}" if r[f"{p}_measured"] else "-" for p in PARTS]
        table.append([r["model"], r["technique"], "on" if r["checkpointing"] else "off", *ratios,
                      f"{r['total_estimated'] / 1024:.0f}/{r['total_measured'] / 1024:.0f}",
                      f"{r['total_estimated'] / r['total_measured']:.2f}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print("estimated / measured per component (CPU, fp32, one micro-batch of "
          f"{results[0]['tokens']} tokens)")
    for j, row in enumerate(table):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
