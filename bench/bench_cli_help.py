"""CLI start-up: wall time of ``ftcloud --help`` (and ``ftcloud launch --help``) vs ``python -c "import click"``.

Both run as fresh processes with the same interpreter; the console script pip generated is
used directly (not a pyenv/asdf shim). Median of N runs after one warm-up.
Targets: ratio <= 2x, ``ftcloud --help`` < 150 ms.

    python bench/bench_cli_help.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import time


def timed(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)  # warm the page cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def console_script() -> list[str]:
    script = os.path.join(sysconfig.get_path("scripts"), "ftcloud")
    if os.path.isfile(script):
        return [sys.executable, script]
    return [sys.executable, "-m", "ftcloud.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    baseline = timed([sys.executable, "-c", "import click"], args.runs)
    help_top = timed([*console_script(), "--help"], args.runs)
    help_launch = timed([*console_script(), "launch", "--help"], args.runs)
    print(f"python -c 'import click' : {baseline * 1000:7.1f} ms")
    print(f"ftcloud --help           : {help_top * 1000:7.1f} ms   ratio {help_top / baseline:.2f}x")
    print(f"ftcloud launch --help    : {help_launch * 1000:7.1f} ms   ratio {help_launch / baseline:.2f}x")
    ok = help_top / baseline <= 2.0 and help_top < 0.150
    print(f"target ratio <= 2x and < 150 ms: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
