"""Each technique really does what it says, and learns: the loss falls on a learnable data set.

The technique tests capture the Trainer the recipe builds (by wrapping ``Trainer.train``) and
assert on the objects that train: the optimizer that stepped, the layers of the model, and
whether activations were really recomputed in the backward pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from ftcloud.contract import ROOT_ENV
from ftcloud_train.entrypoint import main as entrypoint_main

from .jobtree import losses, make_job, metrics


def train_in_process(paths, monkeypatch) -> int:
    monkeypatch.setenv(ROOT_ENV, str(paths.root))
    return entrypoint_main(["train"])


@dataclass
class Captured:
    """The Trainer the recipe built, and what its decoder layers did while it trained."""

    trainer: Any = None
    layer_calls: int = 0  # decoder-layer calls with gradients on (module hooks run outside the checkpoint)
    layer_calls_all: int = 0
    mlp_calls: int = 0  # calls of each layer's MLP: once more in the backward pass when checkpointing recomputes

    @property
    def recomputed(self) -> int:
        return self.mlp_calls - self.layer_calls_all

    @property
    def optimizer(self):
        optimizer = self.trainer.optimizer
        return getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it in AcceleratedOptimizer


def train_capturing(paths, monkeypatch) -> Captured:
    """Run the real entrypoint in-process; return the Trainer it trained with."""
    import torch
    import transformers
    from transformers.modeling_layers import GradientCheckpointingLayer

    captured = Captured()
    original = transformers.Trainer.train

    def count_layer(module, args):
        captured.layer_calls_all += 1
        captured.layer_calls += int(torch.is_grad_enabled() and module.training)

    def count_mlp(module, args):
        captured.mlp_calls += 1

    def train(self, *args, **kwargs):
        captured.trainer = self
        for module in self.model.modules():
            if isinstance(module, GradientCheckpointingLayer) and hasattr(module, "mlp"):
                module.register_forward_pre_hook(count_layer)
                # A pre-hook: non-reentrant checkpointing may stop a recompute before a module returns.
                module.mlp.register_forward_pre_hook(count_mlp)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "train", train)
    code = train_in_process(paths, monkeypatch)
    assert code == 0, paths.failure_file.read_text() if paths.failure_file.exists() else f"exit {code}"
    assert captured.trainer is not None and captured.layer_calls > 0
    return captured


def trainable_parameters(model) -> dict:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def assert_optimizer_stepped_exactly(optimizer, params: dict) -> None:
    """The optimizer holds exactly these parameters and has stepped every one of them."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in params.values()}
    stale = [name for name, p in params.items() if not optimizer.state.get(p)]
    assert not stale, f"parameters the optimizer never stepped: {stale[:5]}"


def quantized_modules(model) -> list:
    import bitsandbytes as bnb

    return [m for m in model.modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]


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


