"""Base-model catalog: architecture facts of popular open models, and any other model's from its config.json.

Catalog figures are the fields of each model's published ``config.json`` on the Hugging Face Hub
(docs/plan.md lists them); parameter counts are computed from those fields by
:meth:`ModelArch.parameter_counts`, not typed in, so one formula serves catalog and local models.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftcloud.errors import UsageError

#: Linear projections of a decoder layer, by the module names transformers uses.
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelArch:
    """What memory and FLOPs depend on. Sizes are counts (not bytes)."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    context: int
    head_dim: int = 0  # 0: hidden // heads
    tied_embeddings: bool = False
    experts: int = 0  # MoE: experts per layer (0: dense)
    experts_per_token: int = 0
    qkv_bias: bool = False
    family: str = ""
    license: str = ""
    gated: bool = False
    notes: str = ""
    recommended: tuple[str, ...] = field(default=())

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.hd

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hd

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear projection of one layer (one expert for MLP modules)."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        }  # fmt: skip

    def parameter_counts(self) -> dict[str, int]:
        """Parameters by part: ``embeddings``, ``head`` (0 when tied), ``attention``, ``mlp`` (all
        experts), ``router``, ``norms``; plus ``total``, ``active`` (per token: top-k experts only)
        and ``block_linear`` (the decoder-layer matrices that 4/8-bit quantization converts)."""
        shapes = self.module_shapes()
        attention = sum(a * b for n, (a, b) in shapes.items() if n in ATTENTION_MODULES)
        if self.qkv_bias:
            attention += self.q_dim + 2 * self.kv_dim
        one_mlp = sum(a * b for n, (a, b) in shapes.items() if n in MLP_MODULES)
        experts = self.experts if self.is_moe else 1
        active_experts = self.experts_per_token if self.is_moe else 1
        router = self.hidden * self.experts if self.is_moe else 0
        norms = 2 * self.hidden
        embeddings = self.vocab * self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        per_layer = attention + experts * one_mlp + router + norms
        active_layer = attention + active_experts * one_mlp + router + norms
        return {
            "embeddings": embeddings,
            "head": head,
            "attention": self.layers * attention,
            "mlp": self.layers * experts * one_mlp,
            "router": self.layers * router,
            "norms": self.layers * norms + self.hidden,
            "total": embeddings + head + self.layers * per_layer + self.hidden,
            "active": embeddings + head + self.layers * active_layer + self.hidden,
            "block_linear": self.layers * (attention + experts * one_mlp),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["recommended"] = list(self.recommended)
        counts = self.parameter_counts()
        out["parameters"] = counts["total"]
        out["active_parameters"] = counts["active"]
        return out


_LLAMA3 = dict(family="Llama 3", license="Llama 3.1/3.2 Community License", gated=True, vocab=128256,
               context=131072)
_QWEN = dict(family="Qwen 2.5", license="Apache-2.0", qkv_bias=True, context=32768)
_GEMMA2 = dict(family="Gemma 2", license="Gemma Terms of Use", gated=True, vocab=256000, context=8192,
               tied_embeddings=True, notes="Logit soft-capping: use eager or flash attention, not SDPA.")
_PHI3 = dict(family="Phi-3", license="MIT", vocab=32064,
             notes="Fused qkv_proj and gate_up_proj: target_modules all-linear covers them.")
_SMALL = ("lora", "dora", "full", "qlora")
_MID = ("qlora", "lora", "dora")
_LARGE = ("qlora",)

CATALOG: dict[str, ModelArch] = {m.name: m for m in (
    ModelArch("meta-llama/Llama-3.2-1B", 16, 2048, 8192, 32, 8, tied_embeddings=True, recommended=_SMALL, **_LLAMA3),
    ModelArch("meta-llama/Llama-3.2-3B", 28, 3072, 8192, 24, 8, tied_embeddings=True, recommended=_SMALL, **_LLAMA3),
    ModelArch("meta-llama/Llama-3.1-8B", 32, 4096, 14336, 32, 8, recommended=_MID, **_LLAMA3),
    ModelArch("meta-llama/Llama-3.1-70B", 80, 8192, 28672, 64, 8, recommended=_LARGE, **_LLAMA3),
    ModelArch("mistralai/Mistral-7B-v0.1", 32, 4096, 14336, 32, 8, vocab=32000, context=32768, family="Mistral",
              license="Apache-2.0", notes="Sliding-window attention (4096).", recommended=_MID),
    ModelArch("mistralai/Mixtral-8x7B-v0.1", 32, 4096, 14336, 32, 8, vocab=32000, context=32768, experts=8,
              experts_per_token=2, family="Mixtral", license="Apache-2.0",
              notes="Mixture of experts: all experts sit in memory, 2 of 8 compute per token.", recommended=_LARGE),
    ModelArch("Qwen/Qwen2.5-0.5B", 24, 896, 4864, 14, 2, vocab=151936, tied_embeddings=True, recommended=_SMALL, **_QWEN),
    ModelArch("Qwen/Qwen2.5-1.5B", 28, 1536, 8960, 12, 2, vocab=151936, tied_embeddings=True, recommended=_SMALL, **_QWEN),
    ModelArch("Qwen/Qwen2.5-3B", 36, 2048, 11008, 16, 2, vocab=151936, tied_embeddings=True, recommended=_SMALL,
              **{**_QWEN, "license": "Qwen Research License"}),
    ModelArch("Qwen/Qwen2.5-7B", 28, 3584, 18944, 28, 4, vocab=152064, recommended=_MID,
              **{**_QWEN, "context": 131072}),
    ModelArch("Qwen/Qwen2.5-14B", 48, 5120, 13824, 40, 8, vocab=152064, recommended=_MID,
              **{**_QWEN, "context": 131072}),
    ModelArch("Qwen/Qwen2.5-32B", 64, 5120, 27648, 40, 8, vocab=152064, recommended=_LARGE,
              **{**_QWEN, "context": 131072}),
    ModelArch("Qwen/Qwen2.5-72B", 80, 8192, 29568, 64, 8, vocab=152064, recommended=_LARGE,
              **{**_QWEN, "context": 131072, "license": "Qwen License"}),
    ModelArch("google/gemma-2-2b", 26, 2304, 9216, 8, 4, head_dim=256, recommended=_SMALL, **_GEMMA2),
    ModelArch("google/gemma-2-9b", 42, 3584, 14336, 16, 8, head_dim=256, recommended=_MID, **_GEMMA2),
    ModelArch("google/gemma-2-27b", 46, 4608, 36864, 32, 16, head_dim=128, recommended=_LARGE, **_GEMMA2),
    ModelArch("microsoft/Phi-3-mini-4k-instruct", 32, 3072, 8192, 32, 32, context=4096, recommended=_SMALL, **_PHI3),
    ModelArch("microsoft/Phi-3-medium-4k-instruct", 40, 5120, 17920, 40, 10, context=4096, recommended=_MID, **_PHI3),
)}  # fmt: skip


def from_config(config: dict[str, Any], name: str = "config.json") -> ModelArch:
    """A :class:`ModelArch` from a transformers ``config.json`` mapping (Llama, Mistral, Mixtral,
    Qwen2, Gemma2, Phi3 and look-alikes; multimodal configs via their ``text_config``)."""
    if "text_config" in config and "hidden_size" not in config:
        config = {**config, **config["text_config"]}
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"{name}: cannot read the model architecture (missing or bad {exc}).",
            hint="ftcloud plan needs hidden_size, num_hidden_layers, num_attention_heads and vocab_size "
                 "of a decoder-only model.",
        ) from None
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 0)
    intermediate = int(config.get("moe_intermediate_size") if experts and config.get("moe_intermediate_size")
                       else config.get("intermediate_size") or 4 * hidden)
    return ModelArch(
        name=str(config.get("_name_or_path") or name),
        layers=layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        vocab=vocab,
        context=int(config.get("max_position_embeddings") or 0),
        head_dim=int(config.get("head_dim") or 0),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        experts=experts,
        experts_per_token=int(config.get("num_experts_per_tok") or 0),
        qkv_bias=bool(config.get("attention_bias") or config.get("model_type") in ("qwen2", "qwen2_moe")),
        family=str(config.get("model_type", "")),
    )


