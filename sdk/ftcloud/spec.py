"""The training specification: one typed, documented schema for every hyperparameter.

The same :class:`TrainingSpec` is produced by a YAML file, by CLI flags and by Python
keyword arguments; it travels to the container as SageMaker string hyperparameters
(:meth:`TrainingSpec.to_hyperparameters`), is parsed back there
(:meth:`TrainingSpec.from_mapping`), and is written next to every artifact as
``ftcloud_spec.json``.

Every field carries its documentation (``help``) and, where it has a closed set of
values, its ``choices``; validation errors name the field, the value and what is allowed.
Import-light: no torch, no boto3.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ftcloud.contract import ROW_FORMATS as _ROW_FORMATS  # what the loader reads (kept import-light)

TECHNIQUES = ("lora", "qlora", "dora", "full")
DATA_FORMATS = ("auto", *_ROW_FORMATS)
OVERLENGTH_POLICIES = ("truncate", "drop", "error")
BATCHING = ("auto", "padded", "length_grouped", "packed")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
OPTIMIZERS = ("auto", "adamw_torch", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "bf16_pure")
COMPUTE_DTYPES = ("auto", "fp32", "fp16", "bf16")
QUANT_TYPES = ("nf4", "fp4")
QUANTIZATION = ("auto", "none", "4bit", "8bit")
TRISTATE = ("auto", "true", "false")
TASKS = ("causal_lm", "classification")
CLASSIFICATION_LOSSES = ("cross_entropy", "focal")

#: Learning rates when ``learning_rate`` is not given. Full fine-tuning follows the seed
#: guide (2e-5); adapters train far fewer weights and need a larger step (QLoRA paper: 2e-4).
DEFAULT_LEARNING_RATE = {"full": 2e-5, "lora": 2e-4, "qlora": 2e-4, "dora": 2e-4}


class SpecError(ValueError):
    """A specification value is wrong. ``field`` names it, ``source`` says where it came from."""

    def __init__(self, message: str, field: str | None = None, source: str | None = None):
        self.field = field
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message}")


def _f(
    default: Any,
    help: str,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
    maximum: float | None = None,
):
    """A documented field. Bounds: ``minimum``/``maximum`` inclusive, ``above``/``below`` exclusive."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = choices
    for key, bound in (("minimum", minimum), ("above", above), ("below", below), ("maximum", maximum)):
        if bound is not None:
            meta[key] = bound
    return field(default=default, metadata=meta)


