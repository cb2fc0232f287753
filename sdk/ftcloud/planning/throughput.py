"""Time and cost: an ESTIMATE from FLOPs, the GPU's dense peak and an assumed utilisation.

tokens/s per GPU = peak FLOP/s x MFU / FLOPs per token, where FLOPs per token (training, forward +
backward) = 2N forward + 2N backward through the activations + 2N' weight gradients (N: active
parameters that multiply, the input embeddings excluded; N': trainable ones, ~0 for adapters),
+ 2N more when gradient checkpointing recomputes the forward, + attention scores
6 x layers x seq x q_dim (causal: half of 12). MFU (model FLOPs utilisation) is an assumption per
technique, typical of single-node Hugging Face training with SDPA/flash attention; measure yours
with ``bench/gpu_check.py`` (its MFU column uses the same FLOPs convention without recompute).
Several GPUs keep :data:`SCALING` of their summed speed (data parallel: the gradient all-reduce).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftcloud.planning.catalog import ModelArch
from ftcloud.planning.instances import PRICE_DATE, PRICE_REGION, Instance

#: Assumed model FLOPs utilisation. QLoRA dequantizes every 4-bit matrix on each use; DoRA
#: recomputes a weight norm per module and step.
MFU = {"full": 0.40, "lora": 0.35, "dora": 0.25, "qlora": 0.25}
SCALING = 0.90  # share of n x one GPU's speed that n data-parallel GPUs reach


def flops_per_token(arch: ModelArch, technique: str, seq_len: int, gradient_checkpointing: bool) -> float:
    counts = arch.parameter_counts()
    n = counts["active"] - counts["embeddings"] + (counts["embeddings"] if arch.tied_embeddings else 0)
    trainable = n if technique == "full" else 0
    flops = 4 * n + 2 * trainable + (2 * n if gradient_checkpointing else 0)
    return flops + 6 * arch.layers * seq_len * arch.q_dim


@dataclass
class TimeCost:
    tokens: int | None
    tokens_per_second: float
    hours: float | None
    on_demand_usd: float | None
    spot_usd: float | None
    instance_type: str
    instance_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": True,
            "tokens": self.tokens,
            "tokens_per_second": round(self.tokens_per_second),
            "hours": None if self.hours is None else round(self.hours, 2),
            "on_demand_usd": None if self.on_demand_usd is None else round(self.on_demand_usd, 2),
            "spot_usd": None if self.spot_usd is None else round(self.spot_usd, 2),
            "price_region": PRICE_REGION,
            "price_date": PRICE_DATE,
        }


def time_and_cost(arch: ModelArch, technique: str, seq_len: int, gradient_checkpointing: bool,
                  row: Instance, instance_count: int, tokens: int | None) -> TimeCost:
    """Tokens/s of ``instance_count`` x ``row`` and, when ``tokens`` (x epochs) is known, hours and USD."""
    gpus = row.gpus * instance_count
    per_gpu = row.gpu_spec.peak_tflops * 1e12 * MFU[technique] / flops_per_token(
        arch, technique, seq_len, gradient_checkpointing)
    speed = per_gpu * gpus * (SCALING if gpus > 1 else 1.0)
    if tokens is None:
        return TimeCost(None, speed, None, None, None, row.type, instance_count)
    hours = tokens / speed / 3600
    on_demand = hours * row.price_per_hour * instance_count
    return TimeCost(tokens, speed, hours, on_demand, on_demand * (1 - row.spot_discount), row.type, instance_count)
