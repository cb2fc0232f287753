"""CDK synth cost: ``cdk synth`` with and without the built-in CloudFormation validation, and
the wall time of the whole infra test module.

aws-cdk-lib 2.275 runs a built-in CloudFormation validation on every synth. Each measurement is
a fresh ``npx cdk synth`` from the repository root (the CDK CLI that ``make install`` puts in
./node_modules), output into a temporary folder, so in-process caches cannot flatter a run;
the median of ``--runs`` runs is reported, then the ratio. Last, ``pytest tests/infra`` is
timed once (target: <= 60 s).

    python bench/bench_cdk_synth.py [--runs 3] [--no-tests] [-c key=value ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
TEST_TARGET_S = 60.0


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    run = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    return time.perf_counter() - start, run


def synth_once(validation: bool, context: list[str]) -> float:
    """Seconds of one fresh ``npx cdk synth`` (exits on failure)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = ["npx", "--no-install", "cdk", "synth", "--quiet", "--output", out]
        cmd += [] if validation else ["--no-validation"]
        for kv in context:
            cmd += ["-c", kv]
        elapsed, run = timed(cmd)
    if run.returncode != 0:
        sys.exit(f"cdk synth failed ({' '.join(cmd)}):\n{run.stderr[-3000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="synths per variant (median reported)")
    parser.add_argument("--no-tests", action="store_true", help="skip timing pytest tests/infra")
    parser.add_argument(
        "-c", dest="context", action="append", default=[], help="extra -c key=value for cdk synth"
    )
    args = parser.parse_args()
    if not (REPO / "node_modules" / ".bin" / "cdk").exists():
        sys.exit("the CDK CLI is not installed: run `make install`")

    print(f"cdk synth from {REPO} ({args.runs} fresh runs each, median)")
    results = {}
    # Alternate the variants so machine noise (other jobs on the cores) hits both alike.
    on, off = [], []
    for _ in range(args.runs):
        on.append(synth_once(True, args.context))
        off.append(synth_once(False, args.context))
    for label, values in (("with built-in validation", on), ("without (--no-validation)", off)):
        results[label] = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {label:<28} {results[label]:6.1f} s   (runs: {runs})")
    ratio = results["with built-in validation"] / results["without (--no-validation)"]
    print(f"  ratio with/without            {ratio:6.1f} x")

    if not args.no_tests:
        elapsed, run = timed([sys.executable, "-m", "pytest", "tests/infra", "-q", "-p", "no:cacheprovider"])
        summary = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
        verdict = "within" if elapsed <= TEST_TARGET_S else "OVER"
        print(
            f"pytest tests/infra: {elapsed:.1f} s wall ({verdict} the {TEST_TARGET_S:.0f} s target): {summary}"
        )
        if run.returncode != 0:
            print(run.stdout[-3000:], file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
