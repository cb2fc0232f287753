"""The search space: the job file's ``tune:`` section, ``--param`` flags and SDK keyword arguments
become one :class:`~ftcloud.tuning.base.TuningSpec` here, and :func:`validate_tuning` refuses up
front everything SageMaker Automatic Model Tuning would reject (the same rules for both backends,
so a tuning that runs locally also runs on SageMaker).

YAML layout::

    tune:
      objective: eval_loss              # any metric the container prints; or {metric: ..., goal: ...}
      goal: minimize
      strategy: bayesian                # bayesian | random | grid | hyperband
      max_trials: 12
      max_parallel: 2
      early_stopping: auto              # off | auto
      seed: 7
      parameters:
        learning_rate: {min: 1e-5, max: 1e-3, scaling: log}
        lora_r: [8, 16, 32]             # a list is categorical
        per_device_train_batch_size: {min: 2, max: 8}

A parameter is any :class:`~ftcloud.spec.TrainingSpec` field; its kind follows the field's type
(int: integer, float: continuous, str/bool: categorical) and every bound and value goes through
the field's own coercion, bounds and choices. Import-light.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ftcloud.spec import SpecError, TrainingSpec, _base_type, _coerce, bounds_problem
from ftcloud.tuning.base import (
    EARLY_STOPPING,
    GOALS,
    KINDS,
    SCALINGS,
    STRATEGIES,
    WARM_START_TYPES,
    Objective,
    ParameterRange,
    TuningSpec,
)

# SageMaker's limits (CreateHyperParameterTuningJob), checked before any call.
MAX_RANGES = 30  # ParameterRanges: 30 ranged hyperparameters in all
MAX_HYPERPARAMETERS = 100  # static + ranged
MAX_CATEGORICAL_VALUES = 30
MAX_TUNING_NAME = 32  # HyperParameterTuningJobName
MAX_WARM_START_PARENTS = 5
MAX_HYPERBAND_RESOURCE = 20_000
TUNING_RUNTIME_RANGE = (120, 15_768_000)  # ResourceLimits.MaxRuntimeInSeconds
#: Training keys Hyperband can use as its resource (what a trial's length is measured in).
RESOURCE_KEYS = ("num_train_epochs", "max_steps")
#: Training keys a tuning cannot search: every trial must train the same base model with the same secret.
NOT_TUNABLE = ("model", "hf_token_secret_arn")

_SCALING_ALIASES = {
    "auto": "auto",
    "linear": "linear",
    "log": "logarithmic",
    "logarithmic": "logarithmic",
    "reverse_log": "reverse_logarithmic",
    "reverse_logarithmic": "reverse_logarithmic",
}
_KIND_ALIASES = {"continuous": "continuous", "float": "continuous", "integer": "integer", "int": "integer",
                 "categorical": "categorical"}

#: SDK keyword argument / CLI flag (dashes for underscores) -> ``tune:`` key. Names that would collide
#: with job spec keys get a prefix (``seed`` and ``max_runtime`` are training/compute keys).
TUNING_KWARGS = {
    "params": "parameters",
    "strategy": "strategy",
    "max_trials": "max_trials",
    "max_parallel": "max_parallel",
    "objective": "objective",
    "goal": "goal",
    "early_stopping": "early_stopping",
    "tune_seed": "seed",
    "max_tuning_runtime": "max_runtime",
    "target": "target",
    "warm_start_from": "warm_start_from",
    "warm_start_type": "warm_start_type",
    "resource": "resource",
    "min_resource": "min_resource",
    "max_resource": "max_resource",
}
TUNE_KEYS = ("parameters", "objective", "goal", "strategy", "max_trials", "max_parallel", "early_stopping", "seed",
             "max_runtime", "target", "warm_start_from", "warm_start_type", "resource", "min_resource",
             "max_resource")


def new_tuning_name() -> str:
    """``tune-20250101-120000-ab12``: sortable, unique, within SageMaker's 32 characters."""
    import secrets
    import time

    return f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------------- parsing
