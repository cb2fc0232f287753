"""Base model, tokenizer and technique: one function per concern, techniques as data.

| technique | base weights                  | trainable                       |
|-----------|-------------------------------|---------------------------------|
| full      | fp32 master copy (autocast)   | everything                      |
| lora      | 16-bit on GPUs (or 4/8-bit)   | low-rank A, B per target module |
| qlora     | 4-bit NF4, double quantized   | LoRA A, B (compute in bf16/fp16)|
| dora      | 16-bit (or 4-bit: QDoRA)      | LoRA A, B + magnitude vectors   |

Trainable weights are fp32 unless ``precision=bf16_pure`` (see :func:`precision_plan`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ftcloud_train.job import JobContext, UserError
from ftcloud_train.report import log

#: bf16 tensor cores and FlashAttention-2 start with Ampere (A10G, A100, L4, H100). T4 (7.5) and
#: V100 (7.0) only emulate bf16, slowly, although ``torch.cuda.is_bf16_supported()`` says True there.
BF16_MIN_CAPABILITY = (8, 0)
FLASH_ATTENTION_MIN_CAPABILITY = (8, 0)


@dataclass
class Device:
    type: str  # "cuda" | "cpu"
    bf16: bool
    local_rank: int
    world_size: int
    capability: tuple[int, int] | None = None  # CUDA compute capability (major, minor); None on CPU

    @classmethod
    def detect(cls) -> Device:
        import torch

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if torch.cuda.is_available():
            capability = tuple(torch.cuda.get_device_capability(local_rank % torch.cuda.device_count()))
            return cls("cuda", capability >= BF16_MIN_CAPABILITY, local_rank, world_size, capability)
        return cls("cpu", False, local_rank, world_size)

    @property
    def is_main(self) -> bool:
        return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class PrecisionPlan:
    """How one run uses floating point (dtype names: fp32, fp16, bf16). Made by :func:`precision_plan`."""

    precision: str  # the resolved spec value: fp32 | fp16 | bf16 | bf16_pure
    load_dtype: str  # dtype from_pretrained loads the (non-quantized) base weights in
    trainable_dtype: str  # dtype of the weights the optimizer updates (the master copy)
    autocast_dtype: str | None  # matmuls run under torch.autocast in this dtype; None: no autocast
    grad_scaler: bool  # dynamic loss scaling, so fp16 gradients do not underflow
    quant_compute_dtype: str  # bitsandbytes compute (and storage) dtype of quantized layers

    @property
    def compute_dtype(self) -> str:
        """The dtype matmuls (and attention) really run in."""
        return self.autocast_dtype or self.load_dtype

    # The Trainer's flags: bf16=True is bf16 autocast; fp16=True is fp16 autocast plus a GradScaler,
    # which can only unscale fp32 gradients, hence fp32 trainable weights in that case.
    @property
    def trainer_bf16(self) -> bool:
        return self.autocast_dtype == "bf16"

    @property
    def trainer_fp16(self) -> bool:
        return self.autocast_dtype == "fp16"


def precision_plan(
    cuda_capability: tuple[int, int] | None,
    technique: str,
    precision: str,
    quantization: str = "none",
    compute_dtype: str = "auto",
) -> PrecisionPlan:
    """Decide dtypes for a device (``cuda_capability`` None: CPU), a technique and the spec's precision.

    Default (``bf16``/``fp16``, what ``auto`` picks on GPUs): fp32 master weights for everything the
    optimizer updates, 16-bit autocast for the matmuls, a loss scaler for fp16. Full fine-tuning
    therefore loads the base in fp32; adapters keep the frozen base in 16-bit (half the memory) and
    only their own weights in fp32. ``bf16_pure`` is the explicit opt-out: weights and optimizer
    updates in bf16, no master copy (less memory, but updates smaller than bf16's resolution of
    ~0.4% of a weight round away).
    """
    on_cpu = cuda_capability is None
    bf16_ok = on_cpu or tuple(cuda_capability) >= BF16_MIN_CAPABILITY  # CPU autocast runs bf16
    where = "CPU" if on_cpu else f"a GPU of compute capability {cuda_capability[0]}.{cuda_capability[1]}"
    if precision == "auto":
        precision = "fp32" if on_cpu else ("bf16" if bf16_ok else "fp16")
    for field, value in (("precision", precision), ("compute_dtype", compute_dtype)):
        if not bf16_ok and value in ("bf16", "bf16_pure"):
            raise UserError(
                f"{field}={value} needs a GPU with native bf16 (compute capability 8.0+: A10G, L4, A100, H100); "
                f"this job runs on {where} (T4/V100 class). Use {field}=fp16 or auto."
            )
    if on_cpu and precision == "fp16":
        raise UserError(
            "precision=fp16 needs a CUDA GPU (fp16 autocast with a gradient scaler); on CPU use precision=auto (fp32) or bf16."
        )
    if precision == "fp32":
        load, trainable, autocast = "fp32", "fp32", None
    elif precision == "bf16_pure":
        load, trainable, autocast = "bf16", "bf16", None
    elif precision in ("bf16", "fp16"):
        # full: the base *is* what trains, so it is the fp32 master copy; adapters: the base is frozen.
        load = "fp32" if technique == "full" else precision
        trainable, autocast = "fp32", precision
    else:
        raise UserError(f"precision={precision!r}: use auto, fp32, fp16, bf16 or bf16_pure.")
    quant_compute = compute_dtype if compute_dtype != "auto" else (autocast or load)
    if quantization in ("4bit", "8bit"):
        load = quant_compute  # the layers left unquantized (embeddings, norms, head)
    return PrecisionPlan(precision, load, trainable, autocast, autocast == "fp16", quant_compute)


def attention_implementation(
    cuda_capability: tuple[int, int] | None, flash_attn_installed: bool, compute_dtype: str
) -> str:
    """The attention kernel passed to ``from_pretrained(attn_implementation=...)``.

    FlashAttention-2 needs the ``flash-attn`` package, an Ampere or newer GPU and 16-bit compute;
    it runs packed rows as variable-length attention. Everywhere else SDPA (PyTorch's fused
    kernels, memory-efficient on GPUs). ``eager`` is only a fallback for models without SDPA
    support (see :func:`load_model`).
    """
    if (
        cuda_capability is not None
        and flash_attn_installed
        and tuple(cuda_capability) >= FLASH_ATTENTION_MIN_CAPABILITY
        and compute_dtype in ("bf16", "fp16")
    ):
        return "flash_attention_2"
    return "sdpa"


def flash_attention_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


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


#: Secrets Manager answers in well under a second; without these, an unreachable endpoint (an
#: isolated container, a VPC without NAT or endpoint) hangs for minutes in botocore's retries.
SECRETS_CONNECT_TIMEOUT_S = 5
SECRETS_READ_TIMEOUT_S = 10


def resolve_hf_token(secret_arn: str, model_channel: Path | None = None) -> bool:
    """Read a Hugging Face token from Secrets Manager into the process environment only.

    Returns whether a token was set. With a ``model`` channel the weights are already on disk
    and nothing is downloaded, so no call goes out: a network-isolated container must never
    try one (it would only time out).
    """
    if not secret_arn:
        return False
    if model_channel is not None:
        log("hf_token_secret_arn is not used: the base model comes from the 'model' channel (no download).")
        return False
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    config = Config(
        connect_timeout=SECRETS_CONNECT_TIMEOUT_S,
        read_timeout=SECRETS_READ_TIMEOUT_S,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    try:
        value = boto3.client("secretsmanager", config=config).get_secret_value(SecretId=secret_arn)["SecretString"]
    except (BotoCoreError, ClientError) as exc:
        raise UserError(
            f"cannot read the Hugging Face token from Secrets Manager (hyperparameter hf_token_secret_arn): {exc}. "
            "With network isolation the container has no network: pass the base model as the 'model' channel "
            "and drop hf_token_secret_arn. Otherwise check that the execution role may call "
            "secretsmanager:GetSecretValue on it and that the job's subnets reach Secrets Manager "
            "(NAT gateway or VPC endpoint)."
        ) from None
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
    # A classification head is new and trained in full: it must stay a plain (unquantized) layer.
    skip = list(CLASSIFIER_HEADS) if spec.task == "classification" else None
    if mode == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            llm_int8_skip_modules=skip,
            bnb_4bit_quant_type=spec.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=spec.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=compute_dtype,
        )
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return None


#: Names of the sequence-classification heads across architectures (PEFT's SEQ_CLS trains them in full).
CLASSIFIER_HEADS = ("score", "classifier")


def auto_model_class(task: str):
    """The transformers Auto class that loads a base model for ``task``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM


def load_model(source: str, spec, device: Device, plan: PrecisionPlan | str, attention: str = "sdpa",
               labels: list[str] | None = None, pad_token_id: int | None = None):
    """Load the base model (quantized when asked) and wrap it for the technique.

    ``plan`` says the dtypes (a precision name is turned into a plan for ``device``); ``attention``
    is the kernel from :func:`attention_implementation`. With ``task=classification``, ``labels``
    (the label names, in id order) size a new classification head, and ``pad_token_id`` tells it
    where each row's last real token is.
    """
    from transformers import set_seed

    auto_class = auto_model_class(spec.task)

    if isinstance(plan, str):
        plan = precision_plan(
            device.capability, spec.technique, plan, spec.resolved_quantization, spec.compute_dtype
        )
    # Before anything random is created: the adapters' initial weights follow the job's seed.
    set_seed(spec.seed)
    quant = quantization_config(spec, torch_dtype(plan.quant_compute_dtype))
    kwargs = dict(dtype=torch_dtype(plan.load_dtype), trust_remote_code=spec.trust_remote_code)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device.local_rank} if device.type == "cuda" else {"": "cpu"}
    if spec.task == "classification":
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            pad_token_id=pad_token_id,
        )
    try:
        try:
            model = auto_class.from_pretrained(source, attn_implementation=attention, **kwargs)
        except (ValueError, ImportError) as exc:
            if attention != "flash_attention_2":
                raise
            # An architecture without FlashAttention-2 support (ValueError), or a flash-attn build that
            # does not import (ImportError: built for another torch/CUDA), still trains with SDPA.
            log(f"{source}: flash_attention_2 unavailable ({str(exc)[:200]}); using sdpa")
            model = auto_class.from_pretrained(source, attn_implementation="sdpa", **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model {source!r}: {exc}") from None
    model.config.use_cache = False  # caching is for generation; it conflicts with checkpointing

    grad_ckpt = spec.resolved_gradient_checkpointing
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        # Checkpointing is switched on below under transformers 5's name: peft's helper would call the
        # deprecated gradient_checkpointing_enable alias (a FutureWarning in every QLoRA log).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if grad_ckpt:
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
            task_type="SEQ_CLS" if spec.task == "classification" else "CAUSAL_LM",
        )
        try:
            model = get_peft_model(model, config)
        except ValueError as exc:
            raise UserError(f"target_modules={spec.target_modules!r}: {exc}") from None
    # What the optimizer updates is the master copy: fp32 unless bf16_pure (PEFT and k-bit
    # preparation already upcast most of it; this makes it true for every technique).
    trainable_dtype = torch_dtype(plan.trainable_dtype)
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != trainable_dtype:
            param.data = param.data.to(trainable_dtype)
    return model


def merge_eos_token_ids(model_eos: int | list[int] | None, tokenizer_eos: int | None) -> int | list[int] | None:
    """The model's EOS ids (Llama 3 lists several: end of text, end of turn) plus the tokenizer's."""
    ids = [] if model_eos is None else [model_eos] if isinstance(model_eos, int) else list(model_eos)
    if tokenizer_eos is not None and tokenizer_eos not in ids:
        ids.append(tokenizer_eos)
    return ids[0] if len(ids) == 1 else (ids or None)


def is_moe(config) -> bool:
    return bool(getattr(config, "num_local_experts", 0) or getattr(config, "num_experts", 0))


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_merged(base_source: str, adapter_dir: Path, out_dir: Path, dtype: str, trust_remote_code: bool,
                labels: list[str] | None = None, pad_token_id: int | None = None) -> None:
    """Merge the adapter into an unquantized copy of the base in ``dtype`` (never into 4-bit weights).

    ``labels``: a classification adapter's label names; its trained head is restored on top."""
    from peft import PeftModel

    head = {} if labels is None else dict(
        num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, pad_token_id=pad_token_id,
    )
    base = auto_model_class("classification" if labels is not None else "causal_lm").from_pretrained(
        base_source, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, **head
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
