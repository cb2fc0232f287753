"""The app as the CDK CLI runs it: ``npx cdk synth`` from the repository root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from infra.config import REPO_ROOT

ENV = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}


@pytest.mark.slow
def test_npx_cdk_synth_from_the_repository_root(tmp_path):
    """`make install` puts the CLI in ./node_modules (git-ignored), where npx finds it.

    --no-validation: CDK's built-in validation is covered once in test_compliance.py (it costs
    ~10 s); cdk-nag still runs, as main() registers it."""
    if not (REPO_ROOT / "node_modules" / ".bin" / "cdk").exists() or not shutil.which("npx"):
        pytest.fail(
            "the CDK CLI is not installed: run `make install` (npm install of aws-cdk into ./node_modules)"
        )
    out = tmp_path / "cdk.out"
    run = subprocess.run(
        [
            "npx",
            "--no-install",
            "cdk",
            "synth",
            "--no-validation",
            "--quiet",
            "--output",
            str(out),
            "-c",
            "endpointEnabled=true",
            "-c",
            "endpointModelDataUrl=s3://models-bucket/m/model.tar.gz",
        ],
        cwd=REPO_ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    template = json.loads((out / "FtcloudPlatform.template.json").read_text())
    assert "EndpointName" in template["Outputs"]  # -c values reached the app
    assert not (REPO_ROOT / "cdk.context.json").exists()  # no look-ups happened


def test_invalid_context_fails_with_a_readable_message():
    # The CLI hands context to the app through CDK_CONTEXT_JSON; a bad value must exit non-zero
    # with the key and the fix, not a traceback.
    run = subprocess.run(
        [sys.executable, "-m", "infra.app"],
        cwd=REPO_ROOT,
        env={
            **ENV,
            "CDK_CONTEXT_JSON": json.dumps({"endpointMinCapacity": "5"}),
            "CDK_OUTDIR": "/nonexistent",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "cdk context 'endpointMinCapacity': 5 is greater than endpointMaxCapacity=2" in run.stderr
    assert "Traceback" not in run.stderr
