"""The platform guide (docs/platform.md) and cdk.json stay in step with the code."""

from __future__ import annotations

import json

from ftcloud.platform_outputs import DESCRIPTIONS
from infra.config import CDK_JSON, REPO_ROOT, PlatformConfig

DOC = REPO_ROOT / "docs" / "platform.md"


def test_every_context_key_and_output_is_documented():
    text = DOC.read_text()
    for key, _, _ in PlatformConfig.describe():
        assert f"| `{key}` |" in text, f"context key {key} missing from docs/platform.md"
    for key in DESCRIPTIONS:
        assert f"| `{key}` |" in text, f"output {key} missing from docs/platform.md"
    assert "```mermaid" in text


def test_cdk_json_holds_only_known_keys_and_runs_the_app_module():
    cdk = json.loads(CDK_JSON.read_text())
    assert cdk["app"] == "python3 -m infra.app"
    known = set(PlatformConfig.context_keys())
    ours = {k for k in cdk["context"] if not k.startswith("@")}
    assert ours <= known, ours - known