def parse_tuning(
    values: Mapping[str, Any] | None,
    source: str = "tune",
    lines: Mapping[str, int] | None = None,
    base: TuningSpec | None = None,
) -> TuningSpec:
    """Build a :class:`TuningSpec` from the ``tune:`` mapping (YAML, flags or kwargs), on top of ``base``.

    ``lines`` maps dotted paths (``tune.parameters.lora_r``) to YAML line numbers; errors name
    ``source:line`` and the field path. Parameters given again replace the earlier range of that name.
    """
    lines = lines or {}
    tuning = _copy(base) if base is not None else TuningSpec()
    where_map: dict[str, str] = dict(getattr(base, "_where", {}) or {})
    if values is None:
        return tuning
    if not isinstance(values, Mapping):
        raise SpecError(f"'tune' must be a mapping of tuning settings ({', '.join(TUNE_KEYS)}); got {values!r}.",
                        "tune", _at(source, lines, "tune"))
    for key, raw in values.items():
        path = f"tune.{key}"
        where = _at(source, lines, path)
        where_map[path] = where
        if key not in TUNE_KEYS:
            raise SpecError(_unknown(path, [f"tune.{k}" for k in TUNE_KEYS]), path, where)
        if key == "parameters":
            for rng in _parse_parameters(raw, source, lines, where_map):
                tuning.parameters = [p for p in tuning.parameters if p.name != rng.name] + [rng]
        elif key == "objective":
            if isinstance(raw, Mapping):
                unknown = set(raw) - {"metric", "goal"}
                if unknown:
                    raise SpecError(f"'{path}' takes metric and goal; got {', '.join(sorted(map(str, unknown)))}.",
                                    path, where)
                metric = raw.get("metric", tuning.objective.metric)
                goal = raw.get("goal", tuning.objective.goal)
            else:
                metric, goal = raw, tuning.objective.goal
            tuning.objective = Objective(_text(metric, path, where), _choice(goal, GOALS, f"{path}.goal", where))
        elif key == "goal":
            tuning.objective = Objective(tuning.objective.metric, _choice(raw, GOALS, path, where))
        elif key == "strategy":
            tuning.strategy = _choice(raw, STRATEGIES, path, where)
        elif key == "early_stopping":
            if isinstance(raw, bool):  # YAML reads a bare off/on as a boolean
                raw = "auto" if raw else "off"
            tuning.early_stopping = _choice(raw, EARLY_STOPPING, path, where)
        elif key == "warm_start_type":
            tuning.warm_start_type = _choice(raw, WARM_START_TYPES, path, where, case=True)
        elif key == "warm_start_from":
            tuning.warm_start_from = _names(raw, path, where)
        elif key == "resource":
            tuning.resource = None if raw in (None, "") else _choice(raw, RESOURCE_KEYS, path, where, case=True)
        elif key in ("max_trials", "max_parallel"):
            setattr(tuning, key, _int(raw, path, where, minimum=1))
        elif key in ("min_resource", "max_resource"):
            setattr(tuning, key, None if raw in (None, "") else _int(raw, path, where, minimum=1))
        elif key == "seed":
            tuning.seed = None if raw in (None, "") else _int(raw, path, where, minimum=0)
        elif key == "max_runtime":
            from ftcloud.job import parse_duration

            tuning.max_runtime = None if raw in (None, "") else parse_duration(raw, path, where)
        elif key == "target":
            tuning.target = None if raw in (None, "") else _coerce(path, raw, float, where)
            if tuning.target is not None and not math.isfinite(tuning.target):
                raise SpecError(f"'{path}' must be a finite number; got {raw!r}.", path, where)
    tuning.__dict__["_where"] = where_map  # where each value came from, for validate_tuning's messages
    return tuning


