"""Mixed precision: fp32 master weights under 16-bit autocast, decided per device by one table.

CUDA cannot run here, so the decision is a pure function tested row by row, and its plans are then
applied on CPU to the real model and Trainer (CPU autocast runs bf16 and fp16, and
``torch.amp.GradScaler("cpu")`` fails on fp16 gradients exactly as the CUDA one does on a T4).
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from ftcloud.spec import PRECISIONS, TECHNIQUES, TrainingSpec
from ftcloud_train.job import UserError
from ftcloud_train.modeling import Device, load_model, merge_eos_token_ids, precision_plan

CPU, T4, V100, A10G, H100 = None, (7, 5), (7, 0), (8, 6), (9, 0)

# device, technique, precision, quantization -> precision, load, trainable, autocast, scaler, quant compute
PLANS = [
    (CPU, "lora", "auto", "none", ("fp32", "fp32", "fp32", None, False, "fp32")),
    (CPU, "full", "auto", "none", ("fp32", "fp32", "fp32", None, False, "fp32")),
    (CPU, "qlora", "auto", "4bit", ("fp32", "fp32", "fp32", None, False, "fp32")),
    (CPU, "lora", "bf16", "none", ("bf16", "bf16", "fp32", "bf16", False, "bf16")),
    (CPU, "full", "bf16", "none", ("bf16", "fp32", "fp32", "bf16", False, "bf16")),
    # T4 / V100: fp16 autocast + loss scaling over fp32 trainable weights (never fp16 weights that train)
    (T4, "full", "auto", "none", ("fp16", "fp32", "fp32", "fp16", True, "fp16")),
    (T4, "lora", "auto", "none", ("fp16", "fp16", "fp32", "fp16", True, "fp16")),
    (T4, "qlora", "auto", "4bit", ("fp16", "fp16", "fp32", "fp16", True, "fp16")),
    (V100, "dora", "fp16", "none", ("fp16", "fp16", "fp32", "fp16", True, "fp16")),
    (V100, "full", "fp32", "none", ("fp32", "fp32", "fp32", None, False, "fp32")),
    # Ampere and newer: bf16 autocast, no scaler
    (A10G, "full", "auto", "none", ("bf16", "fp32", "fp32", "bf16", False, "bf16")),
    (A10G, "lora", "auto", "none", ("bf16", "bf16", "fp32", "bf16", False, "bf16")),
    (A10G, "dora", "auto", "4bit", ("bf16", "bf16", "fp32", "bf16", False, "bf16")),
    (H100, "qlora", "auto", "4bit", ("bf16", "bf16", "fp32", "bf16", False, "bf16")),
    (H100, "full", "fp16", "none", ("fp16", "fp32", "fp32", "fp16", True, "fp16")),
    # pure bf16 only when asked for
    (H100, "full", "bf16_pure", "none", ("bf16_pure", "bf16", "bf16", None, False, "bf16")),
    (A10G, "lora", "bf16_pure", "none", ("bf16_pure", "bf16", "bf16", None, False, "bf16")),
    (CPU, "full", "bf16_pure", "none", ("bf16_pure", "bf16", "bf16", None, False, "bf16")),
]


@pytest.mark.parametrize("capability, technique, precision, quantization, expected", PLANS)
def test_precision_plan_table(capability, technique, precision, quantization, expected):
    plan = precision_plan(capability, technique, precision, quantization)
    got = (plan.precision, plan.load_dtype, plan.trainable_dtype, plan.autocast_dtype, plan.grad_scaler,
           plan.quant_compute_dtype)
    assert got == expected
    # The Trainer's flags: bf16=True is bf16 autocast, fp16=True is fp16 autocast + GradScaler.
    assert (plan.trainer_bf16, plan.trainer_fp16) == (expected[3] == "bf16", expected[4])


def test_quantized_compute_dtype_can_be_chosen():
    plan = precision_plan(A10G, "qlora", "auto", "4bit", compute_dtype="fp32")
    assert (plan.quant_compute_dtype, plan.load_dtype, plan.autocast_dtype) == ("fp32", "fp32", "bf16")


@pytest.mark.parametrize(
    "capability, precision, compute_dtype, message",
    [
        (T4, "bf16", "auto", "precision=bf16 needs a GPU with native bf16"),
        (V100, "bf16_pure", "auto", "precision=bf16_pure needs a GPU with native bf16"),
        (T4, "auto", "bf16", "compute_dtype=bf16 needs a GPU with native bf16"),
        (CPU, "fp16", "auto", "precision=fp16 needs a CUDA GPU"),
    ],
)
def test_precision_plan_refuses_what_the_device_cannot_do(capability, precision, compute_dtype, message):
    with pytest.raises(UserError, match=message):
        precision_plan(capability, "lora", precision, "4bit", compute_dtype)


def test_only_bf16_pure_trains_without_fp32_master_weights():
    """Over every device, technique and precision: what the optimizer updates is fp32 unless asked."""
    for capability, technique, precision in itertools.product((CPU, T4, A10G), TECHNIQUES, PRECISIONS):
        quantization = "4bit" if technique == "qlora" else "none"
        try:
            plan = precision_plan(capability, technique, precision, quantization)
        except UserError:
            continue
        assert plan.trainable_dtype == ("bf16" if precision == "bf16_pure" else "fp32"), (capability, technique, precision)
        assert not plan.grad_scaler or plan.trainable_dtype == "fp32"  # GradScaler cannot unscale fp16 grads
        if technique == "full" and precision != "bf16_pure":
            assert plan.load_dtype == "fp32"  # for full fine-tuning the base is the master copy


def test_device_reads_the_compute_capability_not_is_bf16_supported(monkeypatch):
    """torch says bf16 is "supported" on a T4 (emulated); the capability says it is not native."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    device = Device.detect()
    assert (device.type, device.capability, device.bf16) == ("cuda", (7, 5), False)
    assert precision_plan(device.capability, "full", "auto").precision == "fp16"