def test_qlora_trains_4bit_nf4_base_with_paged_8bit_adamw_and_checkpointing(tiny_model_dir, tmp_path, monkeypatch):
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    paths = make_job(tmp_path, tiny_model_dir, technique="qlora", max_steps=2)
    run = train_capturing(paths, monkeypatch)
    model = run.trainer.model

    # the optimizer that stepped: bitsandbytes AdamW with 8-bit state, paged
    optimizer = run.optimizer
    assert isinstance(optimizer, bnb.optim.AdamW), type(optimizer)
    assert optimizer.args.optim_bits == 8
    assert optimizer.is_paged
    trainable = trainable_parameters(model)
    assert trainable and all("lora_" in name for name in trainable)  # the 4-bit base is frozen
    assert_optimizer_stepped_exactly(optimizer, trainable)

    # every adapted linear layer of the 2 decoder blocks (q, k, v, o, gate, up, down) sits on a 4-bit NF4 base
    bases = [m.base_layer for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(bases) == 2 * 7
    assert all(isinstance(base, bnb.nn.Linear4bit) for base in bases)
    for base in bases:
        state = base.weight.quant_state
        assert state.quant_type == "nf4"
        assert state.nested  # double quantization
        assert base.weight.numel() * base.weight.element_size() * 2 == base.in_features * base.out_features

    # checkpointing really recomputed every decoder layer of every training forward pass
    assert run.recomputed == run.layer_calls


def test_lora_trains_plain_base_with_torch_adamw_and_no_checkpointing(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    paths = make_job(tmp_path, tiny_model_dir, technique="lora", max_steps=2)
    run = train_capturing(paths, monkeypatch)
    model = run.trainer.model

    assert type(run.optimizer) is torch.optim.AdamW
    trainable = trainable_parameters(model)
    assert trainable and all("lora_" in name for name in trainable)
    assert not any("magnitude" in name for name in trainable)  # LoRA, not DoRA
    assert_optimizer_stepped_exactly(run.optimizer, trainable)
    assert quantized_modules(model) == []
    assert run.recomputed == 0


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_dora_trains_magnitude_vectors(quantization, tiny_model_dir, tmp_path, monkeypatch):
    from peft.tuners.lora import LoraLayer

    paths = make_job(tmp_path, tiny_model_dir, technique="dora", quantization=quantization, max_steps=2)
    run = train_capturing(paths, monkeypatch)
    model = run.trainer.model

    trainable = trainable_parameters(model)
    magnitudes = {name: p for name, p in trainable.items() if "lora_magnitude_vector" in name}
    adapted = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(adapted) == 2 * 7
    assert len(magnitudes) == len(adapted)  # one magnitude vector per adapted layer, all trainable
    assert_optimizer_stepped_exactly(run.optimizer, trainable)
    assert len(quantized_modules(model)) == (len(adapted) if quantization == "4bit" else 0)
    assert run.recomputed == 0  # checkpointing is on only for qlora and full

    config = json.loads((paths.model_dir / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    # all-linear: every projection of every block, never the output head
    names = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_full_trains_every_parameter_with_torch_adamw_and_checkpointing(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    paths = make_job(tmp_path, tiny_model_dir, technique="full", max_steps=2, learning_rate=1e-3)
    run = train_capturing(paths, monkeypatch)
    model = run.trainer.model

    assert type(run.optimizer) is torch.optim.AdamW
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    assert not any("lora_" in name for name in params)
    assert_optimizer_stepped_exactly(run.optimizer, params)
    assert quantized_modules(model) == []
    assert run.recomputed == run.layer_calls


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
    import torch

    paths = make_job(tmp_path, tiny_mixtral_dir, technique="lora", max_steps=12)
    run = train_capturing(paths, monkeypatch)
    config = json.loads((paths.model_dir / "adapter_config.json").read_text())
    assert config["lora_dropout"] == 0.0  # fused expert weights take adapters only without dropout
    assert {"gate_up_proj", "down_proj"} <= set(config.get("target_parameters") or [])  # experts adapted
    curve = losses(paths)
    assert curve[-1] < curve[0]

    # The loss the Trainer backpropagates is the LM loss plus the router's load-balancing loss.
    trainer, model = run.trainer, run.trainer.model
    batch = next(iter(trainer.get_train_dataloader()))
    backpropagated = []
    backward = trainer.accelerator.backward

    def record(loss, **kwargs):
        backpropagated.append(loss.detach().clone())
        return backward(loss, **kwargs)

    monkeypatch.setattr(trainer.accelerator, "backward", record)
    model.zero_grad(set_to_none=True)
    trainer.training_step(model, batch)
    router = {name: p for name, p in trainable_parameters(model).items() if ".mlp.gate." in name}
    assert router, "the router has no adapter: its balancing loss could not train it"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in router.values())

    with torch.no_grad():
        out = model(**batch)
    assert out.aux_loss is not None and out.aux_loss.item() > 0
    logits, labels = out.logits[:, :-1].float(), batch["labels"][:, 1:]
    lm_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    coef = model.config.router_aux_loss_coef
    assert coef > 0
    (loss,) = backpropagated
    assert loss.item() == pytest.approx((lm_loss + coef * out.aux_loss).item(), abs=1e-5)
    assert abs(loss.item() - lm_loss.item()) > 0.5 * coef * out.aux_loss.item()  # not the LM loss alone

    # The balancing loss alone reaches the router's adapter.
    model.zero_grad(set_to_none=True)
    (coef * model(**batch).aux_loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in router.values())