def tuning_from_kwargs(kwargs: Mapping[str, Any], base: TuningSpec | None = None, source: str = "arguments") -> TuningSpec | None:
    """Apply SDK keyword arguments / CLI flags named in :data:`TUNING_KWARGS` (``None`` values skipped).

    ``params`` is a list of ``NAME=LOW:HIGH[:SCALING]`` / ``NAME=V1,V2`` strings, or a mapping
    ``{name: range}`` in the YAML form, or :class:`ParameterRange` objects. Returns ``base`` when
    nothing was given."""
    values: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key not in TUNING_KWARGS:
            raise SpecError(_unknown(key, list(TUNING_KWARGS)), key, source)
        if value is None or value == () or value == []:
            continue
        if key == "params":
            value = _params_from_kwarg(value, source)
        values[TUNING_KWARGS[key]] = value
    if not values:
        return base
    return parse_tuning(values, source, {}, base)


def parse_param_flag(text: str, source: str = "--param") -> tuple[str, Any]:
    """``learning_rate=1e-5:1e-2:log`` -> ``("learning_rate", "1e-5:1e-2:log")`` (parsed by the range
    parser like a YAML value); ``lora_r=8,16,32`` -> a categorical list."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise SpecError(
            f"--param expects NAME=LOW:HIGH[:SCALING] or NAME=V1,V2,...; got {text!r} "
            "(e.g. --param learning_rate=1e-5:1e-3:log, --param lora_r=8,16,32).",
            "tune.parameters",
            source,
        )
    if ":" not in spec:
        return name, [v.strip() for v in spec.split(",") if v.strip()]
    return name, spec


def _params_from_kwarg(value: Any, source: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str | ParameterRange):
        value = [value]
    out: dict[str, Any] = {}
    for item in value:
        if isinstance(item, ParameterRange):
            out[item.name] = {k: v for k, v in item.to_dict().items() if k != "name"}
        else:
            name, spec = parse_param_flag(str(item), source)
            out[name] = spec
    return out


def _parse_parameters(raw: Any, source: str, lines: Mapping[str, int], where_map: dict[str, str]) -> list[ParameterRange]:
    path = "tune.parameters"
    if isinstance(raw, list | tuple) and all(isinstance(x, Mapping) and "name" in x for x in raw):
        items = [(str(x["name"]), {k: v for k, v in x.items() if k != "name"}) for x in raw]  # to_dict() form
    elif isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    else:
        raise SpecError(
            f"'{path}' must map training keys to ranges, e.g. learning_rate: {{min: 1e-5, max: 1e-3, scaling: log}} "
            f"or lora_r: [8, 16, 32]; got {raw!r}.",
            path,
            _at(source, lines, path),
        )
    out = []
    for name, spec in items:
        p = f"{path}.{name}"
        where = _at(source, lines, p)
        where_map[p] = where
        out.append(parse_range(name, spec, p, where))
    return out


def parse_range(name: str, spec: Any, path: str | None = None, where: str = "tune") -> ParameterRange:
    """One range: a list (categorical), ``LOW:HIGH[:SCALING|KIND]`` text, or a mapping with
    ``min``/``max`` (or ``low``/``high``), ``values``, ``kind``, ``scaling``."""
    path = path or f"tune.parameters.{name}"
    hints = typing.get_type_hints(TrainingSpec)
    if name not in hints:
        close = difflib.get_close_matches(name, list(hints), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpecError(f"'{path}': '{name}' is not a training key.{hint} See 'ftcloud hyperparameters'.", path, where)
    if name in NOT_TUNABLE:
        raise SpecError(f"'{path}': '{name}' cannot be tuned: every trial trains the same base model with the same "
                        "credentials. Run one tuning per model instead.", path, where)
    base = _base_type(hints[name])
    kind = scaling = None
    low = high = None
    values: list[Any] | None = None
    if isinstance(spec, list | tuple):
        values = list(spec)
    elif isinstance(spec, str) and ":" in spec:
        parts = [x.strip() for x in spec.split(":")]
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise SpecError(f"'{path}' must be LOW:HIGH or LOW:HIGH:SCALING (linear, log, reverse_log) or "
                            f"LOW:HIGH:integer; got {spec!r}.", path, where)
        low, high = parts[0], parts[1]
        if len(parts) == 3:
            if parts[2].lower() in _KIND_ALIASES:
                kind = _KIND_ALIASES[parts[2].lower()]
            else:
                scaling = parts[2]
    elif isinstance(spec, Mapping):
        allowed = {"min", "max", "low", "high", "values", "kind", "scaling"}
        unknown = set(spec) - allowed
        if unknown:
            raise SpecError(f"'{path}' takes {', '.join(sorted(allowed))}; got {', '.join(sorted(map(str, unknown)))}.",
                            path, where)
        low = spec.get("min", spec.get("low"))
        high = spec.get("max", spec.get("high"))
        if spec.get("values") not in (None, []):
            values = list(spec["values"]) if isinstance(spec["values"], list | tuple) else [spec["values"]]
        if spec.get("kind") is not None:
            k = str(spec["kind"]).lower()
            if k not in _KIND_ALIASES:
                raise SpecError(f"'{path}.kind' must be one of {', '.join(KINDS)}; got {spec['kind']!r}.", path, where)
            kind = _KIND_ALIASES[k]
        scaling = spec.get("scaling")
    else:
        raise SpecError(
            f"'{path}' must be a list of values, LOW:HIGH[:SCALING] or a mapping with min/max; got {spec!r}.",
            path, where)

    meta = {f.name: f for f in fields(TrainingSpec)}[name].metadata
    if values is not None:
        if low is not None or high is not None:
            raise SpecError(f"'{path}': give either values (categorical) or min/max (a range), not both.", path, where)
        if kind not in (None, "categorical"):
            raise SpecError(f"'{path}': a list of values is categorical; kind {kind!r} needs min/max.", path, where)
        if not values:
            raise SpecError(f"'{path}' needs at least one value.", path, where)
        coerced = [_field_value(name, v, hints[name], meta, path, where) for v in values]
        if len(set(map(repr, coerced))) != len(coerced):
            raise SpecError(f"'{path}' lists a value twice: {values!r}.", path, where)
        if len(coerced) > MAX_CATEGORICAL_VALUES:
            raise SpecError(f"'{path}' has {len(coerced)} values; SageMaker allows {MAX_CATEGORICAL_VALUES} per "
                            "categorical range. Use a numeric range (min/max) instead.", path, where)
        if scaling not in (None, "auto"):
            raise SpecError(f"'{path}': scaling applies to numeric ranges, not to a list of values.", path, where)
        return ParameterRange(name=name, kind="categorical", values=coerced)

    if low is None or high is None:
        raise SpecError(f"'{path}' needs both min and max (or a list of values).", path, where)
    if base not in (int, float):
        raise SpecError(f"'{path}': '{name}' is a {getattr(base, '__name__', base)} key, so it takes a list of "
                        f"values (categorical), not a min/max range.", path, where)
    kind = kind or ("integer" if base is int else "continuous")
    if kind == "categorical":
        raise SpecError(f"'{path}': categorical ranges take a list of values, not min/max.", path, where)
    if kind == "continuous" and base is int:
        raise SpecError(f"'{path}': '{name}' is a whole number, so its range is integer (drop kind: continuous).",
                        path, where)
    hint = int if kind == "integer" else hints[name]
    lo = _field_value(name, low, hint, meta, f"{path}.min", where)
    hi = _field_value(name, high, hint, meta, f"{path}.max", where)
    if not lo < hi:
        raise SpecError(f"'{path}': min ({lo}) must be below max ({hi}).", path, where)
    scaling_name = _SCALING_ALIASES.get(str(scaling).lower()) if scaling is not None else "auto"
    if scaling_name is None:
        raise SpecError(f"'{path}.scaling' must be one of {', '.join(SCALINGS)} (or log, reverse_log); "
                        f"got {scaling!r}.", path, where)
    if scaling_name == "logarithmic" and lo <= 0:
        raise SpecError(f"'{path}': log scaling needs min > 0; got {lo}. Raise min or use scaling: linear.",
                        path, where)
    if scaling_name == "reverse_logarithmic":
        if kind == "integer":
            raise SpecError(f"'{path}': reverse_log scaling applies to continuous ranges only.", path, where)
        if not (0 <= lo and hi < 1):
            raise SpecError(f"'{path}': reverse_log scaling needs 0 <= min and max < 1; got {lo}..{hi}.", path, where)
    return ParameterRange(name=name, kind=kind, low=lo, high=hi, scaling=scaling_name)


def _field_value(name: str, raw: Any, hint: Any, meta: Mapping[str, Any], path: str, where: str) -> Any:
    """``raw`` as the field's own type, inside its bounds and choices (the field's rules, not a copy)."""
    if isinstance(raw, list | dict):
        raise SpecError(f"'{path}' must be a plain value; got {raw!r}.", path, where)
    try:
        value = _coerce(name, raw, hint, where)
    except SpecError as exc:
        raise SpecError(str(exc).removeprefix(f"{where}: ").replace(f"'{name}'", f"'{path}'"), path, where) from None
    if value is None:
        raise SpecError(f"'{path}' cannot be empty.", path, where)
    choices = meta.get("choices")
    if choices and value not in choices:
        raise SpecError(f"'{path}' must be one of {', '.join(choices)}; got {raw!r}.", path, where)
    problem = bounds_problem(path, value, meta)
    if problem:
        raise SpecError(problem, path, where)
    return value


# ---------------------------------------------------------------------- validation
def validate_tuning(tuning: TuningSpec, job: Any) -> TuningSpec:
    """Refuse what SageMaker would reject, before any call; fill Hyperband's resource defaults.

    ``job`` is the validated :class:`~ftcloud.job.JobSpec` whose trials the tuning runs (its name
    names the tuning). Every error names the field path and how to fix it. Returns ``tuning``.
    """
    from ftcloud.contract import METRIC_NAMES
    from ftcloud.job import JOB_NAME_RE

    where = getattr(tuning, "_where", {}) or {}

    def fail(path: str, message: str) -> SpecError:
        return SpecError(message, path, where.get(path) or where.get(path.rsplit(".", 1)[0]) or "tune")

    name = job.name or ""
    if len(name) > MAX_TUNING_NAME or not JOB_NAME_RE.match(name or "x"):
        raise fail("name", f"'name' {name!r} cannot name a tuning: SageMaker allows {MAX_TUNING_NAME} letters, "
                           "digits and hyphens (HyperParameterTuningJobName). Choose a shorter name (--name) or "
                           "leave it empty for a generated one.")
    if not tuning.parameters:
        raise fail("tune.parameters", "'tune.parameters' is empty: give at least one range, e.g. "
                                      "--param learning_rate=1e-5:1e-3:log.")
    if len(tuning.parameters) > MAX_RANGES:
        raise fail("tune.parameters", f"'tune.parameters' has {len(tuning.parameters)} ranges; SageMaker allows "
                                      f"{MAX_RANGES}. Fix the others in 'training:'.")
    ranged = {p.name for p in tuning.parameters}
    total = len(set(job.training.to_hyperparameters()) | ranged)
    if total > MAX_HYPERPARAMETERS:
        raise fail("tune.parameters", f"the trials would have {total} hyperparameters; SageMaker allows "
                                      f"{MAX_HYPERPARAMETERS} (static and ranged together).")
    for rng in tuning.parameters:
        _check_against_job(rng, job, fail)
    metric = tuning.objective.metric
    if metric not in METRIC_NAMES:
        close = difflib.get_close_matches(metric, METRIC_NAMES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise fail("tune.objective", f"'tune.objective' {metric!r} is not a metric the container prints.{hint} "
                                     f"Choose one of {', '.join(METRIC_NAMES)}.")
    if tuning.max_parallel > tuning.max_trials:
        raise fail("tune.max_parallel", f"'tune.max_parallel' ({tuning.max_parallel}) must not exceed "
                                        f"'tune.max_trials' ({tuning.max_trials}).")
    if tuning.max_runtime is not None and not TUNING_RUNTIME_RANGE[0] <= tuning.max_runtime <= TUNING_RUNTIME_RANGE[1]:
        raise fail("tune.max_runtime", f"'tune.max_runtime' must be {TUNING_RUNTIME_RANGE[0]} s to "
                                       f"{TUNING_RUNTIME_RANGE[1]} s (about 6 months); got {tuning.max_runtime}.")
    c = job.compute
    if c.spot and (c.resolved_max_wait or c.max_runtime) < c.max_runtime:
        raise fail("compute.max_wait", f"'compute.max_wait' ({c.resolved_max_wait} s) must be >= 'compute.max_runtime' "
                                       f"({c.max_runtime} s) for spot trials.")
    if len(tuning.warm_start_from) > MAX_WARM_START_PARENTS:
        raise fail("tune.warm_start_from", f"'tune.warm_start_from' lists {len(tuning.warm_start_from)} tunings; "
                                           f"SageMaker allows {MAX_WARM_START_PARENTS}.")
    for parent in tuning.warm_start_from:
        if len(parent) > MAX_TUNING_NAME or not JOB_NAME_RE.match(parent):
            raise fail("tune.warm_start_from", f"'tune.warm_start_from': {parent!r} is not a tuning name (1-32 "
                                               "letters, digits and hyphens).")
    if tuning.strategy == "grid":
        loose = [p.name for p in tuning.parameters if p.kind != "categorical"]
        if loose:
            raise fail(f"tune.parameters.{loose[0]}",
                       f"grid search takes categorical parameters only; {', '.join(loose)} "
                       f"{'is a range' if len(loose) == 1 else 'are ranges'}. List the values to try "
                       f"(e.g. {loose[0]}: [..., ...]) or use strategy random or bayesian.")
        combinations = math.prod(len(p.values) for p in tuning.parameters)
        if combinations > tuning.max_trials:
            raise fail("tune.max_trials", f"the grid has {combinations} combinations but 'tune.max_trials' is "
                                          f"{tuning.max_trials}: raise max_trials to {combinations} or list fewer values.")
    if tuning.strategy == "hyperband":
        _check_hyperband(tuning, job, fail)
    else:
        for key in ("resource", "min_resource", "max_resource"):
            if getattr(tuning, key) is not None:
                raise fail(f"tune.{key}", f"'tune.{key}' applies to strategy hyperband only (strategy is "
                                          f"{tuning.strategy}); remove it.")
    return tuning


def _check_against_job(rng: ParameterRange, job: Any, fail: Any) -> None:
    """Every candidate value must make a valid training spec with the job's other keys
    (e.g. technique 'full' with quantization 4bit fails here, not in trial 7)."""
    base = job.training.to_dict()
    candidates = rng.values if rng.kind == "categorical" else [rng.low, rng.high]
    for value in candidates:
        try:
            TrainingSpec(**{**base, rng.name: value}).validate("tune")
        except SpecError as exc:
            reason = str(exc).removeprefix("tune: ")
            raise fail(f"tune.parameters.{rng.name}", f"'tune.parameters.{rng.name}': value {value!r} does not fit "
                                                      f"the job: {reason}") from None


def _check_hyperband(tuning: TuningSpec, job: Any, fail: Any) -> None:
    if tuning.early_stopping != "off":
        raise fail("tune.early_stopping", "hyperband stops weak trials itself: set 'tune.early_stopping' to off "
                                          "(SageMaker rejects TrainingJobEarlyStoppingType Auto with Hyperband).")
    ranged = {p.name: p for p in tuning.parameters}
    training = job.training
    if tuning.resource is None:
        steps_set = training.max_steps > 0 or "max_steps" in ranged
        tuning.resource = "max_steps" if steps_set else "num_train_epochs"
    key = tuning.resource
    if key == "num_train_epochs" and (training.max_steps > 0 or "max_steps" in ranged):
        raise fail("tune.resource", "'tune.resource' is num_train_epochs but training.max_steps is set and overrides "
                                    "epochs: use resource max_steps, or unset max_steps.")
    if key in ranged:
        top = ranged[key].high if ranged[key].kind != "categorical" else max(ranged[key].values)
    else:
        top = getattr(training, key)
    if top is None or top <= 0:
        raise fail("tune.resource", f"hyperband needs a resource: set training.{key} > 0 (or range it), or choose "
                                    f"'tune.resource' from {', '.join(RESOURCE_KEYS)}.")
    if tuning.max_resource is None:
        tuning.max_resource = max(1, math.ceil(top))
    if tuning.min_resource is None:
        tuning.min_resource = 1
    if tuning.max_resource > MAX_HYPERBAND_RESOURCE:
        raise fail("tune.max_resource", f"'tune.max_resource' must be at most {MAX_HYPERBAND_RESOURCE}; "
                                        f"got {tuning.max_resource}.")
    if tuning.min_resource > tuning.max_resource:
        raise fail("tune.min_resource", f"'tune.min_resource' ({tuning.min_resource}) must not exceed "
                                        f"'tune.max_resource' ({tuning.max_resource}).")


# ---------------------------------------------------------------------- values on the wire
def to_wire(value: Any) -> str:
    """A range bound or value as SageMaker's string hyperparameter (the spec's own formatting)."""
    from ftcloud.spec import _to_string

    return _to_string(value)


def from_wire(name: str, text: str) -> Any:
    """A tuned value read back from SageMaker (or a trial record) as the training key's type."""
    hints = typing.get_type_hints(TrainingSpec)
    if name not in hints:
        return text
    try:
        return _coerce(name, text, hints[name], "tuned hyperparameters")
    except SpecError:
        return text


