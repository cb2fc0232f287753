"""Compliance of every configuration: cdk-nag AwsSolutions, cfn-lint, CDK's own validation,
and deterministic output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.nag import open_findings
from tests.infra.support import CONFIGS


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cdk_nag_aws_solutions_has_no_open_findings(synth, name):
    assert open_findings(synth(name).app) == []


@pytest.mark.parametrize("name", ["full", "default"])
def test_every_acknowledgment_silences_a_real_finding(monkeypatch, tmp_path, name):
    """No stale acknowledgments: built without them, the findings are exactly the acknowledged ids."""
    import infra.nag
    from infra.app import build_app

    acknowledged: list[tuple[str, str]] = []
    monkeypatch.setattr(
        infra.nag, "acknowledge", lambda construct, rule, reason: acknowledged.append((rule, reason))
    )
    app, _ = build_app(CONFIGS[name], outdir=str(tmp_path), nag=False, cfn_validation=False)
    raw = {finding.split(" at ")[0] for finding in open_findings(app)}
    assert raw == {rule for rule, _ in acknowledged}
    assert all(len(reason) > 40 for _, reason in acknowledged)  # a reason, not a shrug


def test_cdk_nag_fails_a_deliberately_bad_bucket(tmp_path):
    """The check above can fail: a bare bucket (no TLS policy, no logging) is reported, and with
    the plugin registered as the app does it, synthesis itself fails."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3

    from infra.nag import add_nag_checks

    app = App(outdir=str(tmp_path), builtin_cloud_formation_validation=False, analytics_reporting=False)
    s3.Bucket(Stack(app, "Bad"), "Bucket")
    findings = open_findings(app)
    assert any(f.startswith("AwsSolutions-S1 at Bad/Bucket/Resource") for f in findings), findings
    assert any(f.startswith("AwsSolutions-S10 at Bad/Bucket/Resource") for f in findings), findings
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed(.|\n)*AwsSolutions-S10"):
        app.synth()


@pytest.fixture(scope="session")
def cfn_lint_results(synth):
    """cfn-lint over every configuration's template in one process (~3 s instead of ~3 s each)."""
    paths = {name: synth(name).template_path for name in CONFIGS}
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    assert cfn_lint, "cfn-lint is not installed (pip install -e '.[dev]')"
    run = subprocess.run(
        [cfn_lint, "--format", "json", *map(str, paths.values())],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode in (0, 2, 4, 6, 8, 10, 12, 14), run.stderr  # bit flags: 2 error, 4 warning, 8 info
    matches = json.loads(run.stdout or "[]")
    return {name: [m for m in matches if m["Filename"] == str(path)] for name, path in paths.items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cfn_lint_reports_no_errors(cfn_lint_results, name):
    errors = [
        f"{m['Rule']['Id']} {m['Message']} ({m['Location']['Path']})"
        for m in cfn_lint_results[name]
        if m["Level"] == "Error"
    ]
    assert errors == []


def test_synth_passes_cdk_builtin_validation_and_nag_as_deployed(tmp_path):
    """The one synth with CDK's built-in CloudFormation validation on (~10 s), with cdk-nag
    registered exactly as ``cdk synth`` runs the app."""
    from infra.app import build_app

    app, _ = build_app(CONFIGS["full"], outdir=str(tmp_path), nag=True, cfn_validation=True)
    app.synth()  # raises on any validation or nag failure
    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert all(r["conclusion"] != "failure" for r in report.get("pluginReports", [])), report


def test_synthesis_is_deterministic(synth, tmp_path):
    # "full" has no Docker asset: its template depends only on code and context. (An asset's
    # hash also follows the files of training_image/ and sdk/, which others edit meanwhile.)
    from infra.app import build_app

    app, stack = build_app(CONFIGS["full"], outdir=str(tmp_path), nag=False, cfn_validation=False)
    app.synth()
    again = json.loads((tmp_path / f"{stack.stack_name}.template.json").read_text())
    assert again == synth("full").template
