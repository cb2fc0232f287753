"""Synthesize each platform configuration once per test session.

Synthesis is offline (no credentials, no Docker) and deterministic. The fixtures turn CDK's
built-in CloudFormation validation off (it costs ~10 s per synth); test_compliance.py keeps it
on in exactly one test. cdk-nag and cfn-lint run over every configuration there too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.support import CONFIGS, Synth


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """``synth(name)`` -> :class:`Synth`, built at most once per session per configuration."""
    from infra.app import build_app

    cache: dict[str, Synth] = {}

    def get(name: str) -> Synth:
        if name not in cache:
            outdir = tmp_path_factory.mktemp(f"cdk-{name}")
            app, stack = build_app(CONFIGS[name], outdir=str(outdir), nag=False, cfn_validation=False)
            app.synth()
            template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
            cache[name] = Synth(name, app, stack, outdir, template)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def template(synth):
    """``template(name)`` -> ``aws_cdk.assertions.Template`` of that configuration (cached)."""
    from aws_cdk.assertions import Template

    cache: dict[str, Any] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = Template.from_json(synth(name).template)
        return cache[name]

    return get
