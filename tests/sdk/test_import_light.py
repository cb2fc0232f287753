"""``ftcloud --help`` and ``ftcloud launch --help`` must not pay for heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("boto3", "botocore", "torch", "transformers", "peft", "aws_cdk", "bitsandbytes")
# Not forbidden by the issue, but they would make --help slow; keep them out too.
SLOW = ("rich", "yaml", "moto")

PROBE = """
import json, sys
from ftcloud.cli import main
rc = main({args!r})
sys.stdout.flush()
print("\\nMODULES=" + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_modules(args: list[str]) -> tuple[set[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES=")][-1]
    return {m.split(".")[0] for m in json.loads(line.removeprefix("MODULES="))}, proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["launch", "--help"], ["status", "--help"], ["logs", "--help"]])
def test_help_imports_nothing_heavy(args):
    modules, out = loaded_modules(args)
    assert "Usage:" in out
    assert not modules & set(HEAVY), modules & set(HEAVY)
    assert not modules & set(SLOW), modules & set(SLOW)


def test_importing_the_sdk_is_light():
    code = (
        "import sys, ftcloud; ftcloud.launch; ftcloud.JobSpec; ftcloud.Client; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