def lookup(model: str) -> ModelArch | None:
    """The catalog entry for a Hub id (case-insensitive; an id without its organisation works too)."""
    wanted = model.strip().lower().rstrip("/")
    for key, arch in CATALOG.items():
        if key.lower() == wanted or key.lower().split("/", 1)[1] == wanted:
            return arch
    # Instruct / chat variants share the base model's architecture.
    for suffix in ("-instruct", "-chat", "-it"):
        if wanted.endswith(suffix):
            found = lookup(model.strip()[: -len(suffix)])
            if found is not None:
                return found
    return None


def resolve_model(model: str, model_channel: str | None = None) -> ModelArch:
    """The architecture of the job's base model: a local directory's ``config.json`` (``model`` or
    the ``model`` channel), else the catalog. A clear error otherwise, naming what to do."""
    for source in (model_channel, model):
        if source and not source.startswith("s3://"):
            path = Path(source).expanduser()
            config = path / "config.json" if path.is_dir() else path
            if config.name == "config.json" and config.is_file():
                try:
                    values = json.loads(config.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise UsageError(f"{config}: not readable JSON ({exc}).") from None
                arch = from_config(values, str(config))
                return ModelArch(**{**asdict(arch), "name": source, "recommended": ()})
    if model:
        found = lookup(model)
        if found is not None:
            return found
    what = repr(model) if model else "no base model (training.model is empty)"
    close = difflib.get_close_matches(model, list(CATALOG), n=1, cutoff=0.5) if model else []
    hint = f"Did you mean {close[0]}? " if close else ""
    raise UsageError(
        f"cannot plan for {what}: it is not in the catalog and no local config.json was found.",
        hint=f"{hint}Give a catalog model ('ftcloud models' lists them) or a local model directory with "
             "config.json (--model or --model-data).",
    )


def markdown_table() -> str:
    """The catalog table of docs/plan.md (a test keeps the two equal)."""
    lines = ["| model | parameters (active) | layers | hidden | heads / KV | vocab | context | license | techniques |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in CATALOG.values():
        c = m.parameter_counts()
        size = f"{c['total'] / 1e9:.2f}B" + (f" ({c['active'] / 1e9:.2f}B)" if m.is_moe else "")
        license_ = m.license + (", gated" if m.gated else "")
        lines.append(f"| `{m.name}` | {size} | {m.layers} | {m.hidden} | {m.heads} / {m.kv_heads} | {m.vocab} | "
                     f"{m.context} | {license_} | {', '.join(m.recommended)} |")
    return "\n".join(lines)
