"""Shared fixtures: tiny generated models and data sets (offline, deterministic)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama + tokenizer saved with save_pretrained (loaded through from_pretrained)."""
    from ftcloud_train.tiny import build_model

    return build_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_mixtral_dir(tmp_path_factory) -> Path:
    from ftcloud_train.tiny import build_model

    return build_model(tmp_path_factory.mktemp("tiny-mixtral"), arch="mixtral")


@pytest.fixture()
def make_data(tmp_path):
    """``make_data(rows=64, fmt="chat", name="train.jsonl")`` -> path of a learnable JSONL file."""
    from ftcloud_train.tiny import make_rows, write_jsonl

    def _make(rows: int = 64, fmt: str = "chat", name: str = "train.jsonl", seed: int = 0, filler=(0, 2)) -> Path:
        return write_jsonl(tmp_path / "data" / name, make_rows(rows, fmt, seed, filler))

    return _make
