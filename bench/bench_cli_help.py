"""CLI start-up: wall time of ``ftcloud --help`` (and ``ftcloud launch --help``) vs ``python -c "import click"``.

Both run as fresh processes with the same interpreter; the console script pip generated is
used directly (not a pyenv/asdf shim). Runs are interleaved after one warm-up; medians
are compared (minimums shown too: the least noisy figure on a busy machine).
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


def timed(commands: dict[str, list[str]], runs: int) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per command; runs are interleaved so machine load hits all alike."""
    for cmd in commands.values():  # warm the page cache
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            samples[name].append(time.perf_counter() - start)
    return {name: (statistics.median(v), min(v)) for name, v in samples.items()}


def console_script() -> list[str]:
    script = os.path.join(sysconfig.get_path("scripts"), "ftcloud")
    if os.path.isfile(script):
        return [sys.executable, script]
    return [sys.executable, "-m", "ftcloud.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    result = timed(
        {
            "python -c 'import click'": [sys.executable, "-c", "import click"],
            "ftcloud --help": [*console_script(), "--help"],
            "ftcloud launch --help": [*console_script(), "launch", "--help"],
        },
        args.runs,
    )
    base_median, base_min = result["python -c 'import click'"]
    for name, (median, best) in result.items():
        ratio = f"   ratio {median / base_median:.2f}x (min {best / base_min:.2f}x)" if name.startswith("ftcloud") else ""
        print(f"{name:26s}: median {median * 1000:6.1f} ms, min {best * 1000:6.1f} ms{ratio}")
    median, _ = result["ftcloud --help"]
    ok = median / base_median <= 2.0 and median < 0.150
    print(f"target ratio <= 2x and < 150 ms: {'met' if ok else 'NOT met'}")

if __name__ == "__main__":
    main()
