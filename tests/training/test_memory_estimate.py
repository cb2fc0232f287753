"""The planner's memory estimate against what real training holds, per technique, on tiny models (CPU).

The real entrypoint trains one optimizer step; :mod:`.memory_probe` counts the bytes of the real tensors
(parameters and quantization state, ``.grad`` before each step, optimizer state after, storages
saved for backward). The estimate gets the measured micro-batch shape and the CPU dtypes.

Tolerances: weights, gradients and optimizer state within 5% (these are counted, not modelled);
activations within 20% (a per-token model of what autograd keeps); the sum within 15%.
"""

from __future__ import annotations

import pytest

from ftcloud.planning.catalog import resolve_model
from ftcloud.planning.memory import MemoryInputs, estimate_memory
from ftcloud.spec import TrainingSpec

from .memory_probe import measure

COUNTED = ("weights", "gradients", "optimizer")


def estimate_for(model_dir, measured, **hyperparameters):
    spec = TrainingSpec(**{**hyperparameters, "max_length": measured.seq_len,
                           "per_device_train_batch_size": measured.micro_batch})
    return estimate_memory(resolve_model(str(model_dir)), MemoryInputs.from_spec(spec, gpu_bf16=None))


@pytest.mark.slow
@pytest.mark.parametrize("technique, extra", [
    ("lora", {}),  # no checkpointing, dropout 0.05
    ("qlora", {}),  # NF4 + double quant, paged 8-bit AdamW, checkpointing
    ("dora", {}),
    ("full", {}),  # checkpointing
    ("full", {"gradient_checkpointing": "false"}),
])  # fmt: skip
def test_estimate_matches_measured_tensors(technique, extra, tiny_model_dir, tmp_path, monkeypatch):
    hp = {"technique": technique, **extra}
    measured = measure(tmp_path, tiny_model_dir, monkeypatch, **hp)
    assert measured.seq_len == 64 and measured.micro_batch == 4  # every batch full: the shape is known
    est = estimate_for(tiny_model_dir, measured, **hp)
    assert est.trainable_parameters == measured.trainable_parameters
    for part in COUNTED:
        assert est.components[part] == pytest.approx(getattr(measured, part), rel=0.05), part
    assert est.components["activations"] == pytest.approx(measured.activations, rel=0.20)
    estimated = sum(est.components[p] for p in (*COUNTED, "activations"))
    assert estimated == pytest.approx(measured.tensors, rel=0.15)


@pytest.mark.slow
def test_estimate_matches_measured_tensors_for_a_mixture_of_experts(tiny_mixtral_dir, tmp_path, monkeypatch):
    """Fused expert weights (transformers 5) with LoRA on every expert and the router."""
    measured = measure(tmp_path, tiny_mixtral_dir, monkeypatch, technique="lora")
    est = estimate_for(tiny_mixtral_dir, measured, technique="lora")
    assert est.trainable_parameters == measured.trainable_parameters
    for part in COUNTED:
        assert est.components[part] == pytest.approx(getattr(measured, part), rel=0.05), part
    assert est.components["activations"] == pytest.approx(measured.activations, rel=0.20)
