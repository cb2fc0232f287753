"""Base model, tokenizer and technique: one function per concern, techniques as data.

| technique | base weights                  | trainable                       |
|-----------|-------------------------------|---------------------------------|
| full      | model dtype                   | everything                      |
| lora      | model dtype (or 4/8-bit)      | low-rank A, B per target module |
| qlora     | 4-bit NF4, double quantized   | LoRA A, B (compute in bf16/fp32)|
| dora      | model dtype (or 4-bit: QDoRA) | LoRA A, B + magnitude vectors   |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ftcloud_train.job import JobContext, UserError
from ftcloud_train.report import log


@dataclass
class Device:
    type: str  # "cuda" | "cpu"
    bf16: bool
    local_rank: int
    world_size: int

    @classmethod
    def detect(cls) -> Device:
        import torch

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if torch.cuda.is_available():
            return cls("cuda", torch.cuda.is_bf16_supported(), local_rank, world_size)
        return cls("cpu", False, local_rank, world_size)

    @property
    def is_main(self) -> bool:
        return int(os.environ.get("RANK", "0")) == 0


def resolve_precision(spec_precision: str, device: Device) -> str:
    """Mixed precision by device: bf16 where supported, fp16 on older GPUs, fp32 on CPU."""
    if spec_precision != "auto":
        return spec_precision
    if device.type == "cuda":
        return "bf16" if device.bf16 else "fp16"
    return "fp32"


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def resolve_model_source(ctx: JobContext) -> str:
    """The ``model`` channel wins (network-isolated jobs get the base model that way)."""
    channel = ctx.channel("model")
    if channel is not None:
        if (channel / "config.json").is_file():
            return str(channel)
        configs = sorted(channel.rglob("config.json"))
        if configs:
            return str(configs[0].parent)
        raise UserError(f"the 'model' channel ({channel}) has no config.json: upload a save_pretrained directory.")
    if ctx.spec.model:
        return ctx.spec.model
    raise UserError(
        "no base model: set the 'model' hyperparameter (a Hugging Face id or a path) or provide a 'model' channel."
    )


def resolve_hf_token(secret_arn: str) -> None:
    """Read a Hugging Face token from Secrets Manager into the process environment only."""
    if not secret_arn:
        return
    import boto3

    value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    token = value.strip()
    if token.startswith("{"):
        import json

        data = json.loads(token)
        token = data.get("HF_TOKEN") or data.get("token") or next(iter(data.values()))
    os.environ["HF_TOKEN"] = token  # never logged, never written


def load_tokenizer(source: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UserError(f"cannot load the tokenizer of model {source!r}: {exc}") from None
    if tokenizer.pad_token_id is None:
        # Padding with EOS would mask EOS out of the labels' attention only, not the labels:
        # labels are built from real tokens, so the model still learns to emit EOS.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def quantization_config(spec, compute_dtype):
    from transformers import BitsAndBytesConfig

    mode = spec.resolved_quantization
    if mode == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=spec.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=spec.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=compute_dtype,
        )
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_model(source: str, spec, device: Device, precision: str):
    """Load the base model (quantized when asked) and wrap it for the technique."""
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(precision)
    compute_dtype = torch_dtype(spec.compute_dtype if spec.compute_dtype != "auto" else precision)
    quant = quantization_config(spec, compute_dtype)
    kwargs = dict(dtype=dtype, trust_remote_code=spec.trust_remote_code)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["dtype"] = compute_dtype
        kwargs["device_map"] = {"": device.local_rank} if device.type == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model {source!r}: {exc}") from None
    model.config.use_cache = False  # caching is for generation; it conflicts with checkpointing

    grad_ckpt = spec.resolved_gradient_checkpointing
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=grad_ckpt,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif grad_ckpt:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if spec.is_adapter:
            model.enable_input_require_grads()

    dropout = spec.lora_dropout
    if is_moe(model.config):
        # Mixture of experts: train the router with its load-balancing loss so experts stay in use.
        model.config.output_router_logits = True
        if spec.is_adapter and dropout:
            # Experts are fused 3-D parameters in transformers 5; PEFT adapts them only without dropout.
            log(f"MoE model: lora_dropout {dropout} -> 0 (required for fused expert weights)")
            dropout = 0.0

    if spec.is_adapter:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=spec.lora_r,
            lora_alpha=spec.lora_alpha,
            lora_dropout=dropout,
            target_modules=spec.target_module_list,
            use_dora=spec.technique == "dora",
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            model = get_peft_model(model, config)
        except ValueError as exc:
            raise UserError(f"target_modules={spec.target_modules!r}: {exc}") from None
    return model


def is_moe(config) -> bool:
    return bool(getattr(config, "num_local_experts", 0) or getattr(config, "num_experts", 0))


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_merged(base_source: str, adapter_dir: Path, out_dir: Path, precision: str, trust_remote_code: bool) -> None:
    """Merge the adapter into a full-precision copy of the base (never into 4-bit weights)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        base_source, dtype=torch_dtype(precision), trust_remote_code=trust_remote_code
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
