"""The plan of one job: memory per GPU, the instance that fits for the least money, alternatives.

:func:`make_plan` reads a validated :class:`~ftcloud.job.JobSpec` (the same spec ``launch``
builds) and answers: does it fit the chosen instance; if not (or if none was chosen, i.e.
``compute.instance_type: auto``) which instance is the cheapest that fits with headroom; what to
change to make it fit (QLoRA instead of LoRA, gradient checkpointing, a smaller micro-batch,
shorter sequences); and how long and how much (an estimate). ``Client.launch`` runs it first on
the SageMaker backend and refuses a job that will not fit unless ``force``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcloud.errors import UsageError
from ftcloud.planning.catalog import ModelArch, resolve_model
from ftcloud.planning.instances import GIB, INSTANCES, PRICE_DATE, PRICE_REGION, Instance, instance
from ftcloud.planning.memory import MemoryEstimate, MemoryInputs, estimate_memory
from ftcloud.planning.throughput import TimeCost, time_and_cost

AUTO = "auto"
HEADROOM = 0.05  # keep 5% of GPU memory free beyond the estimate's own overhead
CHARS_PER_TOKEN = 4.0  # rule of thumb for English BPE text, used only to size local data for the ETA


class PlanError(UsageError):
    """The job will not fit (or no instance fits). ``plan`` holds the full :class:`Plan`."""

    def __init__(self, message: str, plan: Plan, hint: str | None = None):
        self.plan = plan
        super().__init__(message, hint=hint)


@dataclass
class Fit:
    """One instance type evaluated for the job."""

    instance: Instance
    count: int
    memory: MemoryEstimate
    time: TimeCost

    @property
    def usable_bytes(self) -> float:
        return self.instance.gpu_memory_gib * GIB * (1 - HEADROOM)

    @property
    def fits(self) -> bool:
        return self.memory.unsupported is None and self.memory.total <= self.usable_bytes

    def hourly(self, spot: bool) -> float:
        per_hour = self.instance.price_per_hour * self.count
        return per_hour * (1 - self.instance.spot_discount) if spot else per_hour

    def cost(self, spot: bool) -> float:
        """USD for the job when its length is known, else per hour."""
        paid = self.time.spot_usd if spot else self.time.on_demand_usd
        return paid if paid is not None else self.hourly(spot)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance.type,
            "instance_count": self.count,
            "gpu": f"{self.instance.gpus}x {self.instance.gpu} {self.instance.gpu_memory_gib:g} GiB",
            "fits": self.fits,
            "memory_per_gpu_gib": round(self.memory.total / GIB, 2),
            "usable_gib": round(self.usable_bytes / GIB, 2),
            "price_per_hour": self.instance.price_per_hour,
            **{k: v for k, v in self.time.to_dict().items() if k not in ("price_region", "price_date")},
        }


@dataclass
class Alternative:
    change: str  # what to pass, e.g. "--technique qlora"
    settings: dict[str, Any]  # flat spec keys
    fit: Fit

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "settings": self.settings, **self.fit.to_dict()}


@dataclass
class Plan:
    model: ModelArch
    technique: str
    spot: bool
    chosen: Fit | None  # None when the instance type is auto
    recommended: Fit | None  # cheapest that fits
    options: list[Fit]  # every table instance that fits, cheapest first
    alternatives: list[Alternative]
    tokens_note: str
    notes: list[str] = field(default_factory=list)
    largest: Fit | None = None  # when nothing fits: the estimate on the GPU with the most memory

    @property
    def fits(self) -> bool:
        return self.chosen.fits if self.chosen is not None else self.recommended is not None

    @property
    def memory(self) -> MemoryEstimate | None:
        fit = self.chosen or self.recommended or self.largest
        return fit.memory if fit else None

    def to_dict(self) -> dict[str, Any]:
        counts = self.model.parameter_counts()
        return {
            "model": self.model.name,
            "parameters": counts["total"],
            "active_parameters": counts["active"],
            "technique": self.technique,
            "fits": self.fits,
            "memory": self.memory.to_dict() if self.memory else None,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "recommended": self.recommended.to_dict() if self.recommended else None,
            "options": [f.to_dict() for f in self.options],
            "alternatives": [a.to_dict() for a in self.alternatives],
            "spot": self.spot,
            "tokens_note": self.tokens_note,
            "prices": {"region": PRICE_REGION, "date": PRICE_DATE, "estimate": True},
            "notes": list(self.notes),
        }

    def problem(self) -> str:
        """Why the job does not fit, with the suggestions (for errors and the CLI)."""
        mem = self.memory
        parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in (mem.components.items() if mem else ()) if v >= 0.05 * GIB)
        if self.chosen is not None and self.chosen.memory.unsupported:
            c = self.chosen
            head = f"{c.instance.type} ({c.instance.gpu}) cannot run this job: {c.memory.unsupported}"
        elif self.chosen is not None:
            c = self.chosen
            head = (f"{self.model.name} with {self.technique} needs about {c.memory.total / GIB:.1f} GiB per GPU "
                    f"({parts} GiB) but {c.instance.type} has {c.instance.gpus}x {c.instance.gpu} with "
                    f"{c.instance.gpu_memory_gib:g} GiB ({c.usable_bytes / GIB:.1f} usable): it would run out of memory.")
        else:
            big = self.largest
            head = f"no instance type in the planner's table fits {self.model.name} with {self.technique}"
            head += (f": it needs about {big.memory.total / GIB:.1f} GiB per GPU ({parts} GiB), the largest GPU "
                     f"({big.instance.gpu}) has {big.instance.gpu_memory_gib:g} GiB." if big else ".")
        return head + self.suggestions()

    def suggestions(self) -> str:
        lines = []
        if self.recommended is not None and (self.chosen is None or self.recommended.instance != self.chosen.instance):
            r = self.recommended
            lines.append(f"--instance-type {r.instance.type} ({r.instance.gpus}x {r.instance.gpu} "
                         f"{r.instance.gpu_memory_gib:g} GiB: needs {r.memory.total / GIB:.1f} GiB)")
        lines += [f"{a.change} ({a.fit.memory.total / GIB:.1f} GiB on {a.fit.instance.type})"
                  for a in self.alternatives]
        return (" Options: " + "; ".join(lines) + ".") if lines else ""


# ---------------------------------------------------------------------- building
def dataset_tokens(job: Any, override: int | None = None) -> tuple[Any, str]:
    """A function gpus -> training tokens (all epochs), or None; and where the figure came from."""
    t = job.training
    if t.max_steps > 0:
        per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * t.max_length
        return (lambda gpus: t.max_steps * per_step * gpus), f"max_steps {t.max_steps} x full micro-batches (upper bound)"
    if override is not None:
        return (lambda gpus: int(override * t.num_train_epochs)), f"{override} dataset tokens x {t.num_train_epochs:g} epochs"
    train = job.data.train
    if not train or train.startswith("s3://"):
        return None, "training data is not local: pass --dataset-tokens N for time and cost"
    path = Path(train).expanduser()
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        return None, f"{train}: no JSONL files found, so no time and cost (pass --dataset-tokens N)"
    tokens = rows = 0
    for file in files:
        with file.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rows += 1
                    tokens += min(t.max_length, int(len(line) / CHARS_PER_TOKEN) + 1)
    kept = 1.0 if job.data.validation else 1.0 - t.validation_split
    total = int(tokens * kept * t.num_train_epochs)
    note = (f"{rows} rows, about {tokens} tokens ({CHARS_PER_TOKEN:g} characters per token, at most max_length each)"
            f" x {kept:g} kept for training x {t.num_train_epochs:g} epochs")
    return (lambda gpus: total), note


def _fit(arch: ModelArch, training: Any, row: Instance, count: int, tokens_for: Any) -> Fit:
    gpus = row.gpus * count
    inputs = MemoryInputs.from_spec(training, gpu_bf16=row.gpu_spec.bf16, gpus=gpus)
    memory = estimate_memory(arch, inputs)
    time = time_and_cost(arch, training.technique, training.max_length, training.resolved_gradient_checkpointing,
                         row, count, tokens_for(gpus) if tokens_for else None)
    return Fit(row, count, memory, time)


def _alternatives(arch: ModelArch, training: Any, chosen: Fit | None, candidates: list[Instance],
                  tokens_for: Any, spot: bool) -> list[Alternative]:
    """Changes that make the job fit: on the chosen instance when they can, else on the cheapest
    instance of the table where they do. Variants that fit nowhere are left out."""
    out: list[Alternative] = []

    def placed(values: dict[str, Any]) -> Fit | None:
        variant = dataclasses.replace(training, **values)
        if chosen is not None:
            fit = _fit(arch, variant, chosen.instance, chosen.count, tokens_for)
            if fit.fits:
                return fit
        fits = [f for f in (_fit(arch, variant, row, 1, tokens_for) for row in candidates) if f.fits]
        return min(fits, key=lambda f: (f.hourly(spot), -f.time.tokens_per_second)) if fits else None

    def attempt(change: str, settings: dict[str, Any], values: dict[str, Any] | None = None) -> bool:
        fit = placed(values or settings)
        if fit is None:
            return False
        where = "" if chosen is not None and fit.instance == chosen.instance else f" --instance-type {fit.instance.type}"
        out.append(Alternative(change + where, settings, fit))
        return True

    if training.technique != "qlora":
        attempt("--technique qlora", {"technique": "qlora"}, {"technique": "qlora", "quantization": AUTO})
    if not training.resolved_gradient_checkpointing:
        attempt("--set gradient_checkpointing=true", {"gradient_checkpointing": "true"})
    b = training.per_device_train_batch_size
    if b > 1:
        accum = training.gradient_accumulation_steps * b
        attempt(f"--set per_device_train_batch_size=1 --set gradient_accumulation_steps={accum} (same batch)",
                {"per_device_train_batch_size": 1, "gradient_accumulation_steps": accum})
    lengths = []
    length = training.max_length // 2
    while length >= 256:
        lengths.append(length)
        length //= 2
    # The longest that fits the chosen instance; else the longest that fits anywhere.
    on_chosen = [n for n in lengths if chosen is not None and _fit(
        arch, dataclasses.replace(training, max_length=n), chosen.instance, chosen.count, tokens_for).fits]
    for n in on_chosen[:1] or lengths:
        if attempt(f"--set max_length={n} (longer samples are truncated)", {"max_length": n}):
            break
    return out


def make_plan(job: Any, *, dataset_tokens_override: int | None = None, instance_types: list[str] | None = None) -> Plan:
    """Plan ``job`` (a validated JobSpec). ``instance_types`` limits the candidates (default: the table)."""
    training = job.training
    arch = resolve_model(training.model, job.data.model)
    tokens_for, tokens_note = dataset_tokens(job, dataset_tokens_override)
    spot = job.compute.spot
    chosen_type = job.compute.instance_type
    chosen = None
    notes: list[str] = []
    if chosen_type != AUTO:
        chosen = _fit(arch, training, instance(chosen_type), job.compute.instance_count, tokens_for)
    candidates = [INSTANCES[t] if t in INSTANCES else instance(t) for t in (instance_types or INSTANCES)]
    options = [f for f in (_fit(arch, training, row, 1, tokens_for) for row in candidates) if f.fits]
    # "Cheapest" is the hourly price (spot-adjusted when spot): robust, unlike the time estimate.
    # The options carry time and cost per job, and a note names a faster one that costs less in all.
    options.sort(key=lambda f: (f.hourly(spot), -f.time.tokens_per_second))
    recommended = options[0] if options else None
    by_job = min((f for f in options if f.time.hours is not None), key=lambda f: f.cost(spot), default=None)
    if recommended is not None and by_job is not None and by_job.instance != recommended.instance:
        notes.append(f"{by_job.instance.type} is faster and would cost less for the whole job "
                     f"(estimate: {by_job.time.hours:.1f} h, ${by_job.cost(spot):.2f} vs "
                     f"{recommended.time.hours:.1f} h, ${recommended.cost(spot):.2f}).")
    fits_already = chosen.fits if chosen is not None else recommended is not None
    alternatives = [] if fits_already else _alternatives(arch, training, chosen, candidates, tokens_for, spot)
    if chosen is not None:
        notes += chosen.memory.notes
    elif recommended is not None:
        notes += recommended.memory.notes
    if arch.is_moe:
        counts = arch.parameter_counts()
        notes.append(f"Mixture of experts: {counts['total'] / 1e9:.1f}B parameters in memory, "
                     f"{counts['active'] / 1e9:.1f}B active per token (time uses the active ones).")
    if chosen is not None and job.compute.instance_count > 1:
        notes.append("Several instances train data-parallel (DDP): each GPU holds the whole model, so more "
                     "instances make the job faster, not smaller.")
    largest = None
    if chosen is None and recommended is None:
        row = max(candidates, key=lambda r: (r.gpu_memory_gib, -r.price_per_hour))
        largest = _fit(arch, training, row, 1, tokens_for)
    return Plan(arch, training.technique, spot, chosen, recommended, options, alternatives, tokens_note, notes,
                largest)


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2, sort_keys=True)


# ---------------------------------------------------------------------- the launch guard
def guard_launch(job: Any, *, force: bool = False) -> list[str]:
    """Run the plan before a SageMaker launch: pick the recommended instance for ``auto`` and refuse
    (:class:`PlanError`) a job that will not fit the chosen one, unless ``force``. Sets
    ``job.compute.instance_type`` in place; returns notes for the launch result."""
    compute = job.compute
    if compute.instance_type == AUTO:
        compute.instance_type, note = resolve_auto_instance(job)
        return [note]
    try:
        plan = make_plan(job)
    except UsageError as exc:  # a model or instance the planner cannot size: launch, but say so
        return [f"Memory check skipped: {exc.message}"]
    if plan.fits:
        return []
    if force:
        return ["--force: launching although the plan says it will not fit: " + plan.problem()]
    raise PlanError(plan.problem(), plan, hint="Apply one of the options, or pass --force (force=True) to launch anyway.")


#: For instance type auto when the planner cannot size the model (a Hub id outside the catalog).
FALLBACK_INSTANCE_TYPE = "ml.g5.2xlarge"


def resolve_auto_instance(job: Any) -> tuple[str, str]:
    """(instance type, note) for a job whose instance type is auto: the plan's recommendation;
    :data:`FALLBACK_INSTANCE_TYPE` for a model the planner cannot size; :class:`PlanError` when
    no instance of the table fits."""
    try:
        plan = make_plan(job)
    except UsageError as exc:
        return FALLBACK_INSTANCE_TYPE, (
            f"Instance type auto: {FALLBACK_INSTANCE_TYPE}, unchecked: the planner cannot size this job "
            f"({exc.message}). Set --instance-type to choose."
        )
    if plan.recommended is None:
        raise PlanError(plan.problem(), plan, hint="Apply one of the options, or set --instance-type.")
    chosen = plan.recommended
    return chosen.instance.type, (
        f"Instance type auto: {chosen.instance.type}, the cheapest that fits (about "
        f"{chosen.memory.total / GIB:.1f} of {chosen.instance.gpu_memory_gib:g} GiB per GPU; 'ftcloud plan' shows why)."
    )