# ---------------------------------------------------------------------- helpers
def _copy(tuning: TuningSpec) -> TuningSpec:
    import copy

    return copy.deepcopy(tuning)


def _at(source: str, lines: Mapping[str, int], path: str) -> str:
    probe = path
    while probe:
        if probe in lines:
            return f"{source}:{lines[probe]}"
        if "." not in probe:
            break
        probe = probe.rsplit(".", 1)[0]
    return source


def _unknown(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown tuning setting '{key}'.{hint} Allowed: {', '.join(allowed)}."


def _choice(raw: Any, allowed: tuple[str, ...], path: str, where: str, case: bool = False) -> str:
    text = str(raw).strip() if raw is not None else ""
    if not case:
        text = text.lower()
    if text not in allowed:
        raise SpecError(f"'{path}' must be one of {', '.join(allowed)}; got {raw!r}.", path, where)
    return text


def _text(raw: Any, path: str, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise SpecError(f"'{path}' must be a metric name such as eval_loss; got {raw!r}.", path, where)
    return raw.strip()


def _int(raw: Any, path: str, where: str, minimum: int) -> int:
    value = _coerce(path, raw, int, where)
    if value < minimum:
        raise SpecError(f"'{path}' must be >= {minimum}; got {raw!r}.", path, where)
    return value


def _names(raw: Any, path: str, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [x.strip() for x in raw.split(",") if x.strip()]
    if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
        return [x.strip() for x in raw]
    raise SpecError(f"'{path}' must be a list of tuning names; got {raw!r}.", path, where)
