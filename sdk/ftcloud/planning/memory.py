"""Peak training memory per GPU, component by component, for lora / qlora / dora / full.

The estimate reads the same resolved facts as training (``TrainingSpec.resolved_*``) and the dtype
decision of the container itself (:func:`dtypes` calls ``ftcloud_train.modeling.precision_plan``). Formulas and their sources: docs/plan.md. In short, per GPU:

* weights: quantized decoder matrices at 4.5 bits (NF4, block 64, fp32 absmax) or ~4.13 bits with
  double quantization (8-bit absmax + fp32 per 256 blocks), 8 bits for LLM.int8; the rest
  (embeddings, head, norms) in the load dtype;
* trainable tensors: LoRA A (r x in) and B (out x r) per targeted module, DoRA adds a magnitude
  vector (out); full fine-tuning trains every tensor;
* gradients: one per trainable element in the trainable dtype;
* optimizer: AdamW keeps two states (fp32: 8 B/element); bitsandbytes 8-bit AdamW 2 B/element plus
  fp32 absmax per 256, but only for tensors of >= 4096 elements (smaller ones stay 32-bit);
* activations saved for backward, per token: see :func:`activation_bytes`;
* overhead on a GPU: CUDA context and workspaces (1 GiB) plus 10% allocator fragmentation.

With ``sharding="fsdp"`` weights, gradients and optimizer states are divided by the GPU count
(ZeRO-3 / FSDP full shard); with ``"ddp"`` (what the container runs) every GPU holds all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftcloud.planning.catalog import ATTENTION_MODULES, MLP_MODULES, ModelArch

GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
CUDA_OVERHEAD_BYTES = 1 * GIB  # context + cuBLAS/NCCL workspaces: outside max_memory_allocated
FRAGMENTATION = 0.10  # reserved over allocated in PyTorch's caching allocator, typical
NF4_BLOCK = 64  # bitsandbytes 4-bit block size (QLoRA paper)
DQ_BLOCK = 256  # double quantization: absmax values quantized to 8 bit in blocks of 256
BNB_OPTIM_MIN_8BIT = 4096  # bitsandbytes keeps 32-bit state for tensors smaller than this
BNB_OPTIM_BLOCK = 256


#: A compute capability standing for each kind of device the instance table knows.
_CAPABILITY = {None: None, False: (7, 5), True: (8, 0)}  # CPU, pre-Ampere (T4, V100), Ampere or newer


def dtypes(technique: str, precision: str, quantization: str, gpu_bf16: bool | None,
           compute_dtype: str = "auto") -> dict[str, str | None]:
    """The container's own dtype decision (``ftcloud_train.modeling.precision_plan``, torch-free) for
    a device: ``gpu_bf16`` None = CPU, False = a pre-Ampere GPU, True = Ampere or newer.

    Returns ``load`` (frozen / unquantized weights), ``trainable`` (master copy), ``autocast``
    (None: none) and ``unsupported``: why the container would refuse the job on that device (e.g.
    bf16 on a T4), else None; the sizes are then those of ``precision=auto``."""
    from ftcloud_train.job import UserError
    from ftcloud_train.modeling import precision_plan

    capability = _CAPABILITY[gpu_bf16]
    try:
        plan, unsupported = precision_plan(capability, technique, precision, quantization, compute_dtype), None
    except UserError as exc:
        plan, unsupported = precision_plan(capability, technique, "auto", quantization, "auto"), str(exc)
    return {"precision": plan.precision, "load": plan.load_dtype, "trainable": plan.trainable_dtype,
            "autocast": plan.autocast_dtype, "unsupported": unsupported}


@dataclass
class MemoryInputs:
    """What memory depends on, taken from a TrainingSpec by :meth:`from_spec`."""

    technique: str = "lora"
    quantization: str = "none"  # resolved: none | 4bit | 8bit
    double_quant: bool = True
    lora_r: int = 16
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    optimizer: str = "adamw_torch"  # resolved
    gradient_checkpointing: bool = False  # resolved
    seq_len: int = 1024
    micro_batch: int = 4
    precision: str = "auto"
    compute_dtype: str = "auto"
    gpu_bf16: bool | None = True  # None: CPU
    gpus: int = 1  # data-parallel GPUs in all
    sharding: str = "ddp"  # ddp | fsdp

    @classmethod
    def from_spec(cls, spec: Any, *, gpu_bf16: bool | None = True, gpus: int = 1, sharding: str = "ddp",
                  **changes: Any) -> MemoryInputs:
        values = dict(
            technique=spec.technique, quantization=spec.resolved_quantization,
            double_quant=spec.bnb_4bit_use_double_quant, lora_r=spec.lora_r, lora_dropout=spec.lora_dropout,
            target_modules=spec.target_module_list, optimizer=spec.resolved_optimizer,
            gradient_checkpointing=spec.resolved_gradient_checkpointing, seq_len=spec.max_length,
            micro_batch=spec.per_device_train_batch_size, precision=spec.precision, compute_dtype=spec.compute_dtype,
            gpu_bf16=gpu_bf16, gpus=gpus, sharding=sharding,
        )  # fmt: skip
        values.update(changes)
        return cls(**values)


@dataclass
class MemoryEstimate:
    """Bytes per GPU by component; ``total`` includes overhead, ``tensors`` does not."""

    components: dict[str, int]
    trainable_parameters: int
    total_parameters: int
    dtypes: dict[str, str | None]
    notes: list[str] = field(default_factory=list)

    @property
    def unsupported(self) -> str | None:
        """Why the container would refuse this job on the device (its precision), else None."""
        return self.dtypes.get("unsupported")

    @property
    def tensors(self) -> int:
        return sum(v for k, v in self.components.items() if k != "overhead")

    @property
    def total(self) -> int:
        return sum(self.components.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "components_gib": {k: round(v / GIB, 3) for k, v in self.components.items()},
            "tensors_gib": round(self.tensors / GIB, 3),
            "total_gib": round(self.total / GIB, 3),
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "dtypes": self.dtypes,
            "notes": list(self.notes),
        }


_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def targeted_modules(arch: ModelArch, target_modules: str | list[str]) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """(in, out) of each adapted projection of one layer, and the names that match nothing."""
    shapes = arch.module_shapes()
    if target_modules == "all-linear":
        return shapes, []
    chosen: dict[str, tuple[int, int]] = {}
    unknown = []
    for name in target_modules:
        if name in shapes:
            chosen[name] = shapes[name]
        elif name in _FUSED:  # Phi-3: one matrix producing several projections
            parts = _FUSED[name]
            chosen[name] = (shapes[parts[0]][0], sum(shapes[p][1] for p in parts))
        else:
            unknown.append(name)
    return chosen, unknown


def trainable_tensors(arch: ModelArch, inputs: MemoryInputs) -> tuple[list[int], list[str]]:
    """Element counts of every trainable tensor (the optimizer's view), and notes."""
    counts = arch.parameter_counts()
    notes: list[str] = []
    if inputs.technique == "full":
        per_layer = [a * b for a, b in arch.module_shapes().values()]
        if arch.is_moe:
            mlp = [a * b for n, (a, b) in arch.module_shapes().items() if n in MLP_MODULES]
            per_layer = [a * b for n, (a, b) in arch.module_shapes().items() if n in ATTENTION_MODULES]
            per_layer += [m * arch.experts for m in mlp] + [arch.hidden * arch.experts]
        per_layer += [arch.hidden, arch.hidden]
        tensors = [counts["embeddings"]] + per_layer * arch.layers + [arch.hidden]
        if counts["head"]:
            tensors.append(counts["head"])
        return tensors, notes
    modules, unknown = targeted_modules(arch, inputs.target_modules)
    if unknown:
        notes.append(f"target_modules {', '.join(unknown)} match no projection the planner knows; counted as none.")
    tensors = []
    r, e = inputs.lora_r, arch.experts
    for name, (fan_in, fan_out) in modules.items():
        if arch.is_moe and name in MLP_MODULES:
            continue  # fused expert weights: below
        tensors += [r * fan_in, fan_out * r] + ([fan_out] if inputs.technique == "dora" else [])
    if arch.is_moe and any(n in modules for n in MLP_MODULES):
        # transformers 5 fuses each layer's experts into 3-D parameters (gate_up_proj, down_proj);
        # PEFT 0.21 gives each one LoRA pair over all experts, rank r*E (2r*E for gate_up), and
        # all-linear also adapts the router (h -> E). Shapes as PEFT builds them on the tiny Mixtral.
        h, i = arch.hidden, arch.intermediate
        tensors += [2 * r * e * h, 2 * i * 2 * r * e, r * e * i, h * r * e]
        if inputs.target_modules == "all-linear":
            tensors += [r * h, e * r]
    return tensors * arch.layers, notes


def weight_bytes(arch: ModelArch, inputs: MemoryInputs, dt: dict[str, str | None]) -> int:
    counts = arch.parameter_counts()
    load = DTYPE_BYTES[dt["load"]]
    rest = counts["total"] - counts["block_linear"]
    if inputs.quantization == "4bit":
        absmax = (1 / NF4_BLOCK + 4 / (NF4_BLOCK * DQ_BLOCK)) if inputs.double_quant else 4 / NF4_BLOCK
        return int(counts["block_linear"] * (0.5 + absmax) + rest * load)
    if inputs.quantization == "8bit":
        return int(counts["block_linear"] * 1 + rest * load)
    return counts["total"] * load


def optimizer_bytes(tensors: list[int], optimizer: str, trainable_bytes: int) -> int:
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        total = 0
        for n in tensors:
            total += 2 * n + 2 * 4 * -(-n // BNB_OPTIM_BLOCK) if n >= BNB_OPTIM_MIN_8BIT else 2 * 4 * n
        return total
    if optimizer == "paged_adamw_32bit":
        return sum(2 * 4 * n for n in tensors)
    return sum(2 * trainable_bytes * n for n in tensors)  # torch AdamW: states in the parameter's dtype


def activation_bytes(arch: ModelArch, inputs: MemoryInputs, dt: dict[str, str | None]) -> dict[str, int]:
    """Activation memory of one micro-batch: ``activations`` (saved for backward at the end of the
    forward pass), ``recompute`` (gradient checkpointing: one layer rebuilt during backward) and
    ``logits`` (transient copies at the loss).

    Per token and layer (SDPA / flash attention: no seq x seq scores are kept), in the compute
    dtype ``a``: 7h + 2kv + 4 I_active for full fine-tuning (norm outputs, q, rotated k and v,
    attention output, projection inputs; MLP gate, up, activation, product), 4h + 2kv + 4 I_active
    for adapters (a frozen projection keeps no input: it gets no weight gradient), plus one fp32
    tensor per RMSNorm (2 x h x 4 B). Adapters add, per targeted module, the dropout output and its mask (in x (a+1))
    when lora_dropout > 0 and the rank-r intermediate; DoRA also keeps the base and adapter outputs
    (2 x out). Gradient checkpointing keeps only each layer's input (h, residual dtype). The loss
    keeps the fp32 log-softmax (V x 4 B per token); next to it live the logits in the compute
    dtype and, in 16-bit runs, their fp32 upcast.
    """
    a = DTYPE_BYTES[dt["autocast"] or dt["load"]]
    residual = DTYPE_BYTES[dt["load"]] if inputs.quantization == "none" else a
    h, kv, i = arch.hidden, arch.kv_dim, arch.intermediate
    active_experts = arch.experts_per_token if arch.is_moe else 1
    # Frozen projections do not keep their inputs (no weight gradient), hence fewer h-wide tensors.
    h_wide = 7 if inputs.technique == "full" else 4
    layer = a * (h_wide * h + 2 * kv + 4 * i * active_experts) + 2 * h * 4
    if arch.is_moe:
        layer += 4 * arch.experts + a * h * active_experts  # router logits (fp32), tokens gathered per expert
    if inputs.technique != "full":
        modules, _ = targeted_modules(arch, inputs.target_modules)
        for name, (fan_in, fan_out) in modules.items():
            copies = active_experts if (arch.is_moe and name in MLP_MODULES) else 1
            extra = a * inputs.lora_r
            if inputs.lora_dropout > 0 and not arch.is_moe:  # MoE: the container sets dropout 0
                extra += fan_in * (a + 1)
            if inputs.technique == "dora":
                extra += 2 * a * fan_out
            layer += extra * copies
    tokens = inputs.seq_len * inputs.micro_batch
    outside = tokens * (h * residual + 2 * h * 4 + arch.vocab * 4)  # embeddings, final norm, log-softmax
    if inputs.gradient_checkpointing:
        saved, recompute = tokens * arch.layers * h * residual + outside, tokens * layer
    else:
        saved, recompute = tokens * arch.layers * layer + outside, 0
    logits = tokens * arch.vocab * (a + (4 if a < 4 else 0))
    return {"activations": saved, "recompute": recompute, "logits": logits}


def estimate_memory(arch: ModelArch, inputs: MemoryInputs) -> MemoryEstimate:
    """Peak memory per GPU for training ``arch`` with ``inputs``."""
    dt = dtypes(inputs.technique, inputs.precision, inputs.quantization, inputs.gpu_bf16, inputs.compute_dtype)
    trainable_bytes = DTYPE_BYTES[dt["trainable"]]
    tensors, notes = trainable_tensors(arch, inputs)
    trainable = sum(tensors)
    shard = inputs.gpus if inputs.sharding == "fsdp" else 1
    weights = weight_bytes(arch, inputs, dt)
    if inputs.technique != "full":
        weights += trainable * trainable_bytes  # the adapters themselves
    components = {
        "weights": weights // shard,
        "gradients": trainable * trainable_bytes // shard,
        "optimizer": optimizer_bytes(tensors, inputs.optimizer, trainable_bytes) // shard,
    }
    if dt["autocast"]:
        # autocast caches a 16-bit copy of each trainable matrix for the whole forward pass
        components["autocast_copies"] = trainable * DTYPE_BYTES[dt["autocast"]] // shard
    components.update({k: v for k, v in activation_bytes(arch, inputs, dt).items() if v})
    if inputs.technique == "dora":
        # DoRA's weight norm needs W + BA of one module at a time (dequantized, in fp32): transient
        biggest = max((a * b for a, b in targeted_modules(arch, inputs.target_modules)[0].values()), default=0)
        components["dora_norm"] = 2 * 4 * biggest
    if inputs.gpu_bf16 is not None:
        components["overhead"] = CUDA_OVERHEAD_BYTES + int(FRAGMENTATION * sum(components.values()))
    if inputs.optimizer.startswith("paged") and inputs.gpu_bf16 is not None:
        notes.append("Paged optimizer: its states can spill to CPU memory under pressure; counted on the GPU here.")
    return MemoryEstimate(components, trainable, arch.parameter_counts()["total"], dt, notes)
