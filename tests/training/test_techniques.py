"""Each technique really does what it says, and learns: the loss falls on a learnable data set."""

from __future__ import annotations

import json

import pytest

from ftcloud.contract import ROOT_ENV
from ftcloud_train.entrypoint import main as entrypoint_main

from .jobtree import losses, make_job, metrics


def train_in_process(paths, monkeypatch) -> int:
    monkeypatch.setenv(ROOT_ENV, str(paths.root))
    return entrypoint_main(["train"])


@pytest.mark.parametrize(
    "technique, extra",
    [
        ("lora", {}),
        ("qlora", {}),
        ("dora", {}),
        ("full", {"learning_rate": 1e-3}),
    ],
)
def test_loss_falls_clearly(technique, extra, tiny_model_dir, tmp_path, monkeypatch):
    paths = make_job(tmp_path, tiny_model_dir, technique=technique, **extra)
    assert train_in_process(paths, monkeypatch) == 0, paths.failure_file.read_text() if paths.failure_file.exists() else ""
    curve = losses(paths)
    first, last = curve[0], curve[-1]
    assert last < 0.6 * first, f"{technique}: loss {first:.3f} -> {last:.3f} did not fall clearly"
    m = metrics(paths)
    assert m["global_step"] == 30
    assert m["eval_loss"] < first  # held-out rows improve too
    assert m["eval_perplexity"] == pytest.approx(2.718281828 ** m["eval_loss"], rel=1e-6)


def test_qlora_really_quantizes_to_4bit(tiny_model_dir, tmp_path):
    import bitsandbytes as bnb
    import torch

    from ftcloud.spec import TrainingSpec
    from ftcloud_train.modeling import Device, load_model

    spec = TrainingSpec(technique="qlora", model=str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), spec, Device("cpu", False, 0, 1), "fp32")
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    # every linear layer of the 2 decoder blocks (q, k, v, o, gate, up, down) is 4-bit
    assert len(quantized) == 2 * 7
    weight = quantized[0].weight
    assert weight.quant_state.quant_type == "nf4"
    assert weight.quant_state.nested  # double quantization
    assert weight.dtype == torch.float32 or weight.dtype == torch.uint8  # packed storage
    assert weight.numel() * (4 if weight.dtype == torch.float32 else 1) * 2 == quantized[0].in_features * quantized[0].out_features
    # adapters are trainable, the 4-bit base is frozen
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_qlora_uses_paged_8bit_optimizer_and_checkpointing(tiny_model_dir, tmp_path, monkeypatch):
    paths = make_job(tmp_path, tiny_model_dir, technique="qlora", max_steps=2)
    assert train_in_process(paths, monkeypatch) == 0
    resolved = json.loads((paths.model_dir / "ftcloud_spec.json").read_text())["resolved"]
    assert resolved["optimizer"] == "paged_adamw_8bit"
    assert resolved["quantization"] == "4bit"
    assert resolved["gradient_checkpointing"] is True


def test_dora_adapter_config_says_so_also_on_4bit(tiny_model_dir, tmp_path, monkeypatch):
    paths = make_job(tmp_path, tiny_model_dir, technique="dora", quantization="4bit", max_steps=2)
    assert train_in_process(paths, monkeypatch) == 0
    config = json.loads((paths.model_dir / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    # all-linear: every projection of every block, never the output head
    names = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_full_fine_tuning_saves_full_weights(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    paths = make_job(tmp_path, tiny_model_dir, technique="full", max_steps=2, learning_rate=1e-3)
    assert train_in_process(paths, monkeypatch) == 0
    assert (paths.model_dir / "model.safetensors").is_file()
    assert not (paths.model_dir / "adapter_config.json").exists()
    tuned = AutoModelForCausalLM.from_pretrained(paths.model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for (n, a), (_, b) in zip(tuned.named_parameters(), base.named_parameters(), strict=True) if not a.equal(b)]
    assert len(changed) > 10  # every layer moved, not only an adapter


def test_merge_adapter_writes_a_plain_model(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    paths = make_job(tmp_path, tiny_model_dir, technique="lora", max_steps=3, merge_adapter="true")
    assert train_in_process(paths, monkeypatch) == 0
    merged = AutoModelForCausalLM.from_pretrained(paths.model_dir / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_mixture_of_experts_lora_trains_router_with_balancing_loss(tiny_mixtral_dir, tmp_path, monkeypatch):
    paths = make_job(tmp_path, tiny_mixtral_dir, technique="lora", max_steps=12)
    assert train_in_process(paths, monkeypatch) == 0
    config = json.loads((paths.model_dir / "adapter_config.json").read_text())
    assert config["lora_dropout"] == 0.0  # fused expert weights take adapters only without dropout
    assert {"gate_up_proj", "down_proj"} <= set(config.get("target_parameters") or [])  # experts adapted
    curve = losses(paths)
    assert curve[-1] < curve[0]