# ---------------------------------------------------------------------------- on the real model
def _spec(model_dir, technique, **extra):
    return TrainingSpec(technique=technique, model=str(model_dir), **extra)


def _dtypes(model, keep):
    return {p.dtype for n, p in model.named_parameters() if keep(n)}


def _scaled_step(model, autocast_dtype):
    """One GradScaler step under autocast, as the Trainer does with fp16=True on a GPU."""
    scaler = torch.amp.GradScaler("cpu")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.arange(10, 30).unsqueeze(0)
    with torch.autocast("cpu", dtype=autocast_dtype):
        loss = model(input_ids=ids, labels=ids).loss
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # "Attempting to unscale FP16 gradients" when trainable weights are fp16
    scaler.step(optimizer)
    scaler.update()


def test_full_fine_tuning_on_a_t4_keeps_fp32_master_weights_and_scales(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    plan = precision_plan(T4, "full", "auto")
    model = load_model(str(tiny_model_dir), _spec(tiny_model_dir, "full"), Device("cpu", False, 0, 1), plan)
    assert _dtypes(model, lambda n: True) == {torch.float32}
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    _scaled_step(model, torch.float16)
    assert not torch.equal(before, model.model.layers[0].self_attn.q_proj.weight)
    # What the old code did (weights loaded in the autocast dtype) fails in the same scaler step.
    fp16_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float16)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        _scaled_step(fp16_model, torch.float16)


@pytest.mark.parametrize("technique", ["lora", "dora"])
def test_adapters_train_in_fp32_over_a_16bit_frozen_base(technique, tiny_model_dir):
    plan = precision_plan(T4, technique, "auto")  # fp16 base, fp16 autocast + scaler
    model = load_model(str(tiny_model_dir), _spec(tiny_model_dir, technique), Device("cpu", False, 0, 1), plan)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    if technique == "dora":
        assert any("lora_magnitude_vector" in n for n in trainable)
    assert _dtypes(model, lambda n: n in trainable) == {torch.float32}
    assert _dtypes(model, lambda n: "base_layer" in n) == {torch.float16}
    _scaled_step(model, torch.float16)  # the scaler accepts it