def bounds_problem(path: str, value: Any, meta: Mapping[str, Any]) -> str | None:
    """Why a number breaks its field's bounds (``None`` when it is fine); shared with ``ftcloud.job``.

    Every float must be finite: NaN passes every ``<`` comparison and would only fail mid-training.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"'{path}' must be a finite number; got {value!r}."
    low, low_open = (meta["above"], True) if "above" in meta else (meta.get("minimum"), False)
    high, high_open = (meta["below"], True) if "below" in meta else (meta.get("maximum"), False)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not (too_low or too_high):
        return None
    if high is None:
        allowed = f"{'>' if low_open else '>='} {low}"
    elif low is None:
        allowed = f"{'<' if high_open else '<='} {high}"
    else:
        allowed = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return f"'{path}' must be {allowed}; got {value!r}."


def matches_any(key: str, patterns: tuple[str, ...]) -> bool:
    """``key`` equals a pattern or matches its shell-style wildcard (``sagemaker_*``)."""
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


#: A Secrets Manager secret ARN (full, or partial without the 6-character suffix).
SECRET_ARN_RE = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$")


def secret_arn_problem(value: str, path: str) -> str | None:
    """Why ``value`` is not a Secrets Manager ARN (``None`` when it is), never echoing the value:
    a token pasted here would otherwise land in terminals, logs and CI output."""
    if not value or SECRET_ARN_RE.match(value):
        return None
    if value.startswith("hf_"):
        kind = "it looks like a Hugging Face token value; never pass the token itself"
    elif value.startswith("arn:"):
        service = value.split(":")[2] if value.count(":") >= 2 else ""
        if service == "secretsmanager":
            kind = "got a malformed Secrets Manager ARN"
        elif re.fullmatch(r"[a-z0-9-]{1,30}", service):
            kind = f"got an ARN of another service ('{service}')"
        else:
            kind = "got a malformed ARN"
    else:
        kind = f"got a {len(value)}-character value that is not an ARN (not shown: it may be a secret)"
    return (
        f"'{path}' must be the ARN of a Secrets Manager secret (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME); "
        f"{kind}. Store the token with 'aws secretsmanager create-secret --name hf-token --secret-string ...' "
        "and pass the ARN it prints."
    )


@dataclass
class TrainingSpec:
    """Everything the training entrypoint needs to know. Defaults follow the seed guide."""

    technique: str = _f("lora", "Fine-tuning technique.", TECHNIQUES)
    model: str = _f(
        "",
        "Base model: a Hugging Face id or a local path. Empty means the 'model' channel "
        "(required with network isolation).",
    )
    data_format: str = _f(
        "auto",
        "Row format of the data files: chat ('messages', or ShareGPT 'conversations'), alpaca "
        "('instruction'/'input'/'output'), prompt_completion ('prompt'/'completion'), text ('text') or "
        "classification ('text'/'label'). auto detects it from the rows' keys and refuses mixed formats.",
        DATA_FORMATS,
    )
    max_length: int = _f(1024, "Maximum tokens per sample (prompt + completion).", minimum=8)
    overlength: str = _f(
        "truncate",
        "What to do with samples longer than max_length: truncate them, drop them, or fail. "
        "The count of affected rows is always reported.",
        OVERLENGTH_POLICIES,
    )
    num_train_epochs: float = _f(3.0, "Passes over the training data.", minimum=0)
    max_steps: int = _f(-1, "Stop after this many optimizer steps (overrides epochs when > 0).")
    per_device_train_batch_size: int = _f(4, "Samples per device per micro-batch.", minimum=1)
    gradient_accumulation_steps: int = _f(8, "Micro-batches per optimizer step.", minimum=1)
    learning_rate: float | None = _f(
        None, "Peak learning rate. Default: 2e-5 for full fine-tuning, 2e-4 for adapters.", above=0
    )
    lr_scheduler_type: str = _f("cosine", "Learning-rate schedule after warm-up.", SCHEDULERS)
    warmup_ratio: float = _f(0.03, "Fraction of steps spent warming up the learning rate.", minimum=0, below=1)
    weight_decay: float = _f(0.0, "AdamW weight decay.", minimum=0)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables).", minimum=0)
    lora_r: int = _f(16, "LoRA rank.", minimum=1)
    lora_alpha: int = _f(32, "LoRA scaling numerator (scale = alpha / r).", minimum=1)
    lora_dropout: float = _f(0.05, "Dropout on the LoRA path.", minimum=0, below=1)
    target_modules: str = _f(
        "all-linear", "Modules that get adapters: 'all-linear' or a comma-separated list of names."
    )
    quantization: str = _f(
        "auto",
        "Load the frozen base quantized with bitsandbytes. auto: 4bit for qlora, none otherwise; "
        "4bit with dora gives QDoRA.",
        QUANTIZATION,
    )
    bnb_4bit_quant_type: str = _f("nf4", "4-bit quantization data type (QLoRA).", QUANT_TYPES)
    bnb_4bit_use_double_quant: bool = _f(True, "Quantize the quantization constants too (QLoRA).")
    compute_dtype: str = _f(
        "auto", "Compute dtype of quantized layers; auto: the precision's (bf16/fp16 on GPUs, fp32 on CPU).",
        COMPUTE_DTYPES,
    )
    optimizer: str = _f(
        "auto", "Optimizer. auto: paged_adamw_8bit for qlora, adamw_torch otherwise.", OPTIMIZERS
    )
    gradient_checkpointing: str = _f(
        "auto", "Recompute activations to save memory. auto: on for qlora and full.", TRISTATE
    )
    batching: str = _f(
        "auto",
        "How samples become batches: padded (random order), length_grouped (similar lengths "
        "together, least padding without special kernels), packed (documents concatenated with "
        "per-document attention; fastest with flash-attention). auto: packed on CUDA with "
        "flash-attention (flash-attn installed, Ampere or newer GPU, 16-bit precision; the image "
        "does not ship it), length_grouped elsewhere.",
        BATCHING,
    )
    completion_only_loss: bool = _f(
        True, "Compute the loss only on completion/assistant tokens (not on prompts)."
    )
    task: str = _f(
        "causal_lm",
        "What the model learns: causal_lm (generate text) or classification (rows of 'text' + 'label'; "
        "a sequence-classification head trained with the adapter, labels saved in labels.json).",
        TASKS,
    )
    class_weights: str = _f(
        "none",
        "classification: per-class loss weights. none, balanced (n_rows / (n_classes * n_class_rows)), "
        "or one weight per label: '1,9' in sorted label order or 'neg=1,pos=9'.",
    )
    loss: str = _f(
        "cross_entropy",
        "classification: cross_entropy, or focal (down-weights rows the model already gets right; "
        "see focal_gamma). Both take class_weights.",
        CLASSIFICATION_LOSSES,
    )
    focal_gamma: float = _f(2.0, "classification, loss=focal: focusing exponent (0 is cross-entropy).", minimum=0)
    validation_split: float = _f(
        0.1, "Fraction of training rows held out for evaluation when no validation channel is given.", minimum=0
    )
    seed: int = _f(42, "Random seed (data order, initialisation, held-out split).", minimum=0, maximum=2**32 - 1)
    save_steps: int = _f(100, "Checkpoint every N optimizer steps (0: only at the end and on SIGTERM).", minimum=0)
    save_total_limit: int = _f(2, "Complete checkpoints kept in the checkpoint directory.", minimum=1)
    logging_steps: int = _f(10, "Print a metric line every N optimizer steps.", minimum=1)
    eval_steps: int = _f(
        0,
        "Evaluate on the validation set every N optimizer steps and print eval_loss (0: only at the end). "
        "Tuning's early stopping and hyperband act on these lines.",
        minimum=0,
    )
    precision: str = _f(
        "auto",
        "Mixed precision: bf16/fp16 run matmuls in 16-bit autocast over fp32 master weights (fp16 with "
        "loss scaling; adapters keep the frozen base in 16-bit); auto picks bf16 on Ampere+ GPUs, fp16 "
        "on older ones (T4, V100), fp32 on CPU. bf16_pure: weights and updates in bf16, no fp32 copy "
        "(less memory; small updates round away).",
        PRECISIONS,
    )
    merge_adapter: bool = _f(
        False, "Also save the adapter merged into the base weights (model/merged) for plain serving."
    )
    hf_token_secret_arn: str = _f(
        "", "Secrets Manager ARN of a Hugging Face token for gated models (never pass the token itself)."
    )
    trust_remote_code: bool = _f(False, "Allow model code from the model repository to run.")

    # ------------------------------------------------------------------ derived
    @property
    def is_adapter(self) -> bool:
        return self.technique != "full"

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE[self.technique]

    @property
    def resolved_quantization(self) -> str:
        if self.quantization != "auto":
            return self.quantization
        return "4bit" if self.technique == "qlora" else "none"

    @property
    def resolved_optimizer(self) -> str:
        if self.optimizer != "auto":
            return self.optimizer
        return "paged_adamw_8bit" if self.technique == "qlora" else "adamw_torch"

    @property
    def resolved_gradient_checkpointing(self) -> bool:
        if self.gradient_checkpointing != "auto":
            return self.gradient_checkpointing == "true"
        return self.technique in ("qlora", "full")

    @property
    def target_module_list(self) -> str | list[str]:
        if self.target_modules.strip() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Name, type, default, choices and help of every field (for docs and ``--help``)."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in fields(cls):
            out.append(
                {
                    "name": f.name,
                    "type": _type_name(hints[f.name]),
                    "default": f.default if f.default is not MISSING else None,
                    "choices": list(f.metadata.get("choices", ())),
                    "help": f.metadata["help"],
                }
            )
        return out

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], source: str = "hyperparameters", ignore: tuple[str, ...] = ()
    ) -> TrainingSpec:
        """Build and validate a spec from strings (SageMaker) or native values (YAML, Python).

        Unknown keys raise :class:`SpecError` naming the key and the closest allowed one.
        Keys matching a pattern in ``ignore`` (shell-style: SageMaker's own ``sagemaker_*`` keys)
        are skipped.
        """
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            if matches_any(key, ignore):
                continue
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise SpecError(
                    f"unknown hyperparameter '{key}'.{hint} Allowed: {', '.join(sorted(known))}.",
                    field=key,
                    source=source,
                )
            kwargs[key] = _coerce(key, raw, hints[key], source)
        spec = cls(**kwargs)
        spec.validate(source)
        return spec

    def validate(self, source: str = "spec") -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            # Values set directly in Python skip from_mapping: check their types here too.
            if value is not None and not isinstance(value, str) and _base_type(hints[f.name]) is str:
                raise SpecError(f"'{f.name}' must be a string, got {value!r}.", f.name, source)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise SpecError(
                    f"'{f.name}' must be one of {', '.join(choices)}; got {value!r}.", f.name, source
                )
            problem = bounds_problem(f.name, value, f.metadata)
            if problem:
                raise SpecError(problem, f.name, source)
        if self.target_modules.strip() != "all-linear" and not all(
            m.strip() for m in self.target_modules.split(",")
        ):
            # PEFT would fail on (or silently match nothing with) an empty module name.
            raise SpecError(
                f"'target_modules' has an empty module name in {self.target_modules!r}: give 'all-linear' "
                "or names separated by single commas, e.g. q_proj,v_proj.",
                "target_modules",
                source,
            )
        problem = secret_arn_problem(self.hf_token_secret_arn, "hf_token_secret_arn")
        if problem:
            raise SpecError(problem, "hf_token_secret_arn", source)
        if self.validation_split >= 1:
            raise SpecError(
                f"'validation_split' must be below 1 (a fraction); got {self.validation_split}.",
                "validation_split",
                source,
            )
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise SpecError(
                "set 'num_train_epochs' > 0 or 'max_steps' > 0: nothing would be trained.",
                "num_train_epochs",
                source,
            )
        if self.technique == "qlora" and self.quantization not in ("auto", "4bit"):
            raise SpecError(
                f"'quantization' must be 4bit (or auto) for qlora; got {self.quantization!r}. "
                "Use technique 'lora' for an unquantized base.",
                "quantization",
                source,
            )
        if self.technique == "full" and self.resolved_quantization != "none":
            raise SpecError(
                "'quantization' cannot be used with technique 'full': quantized weights cannot be "
                "trained directly. Use qlora, or dora with quantization=4bit.",
                "quantization",
                source,
            )
        if self.technique == "full" and self.merge_adapter:
            raise SpecError("'merge_adapter' applies to adapter techniques, not 'full'.", "merge_adapter", source)
        self._validate_task(source)

    def _validate_task(self, source: str) -> None:
        """The classification knobs: meaningful only together with task=classification."""
        try:
            parse_class_weights(self.class_weights)
        except ValueError as exc:
            raise SpecError(f"'class_weights' {exc}", "class_weights", source) from None
        if self.task != "classification":
            for name, default in (("class_weights", "none"), ("loss", "cross_entropy")):
                if getattr(self, name) != default:
                    raise SpecError(
                        f"'{name}' applies to task=classification; this spec has task={self.task!r}. "
                        f"Set task: classification, or drop '{name}'.",
                        name,
                        source,
                    )
            return
        if self.batching == "packed":
            raise SpecError(
                "'batching' cannot be packed with task=classification: each row is classified on its own "
                "last token. Use auto, length_grouped or padded.",
                "batching",
                source,
            )
        if self.data_format not in ("auto", "classification"):
            raise SpecError(
                f"'data_format' must be auto or classification with task=classification (rows of 'text' "
                f"and 'label'); got {self.data_format!r}.",
                "data_format",
                source,
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_hyperparameters(self) -> dict[str, str]:
        """SageMaker HyperParameters: every value a string; unset optional values omitted."""
        out: dict[str, str] = {}
        for key, value in self.to_dict().items():
            if value is None:
                continue
            out[key] = _to_string(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ---------------------------------------------------------------------- helpers
def _base_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _type_name(hint: Any) -> str:
    base = _base_type(hint)
    name = getattr(base, "__name__", str(base))
    return f"{name} (optional)" if base is not hint else name


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(key: str, raw: Any, hint: Any, source: str) -> Any:
    base = _base_type(hint)
    optional = base is not hint
    if isinstance(raw, str):
        text = raw.strip()
        # SageMaker's own SDKs JSON-encode strings ("\"lora\""): accept both forms.
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        if optional and text.lower() in ("", "none", "null"):
            return None
        if base is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise SpecError(f"'{key}' must be true or false; got {raw!r}.", key, source)
        if base is int:
            try:
                return int(text)
            except ValueError:
                try:
                    as_float = float(text)
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
                raise SpecError(f"'{key}' must be a whole number; got {raw!r}.", key, source) from None
        if base is float:
            try:
                return float(text)
            except ValueError:
                raise SpecError(f"'{key}' must be a number; got {raw!r}.", key, source) from None
        return text
    if raw is None:
        if optional:
            return None
        raise SpecError(f"'{key}' cannot be empty.", key, source)
    if base is bool:
        if isinstance(raw, bool):
            return raw
        raise SpecError(f"'{key}' must be true or false; got {raw!r}.", key, source)
    if base is int:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or float(raw) != int(raw):
            raise SpecError(f"'{key}' must be a whole number; got {raw!r}.", key, source)
        return int(raw)
    if base is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise SpecError(f"'{key}' must be a number; got {raw!r}.", key, source)
        return float(raw)
    if base is str:
        if isinstance(raw, list | tuple) and key == "target_modules":
            return ",".join(str(x) for x in raw)
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, int | float):
            return str(raw)
        raise SpecError(f"'{key}' must be a string; got {raw!r}.", key, source)
    return raw


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_class_weights(text: str) -> str | list[float] | dict[str, float]:
    """``class_weights`` as data: ``"none"``, ``"balanced"``, a list (sorted label order) or a
    ``{label: weight}`` mapping. Raises ValueError saying what is wrong (the caller names the field)."""
    value = (text or "").strip()
    if value.lower() in ("none", "balanced"):
        return value.lower()
    items = [item.strip() for item in value.split(",")]
    if not value or not all(items):
        raise ValueError(
            f"has an empty entry in {text!r}: give none, balanced, '1,9' (sorted label order) or 'neg=1,pos=9'."
        )
    named = ["=" in item for item in items]
    if any(named) and not all(named):
        raise ValueError(f"mixes 'label=weight' and bare weights in {text!r}: use one form.")
    weights: dict[str, float] = {}
    for i, item in enumerate(items):
        label, _, number = item.rpartition("=") if all(named) else (str(i), "", item)
        label = label.strip()
        try:
            weight = float(number)
        except ValueError:
            raise ValueError(f"entry {item!r} is not a number (in {text!r}).") from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"entry {item!r} must be a positive finite number (in {text!r}).")
        if not label or label in weights:
            raise ValueError(f"entry {item!r} has an empty or repeated label (in {text!r}).")
        weights[label] = weight
    return weights if all(named) else list(weights.values())


def markdown_table() -> str:
    """The hyperparameter reference table of docs/container.md (a test keeps the two in sync)."""
    lines = ["| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
    for item in TrainingSpec.describe():
        default = "" if item["default"] in (None, "") else f"`{_to_string(item['default'])}`"
        choices = ", ".join(item["choices"])
        lines.append(f"| `{item['name']}` | {item['type']} | {default} | {choices} | {item['help']} |")
    return "\n".join(lines)
