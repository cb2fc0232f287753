"""Fixtures for the serving tests: model/ trees laid out as training writes them (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .artifacts import make_adapter_artifact


@pytest.fixture(scope="session")
def adapter_ml_root(tiny_model_dir, tmp_path_factory) -> Path:
    """An /opt/ml-like root whose model/ holds adapter "default" (root), "second" (LoRA) and
    "dora" (DoRA) in adapters/, the tokenizer, generation_config.json and the base in model/base/."""
    root = tmp_path_factory.mktemp("serve-ml")
    make_adapter_artifact(root, tiny_model_dir, {"second": {"seed": 2}, "dora": {"seed": 3, "dora": True}})
    return root


@pytest.fixture(scope="session")
def adapter_runner(adapter_ml_root):
    from ftcloud_train.serving.runner import ModelRunner

    return ModelRunner.load(adapter_ml_root / "model", adapter_ml_root)


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """Loading a runner sets torch's (process-wide) thread count for serving; other tests keep theirs."""
    import sys

    before = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    yield
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(before or torch.get_num_threads())