def test_qlora_computes_in_16bit_with_fp32_adapters(tiny_model_dir):
    import bitsandbytes as bnb

    plan = precision_plan(CPU, "qlora", "bf16", "4bit")
    model = load_model(str(tiny_model_dir), _spec(tiny_model_dir, "qlora"), Device("cpu", False, 0, 1), plan)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and {m.compute_dtype for m in layers} == {torch.bfloat16}
    assert _dtypes(model, lambda n: "lora_" in n) == {torch.float32}


def test_bf16_pure_trains_bf16_weights(tiny_model_dir):
    plan = precision_plan(A10G, "full", "bf16_pure")
    model = load_model(str(tiny_model_dir), _spec(tiny_model_dir, "full"), Device("cpu", False, 0, 1), plan)
    assert _dtypes(model, lambda n: True) == {torch.bfloat16}


@pytest.mark.parametrize("precision, mixed", [("bf16", "bf16"), ("fp32", "no")])
def test_trainer_autocasts_over_fp32_master_weights(precision, mixed, tiny_model_dir, tmp_path):
    """The Trainer built from the plan runs matmuls in bf16 while the weights it updates stay fp32."""
    from transformers import Trainer

    from ftcloud_train.batching import PadCollator
    from ftcloud_train.job import load_job
    from ftcloud_train.recipe import training_arguments

    from .jobtree import make_job

    ctx = load_job(make_job(tmp_path, tiny_model_dir, technique="full", precision=precision, max_steps=2))
    device = Device("cpu", False, 0, 1)
    plan = precision_plan(None, "full", precision)
    model = load_model(str(tiny_model_dir), ctx.spec, device, plan)
    q_proj = model.model.layers[0].self_attn.q_proj
    before = q_proj.weight.detach().clone()
    seen = []
    q_proj.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    rows = [{"input_ids": list(range(10, 10 + n)), "labels": list(range(10, 10 + n)), "length": n} for n in (8, 12) * 8]
    trainer = Trainer(
        model=model,
        args=training_arguments(ctx, device, plan, "padded"),
        train_dataset=rows,
        data_collator=PadCollator(pad_token_id=0),
    )
    assert trainer.accelerator.mixed_precision == mixed
    trainer.train()
    assert set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert q_proj.weight.dtype == torch.float32 and not torch.equal(before, q_proj.weight)


# ---------------------------------------------------------------------------- seed, EOS ids
def _lora_a(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}


def test_seed_controls_the_adapters_initial_weights(tiny_model_dir):
    device = Device("cpu", False, 0, 1)

    def lora_a(seed):
        return _lora_a(load_model(str(tiny_model_dir), _spec(tiny_model_dir, "lora", seed=seed), device, "fp32"))

    first, again, other = lora_a(7), lora_a(7), lora_a(8)
    assert first.keys() == again.keys() and first
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)


@pytest.mark.parametrize(
    "model_eos, tokenizer_eos, expected",
    [
        ([128001, 128008, 128009], 128009, [128001, 128008, 128009]),  # Llama 3: kept whole
        ([128001, 128008], 128009, [128001, 128008, 128009]),
        (2, 2, 2),
        (2, 3, [2, 3]),
        (None, 3, 3),
        (None, None, None),
    ],
)
def test_merge_eos_token_ids(model_eos, tokenizer_eos, expected):
    assert merge_eos_token_ids(model_eos, tokenizer_eos) == expected


def test_saved_generation_config_keeps_every_eos_id(tmp_path, monkeypatch):
    """A model that stops on several ids (like Llama 3) still stops on all of them after training."""
    from ftcloud_train.tiny import build_model

    from .jobtree import make_job
    from .test_techniques import train_in_process

    model_dir = build_model(tmp_path / "model")
    config_path = model_dir / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = [1, 2]  # the tokenizer's EOS (<|im_end|>, 3) is not among them
    config_path.write_text(json.dumps(config))
    paths = make_job(tmp_path / "job", model_dir, technique="lora", max_steps=2, precision="bf16")
    assert train_in_process(paths, monkeypatch) == 0
    saved = json.loads((paths.model_dir / "generation_config.json").read_text())
    assert isinstance(saved["eos_token_id"], list) and sorted(saved["eos_token_id"]) == [1, 2, 3]
