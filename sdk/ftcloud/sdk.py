"""The Python API. The CLI is a thin layer over this module: each command is one call here.

Pipelines use it directly::

    import ftcloud

    job = ftcloud.launch(config="job.yaml", technique="qlora", lora_r=8)   # returns at once
    final = job.wait()                                                     # Completed/Failed/Stopped
    for event in job.logs():
        print(event.message)

Backend choice, lowest precedence first: the user config (``ftcloud platform use``), the job
spec's ``backend``, an explicit ``backend=`` argument. Job commands (status/logs/stop) look in
the local job store first when no backend is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ftcloud.backends.base import Backend, JobStatus, LaunchResult, LogCursor, LogEvent
from ftcloud.config import UserConfig
from ftcloud.errors import UsageError
from ftcloud.job import BACKENDS, JobSpec, build_job_spec
from ftcloud.platform_outputs import DEFAULT_STACK_NAME


class Job:
    """A handle on one launched job (any backend)."""

    def __init__(self, name: str, backend: Backend, launch_result: LaunchResult | None = None):
        self.name = name
        self.backend = backend
        self.launch_result = launch_result

    def __repr__(self) -> str:
        return f"Job({self.name!r}, backend={self.backend.name!r})"

    def status(self) -> JobStatus:
        return self.backend.status(self.name)

    def wait(
        self,
        *,
        poll: float | None = None,
        timeout: float | None = None,
        on_update: Callable[[JobStatus], None] | None = None,
        on_log: Callable[[LogEvent], None] | None = None,
        cursor: LogCursor | None = None,
    ) -> JobStatus:
        """Block until Completed, Failed or Stopped; returns the final status (does not raise on Failed).

        ``on_update(status)`` runs on every status change, ``on_log(event)`` on every new log line
        (from ``cursor`` on, which it advances)."""
        return self.backend.wait(self.name, poll=poll, timeout=timeout, on_update=on_update, on_log=on_log,
                                 cursor=cursor)

    def logs(self, *, follow: bool = False, cursor: LogCursor | None = None, poll: float | None = None) -> Iterator[LogEvent]:
        return self.backend.logs(self.name, follow=follow, cursor=cursor, poll=poll)

    def stop(self) -> JobStatus:
        return self.backend.stop(self.name)


class Tuning:
    """A handle on one tuning (any backend): its trials, the best one, waiting and stopping."""

    def __init__(self, name: str, tuner: Any, launch_result: Any = None):
        self.name = name
        self.tuner = tuner
        self.launch_result = launch_result

    def __repr__(self) -> str:
        return f"Tuning({self.name!r}, backend={self.tuner.name!r})"

    def status(self) -> Any:
        """The :class:`~ftcloud.tuning.base.TuningStatus`, with every trial."""
        return self.tuner.status(self.name)

    @property
    def trials(self) -> list[Any]:
        return self.status().trials

    @property
    def best(self) -> Any:
        """The best trial so far (a :class:`~ftcloud.tuning.base.Trial`), or ``None``."""
        return self.status().best

    def wait(self, *, poll: float = 15.0, timeout: float | None = None, on_update: Callable[[Any], None] | None = None) -> Any:
        """Block until the tuning ends; ``on_update(status)`` after every poll. Returns the final status."""
        return self.tuner.wait(self.name, poll=poll, timeout=timeout, on_update=on_update)

    def stop(self) -> Any:
        return self.tuner.stop(self.name)


class Client:
    """Backend selection plus the verbs. ``profile``/``region``/``stack`` apply to AWS backends."""

    def __init__(
        self,
        backend: str | None = None,
        *,
        profile: str | None = None,
        region: str | None = None,
        stack: str | None = None,
        user_config: UserConfig | None = None,
    ):
        if backend is not None and backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
        self.config = user_config if user_config is not None else UserConfig.load()
        self.explicit_backend = backend
        self.profile = profile
        self.region = region
        self.stack = stack
        self._backends: dict[tuple, Backend] = {}

    # ------------------------------------------------------------------ backends
    def default_backend_name(self, spec: JobSpec | None = None) -> str:
        if self.explicit_backend:
            return self.explicit_backend
        if spec is not None and spec.backend:
            return spec.backend
        return self.config.backend or "local"

    def backend(self, name: str | None = None, spec: JobSpec | None = None) -> Backend:
        """The backend object for ``name`` (default: see :meth:`default_backend_name`)."""
        name = name or self.default_backend_name(spec)
        profile, region, stack = self._aws_settings(spec)
        key = (name, profile, region, stack)
        if key not in self._backends:
            if name == "local":
                from ftcloud.backends.local import LocalBackend

                self._backends[key] = LocalBackend()
            elif name == "sagemaker":
                from ftcloud.aws import AwsContext
                from ftcloud.backends.sagemaker import SageMakerBackend

                self._backends[key] = SageMakerBackend(AwsContext(profile, region), stack, self.config)
            else:
                raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}.")
        return self._backends[key]

    def _aws_settings(self, spec: JobSpec | None) -> tuple[str | None, str | None, str]:
        p = spec.platform if spec is not None else None
        profile = self.profile or (p.profile if p else None) or self.config.profile
        region = self.region or (p.region if p else None) or self.config.region
        stack = self.stack or (p.stack if p else None) or self.config.stack or DEFAULT_STACK_NAME
        return profile, region, stack

    def backend_for_job(self, name: str) -> Backend:
        """Explicit backend, else the local store if it has ``name``, else the default backend."""
        if self.explicit_backend:
            return self.backend(self.explicit_backend)
        local = self.backend("local")
        if local.has_job(name):
            return local
        return self.backend()

    # ------------------------------------------------------------------ verbs
    def build_spec(
        self,
        spec: JobSpec | None = None,
        *,
        config: str | os.PathLike | None = None,
        set_values: list[str] | tuple[str, ...] | None = None,
        **overrides: Any,
    ) -> JobSpec:
        """A validated :class:`JobSpec` from a file, flat keyword overrides and ``key=value`` strings."""
        if spec is not None:
            if config is not None:
                raise UsageError("pass either a JobSpec or config=PATH, not both.")
            if overrides or set_values:
                from ftcloud.job import apply_flat, parse_set_values

                apply_flat(spec, {k: v for k, v in overrides.items() if v is not None}, "arguments")
                if set_values:
                    apply_flat(spec, parse_set_values(set_values), "--set")
            return spec.validate()
        return build_job_spec(config=config, overrides=overrides, set_values=set_values)

    def launch(
        self,
        spec: JobSpec | None = None,
        *,
        config: str | os.PathLike | None = None,
        set_values: list[str] | tuple[str, ...] | None = None,
        dry_run: bool = False,
        skip_validation: bool = False,
        force: bool = False,
        **overrides: Any,
    ) -> Job:
        """Launch a job (returns at once; call :meth:`Job.wait`). ``dry_run`` only plans it:
        ``job.launch_result.request`` holds the exact request and nothing is created.

        Local data (``data.train``, ``data.validation``) is validated first, before anything is
        uploaded or created (dry runs too); ``skip_validation=True`` skips that. On SageMaker the
        memory plan runs next (:meth:`plan`): instance type ``auto`` becomes the recommended one,
        and a job that will not fit its instance raises
        :class:`~ftcloud.planning.plan.PlanError` with the options, unless ``force=True``."""
        spec = self.build_spec(spec, config=config, set_values=set_values, **overrides)
        if not skip_validation:
            self.validate_launch_data(spec)
        backend = self.backend(spec=spec)
        plan_notes: list[str] = []
        if backend.name == "sagemaker":
            from ftcloud.planning.plan import guard_launch

            plan_notes = guard_launch(spec, force=force)
        result = backend.launch(spec, dry_run=dry_run)
        result.notes[:0] = plan_notes
        return Job(result.name, backend, result)

    def plan(
        self,
        spec: JobSpec | None = None,
        *,
        config: str | os.PathLike | None = None,
        set_values: list[str] | tuple[str, ...] | None = None,
        dataset_tokens: int | None = None,
        **overrides: Any,
    ) -> Any:
        """The :class:`~ftcloud.planning.plan.Plan` of a job (same spec as :meth:`launch`): memory per
        GPU, the cheapest instance that fits, alternatives, time and cost (estimates). Creates nothing.
        ``dataset_tokens``: tokens per epoch, for data the planner cannot read (s3://)."""
        from ftcloud.planning.plan import make_plan

        spec = self.build_spec(spec, config=config, set_values=set_values, **overrides)
        return make_plan(spec, dataset_tokens_override=dataset_tokens)

    def validate_launch_data(self, spec: JobSpec) -> None:
        """Raise :class:`~ftcloud_train.datasource.DataError` listing the problems of the spec's local
        data channels (S3 data is read, and checked, by the job itself; a missing path is left to
        the backend, which names the spec field)."""
        from pathlib import Path

        from ftcloud_train.datasource import DataError

        for channel in ("train", "validation"):
            path = getattr(spec.data, channel)
            if not path or path.startswith("s3://") or not Path(path).expanduser().exists():
                continue
            report = validate_data([path], fmt=spec.training.data_format)
            if not report.ok:
                raise DataError(
                    f"data.{channel}: {path} is not valid training data; nothing was uploaded or created "
                    f"(check it with 'ftcloud data validate {path}'; --skip-validation launches anyway).\n"
                    + report.message(),
                    report.problems,
                )

    def job(self, name: str) -> Job:
        return Job(name, self.backend_for_job(name))

    def status(self, name: str) -> JobStatus:
        return self.backend_for_job(name).status(name)

    def jobs(self, limit: int = 20) -> list[JobStatus]:
        return self.backend().list_jobs(limit)

    def logs(self, name: str, *, follow: bool = False, cursor: LogCursor | None = None, poll: float | None = None) -> Iterator[LogEvent]:
        return self.backend_for_job(name).logs(name, follow=follow, cursor=cursor, poll=poll)

    def stop(self, name: str) -> JobStatus:
        return self.backend_for_job(name).stop(name)

    def resume(self, name: str) -> JobStatus:
        return self.backend_for_job(name).resume(name)

    def wait(self, name: str, **kwargs: Any) -> JobStatus:
        return self.backend_for_job(name).wait(name, **kwargs)

    # ------------------------------------------------------------------ model registry
    def registry(self, backend: str | None = None) -> Any:
        """The model registry (:class:`~ftcloud.registry.base.Registry`) of ``backend``
        (default: the client's backend): local records, or SageMaker model package groups."""
        name = backend or self.default_backend_name()
        if name == "local":
            from ftcloud.registry.local import LocalRegistry

            return LocalRegistry()
        from ftcloud.registry.sagemaker import SageMakerRegistry

        return SageMakerRegistry(self.backend(name))

    def registry_for_ref(self, ref: str) -> Any:
        """The registry a reference lives in: SageMaker for a package ARN, else the client's backend's."""
        from ftcloud.registry.base import parse_ref

        return self.registry("sagemaker" if parse_ref(ref).arn else None)

    def register(self, job: Any = None, group: str | None = None, *, description: str | None = None,
                 tags: Mapping[str, str] | None = None, image: str | None = None,
                 from_tuning: str | None = None) -> Any:
        """Register a Completed job (name, :class:`Job` or :class:`JobStatus`) as a new model version,
        PendingManualApproval, in the registry of the backend that ran it; or, with ``from_tuning``,
        the best trial of that tuning. Returns the :class:`~ftcloud.registry.base.ModelVersion`."""
        if (job is None) == (from_tuning is None):
            raise UsageError("register needs a job or from_tuning=TUNE (one of the two).")
        if from_tuning is not None:
            tuner = self.tuner_for(from_tuning)
            name = best_trial_name(tuner.status(from_tuning))
            backend = self.backend(tuner.name)
        else:
            name = job if isinstance(job, str) else job.name
            backend = self.backend_for_job(name)
        return self.registry(backend.name).register(
            backend.status(name), group, description=description, tags=dict(tags or {}), image=image
        )

    def approve(self, ref: str, reason: str | None = None) -> Any:
        """Approve a version (``ARN``, ``GROUP:VERSION`` or ``GROUP`` = its latest)."""
        return self.registry_for_ref(ref).approve(ref, reason)

    def reject(self, ref: str, reason: str) -> Any:
        """Reject a version; ``reason`` is required and kept with it."""
        return self.registry_for_ref(ref).reject(ref, reason)

    def versions(self, group: str | None = None) -> list[Any]:
        """Every version of ``group`` (default: the backend's default group), oldest first."""
        return self.registry().versions(group)

    def model_version(self, ref: str, *, status: str | None = None) -> Any:
        """The version ``ref`` names (for ``GROUP`` its latest, or its latest in ``status``)."""
        return self.registry_for_ref(ref).get(ref, status=status)

    # ------------------------------------------------------------------ endpoints
    def endpoints_backend(self, name: str | None = None) -> Any:
        """The :class:`~ftcloud.endpoints.base.Endpoints` of backend ``name`` (default: the client's)."""
        name = name or self.default_backend_name()
        if name == "local":
            from ftcloud.endpoints.local import LocalEndpoints

            return LocalEndpoints(jobs=self.backend("local"), registry=self.registry("local"))
        from ftcloud.endpoints.sagemaker import SageMakerEndpoints

        jobs = self.backend(name)
        return SageMakerEndpoints(jobs.aws, jobs.stack, self.config, jobs=jobs,  # type: ignore[attr-defined]
                                  registry=self.registry(name))

    def _endpoints_for(self, endpoint: str | None = None, target: str | None = None) -> Any:
        """Explicit backend; else local when the local store has the endpoint (or the target job)."""
        if self.explicit_backend:
            return self.endpoints_backend(self.explicit_backend)
        local = self.endpoints_backend("local")
        if (endpoint and local.has_endpoint(endpoint)) or (target and self.backend("local").has_job(target)):
            return local
        return self.endpoints_backend()

    def deploy(self, target: str, name: str | None = None, *, wait: bool = True, timeout: float | None = None,
               progress: Callable[[str], None] | None = None, dry_run: bool = False, **options: Any) -> Any:
        """Serve ``target`` (training job name, ``GROUP:VERSION``, ``GROUP`` or package ARN) as endpoint
        ``name``; returns its :class:`~ftcloud.endpoints.base.EndpointStatus`. Registry versions must be
        Approved. ``options``: :class:`~ftcloud.endpoints.sagemaker.DeployOptions` fields on SageMaker
        (instance_type, serverless_memory, max_capacity, strategy, image, env, ...), ``env`` locally."""
        return self._endpoints_for(target=target).deploy(
            target, name, wait=wait, timeout=timeout, progress=progress, dry_run=dry_run, **options
        )

    def undeploy(self, endpoint: str) -> Any:
        """Stop serving ``endpoint`` and delete what deploy created (never the job or registry entry)."""
        return self._endpoints_for(endpoint).undeploy(endpoint)

    def endpoints(self) -> list[Any]:
        """Endpoints of the selected backend with their live state."""
        return self.endpoints_backend().list()

    def endpoint(self, endpoint: str) -> Any:
        return self._endpoints_for(endpoint).describe(endpoint)

    def invoke(self, endpoint: str, prompt: str | list[str] | None = None, *,
               messages: list[dict[str, Any]] | None = None, parameters: Mapping[str, Any] | None = None,
               adapter: str | None = None, stream: bool = False, payload: dict[str, Any] | None = None) -> Any:
        """Ask ``endpoint``: a prompt (TGI shape) or chat ``messages``, or a ready ``payload``. Returns the
        parsed response (``[{"generated_text": ...}]`` or a chat completion), or with ``stream`` an
        iterator of text pieces. ``ftcloud.endpoints.generated_text(response)`` extracts the text."""
        from ftcloud.endpoints.base import build_payload

        if payload is None:
            payload = build_payload(prompt, messages=messages, parameters=dict(parameters or {}), stream=stream)
        return self._endpoints_for(endpoint).invoke(endpoint, payload, adapter=adapter, stream=stream)

    # ------------------------------------------------------------------ tuning
    def tuner(self, backend: str | None = None) -> Any:
        """The :class:`~ftcloud.tuning.base.Tuner` of ``backend`` (default: the client's): Optuna over
        the local backend, or SageMaker Automatic Model Tuning."""
        name = backend or self.default_backend_name()
        if name == "local":
            from ftcloud.tuning.local import LocalTuner

            return LocalTuner(backend=self.backend("local"))
        from ftcloud.tuning.sagemaker import SageMakerTuner

        return SageMakerTuner(self.backend(name))

    def tuner_for(self, tuning: str) -> Any:
        """Explicit backend; else the local tuner if it knows ``tuning``; else the default backend's."""
        if self.explicit_backend:
            return self.tuner(self.explicit_backend)
        from ftcloud.tuning.base import TuningNotFoundError

        if self.default_backend_name() != "local":
            try:
                local = self.tuner("local")
                local.status(tuning)
                return local
            except (ImportError, TuningNotFoundError):
                pass
        return self.tuner()

    def build_tuning(self, spec: JobSpec, tuning: Any = None, **tuning_kwargs: Any) -> Any:
        """The validated :class:`~ftcloud.tuning.base.TuningSpec` for ``spec``: its ``tune:`` section,
        then ``tuning`` (a TuningSpec or a ``tune:``-shaped mapping), then keyword arguments
        (:data:`ftcloud.tuning.space.TUNING_KWARGS`: params, strategy, max_trials, ...)."""
        from ftcloud.tuning.base import TuningSpec
        from ftcloud.tuning.space import new_tuning_name, parse_tuning, tuning_from_kwargs, validate_tuning

        current = spec.tune
        if isinstance(tuning, TuningSpec):
            current = tuning
        elif tuning is not None:
            current = parse_tuning(tuning, "tuning", {}, base=current)
        current = tuning_from_kwargs(tuning_kwargs, base=current) or TuningSpec()
        if not spec.name:
            spec.name = new_tuning_name()  # short enough for SageMaker's 32-character tuning names
        spec.tune = current
        return validate_tuning(current, spec)

    def tune(
        self,
        spec: JobSpec | None = None,
        *,
        config: str | os.PathLike | None = None,
        set_values: list[str] | tuple[str, ...] | None = None,
        tuning: Any = None,
        dry_run: bool = False,
        skip_validation: bool = False,
        force: bool = False,
        **kwargs: Any,
    ) -> Tuning:
        """Start a tuning of the job (file, spec or flat keys, as :meth:`launch`) and return its
        :class:`Tuning` at once. Tuning keywords (``params``, ``strategy``, ``max_trials``,
        ``max_parallel``, ``objective``, ``goal``, ``early_stopping``, ``tune_seed``, ...) are split
        from the job's keys. ``dry_run`` plans only: ``launch_result.request`` is the exact request.
        The checks of :meth:`launch` run first (local data, then on SageMaker the memory plan of the
        job's own values), so a bad file stops the tuning, not each of its trials."""
        from ftcloud.tuning.space import TUNING_KWARGS

        tuning_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in TUNING_KWARGS}
        spec = self.build_spec(spec, config=config, set_values=set_values, **kwargs)
        settings = self.build_tuning(spec, tuning, **tuning_kwargs)
        if not skip_validation:
            self.validate_launch_data(spec)
        tuner = self.tuner(self.default_backend_name(spec))
        plan_notes: list[str] = []
        if tuner.name == "sagemaker":
            from ftcloud.planning.plan import guard_launch

            plan_notes = guard_launch(spec, force=force)
        result = tuner.launch(spec, settings, dry_run=dry_run)
        result.notes[:0] = plan_notes
        return Tuning(result.name, tuner, result)

    def get_tuning(self, name: str) -> Tuning:
        return Tuning(name, self.tuner_for(name))

    def tuning(self, name: str) -> Any:
        """The :class:`~ftcloud.tuning.base.TuningStatus` of ``name`` with every trial."""
        return self.tuner_for(name).status(name)

    def tunings(self, limit: int = 20) -> list[Any]:
        return self.tuner().list_tunings(limit)

    def stop_tuning(self, name: str) -> Any:
        return self.tuner_for(name).stop(name)

    # ------------------------------------------------------------------ data preparation
    def prepare_data(self, sources: Any, out: str | os.PathLike | None = None, *, options: Any = None,
                     fmt: str = "auto", file_format: str = "auto", query: str | None = None,
                     table: str | None = None, dry_run: bool = False, wait: bool = True, settings: Any = None,
                     log: Callable[[str], None] | None = None, **option_values: Any) -> Any:
        """Clean, de-duplicate, split, augment and balance ``sources`` into ``out`` with a data card.

        Runs locally unless the client's backend is explicitly ``sagemaker``: then a Processing job
        (``settings``: :class:`~ftcloud.dataprep.processing.ProcessingSettings`; ``out`` an s3:// URI
        or default). ``options`` is a :class:`~ftcloud_train.prepare.PrepareOptions`, or pass its
        fields as keywords (``glossary=["medical"], near_dedup=True``). Returns a
        :class:`~ftcloud_train.prepare.pipeline.PrepareResult` (local) or a
        :class:`~ftcloud.dataprep.processing.ProcessingResult`."""
        from ftcloud_train.prepare.options import PrepareOptions

        if options is not None and option_values:
            raise UsageError("pass either options= or option keywords, not both.")
        opts = options if options is not None else PrepareOptions.from_dict(option_values)
        srcs = [os.fspath(s) for s in ([sources] if isinstance(sources, str | os.PathLike) else sources)]
        if self.explicit_backend == "sagemaker":
            from ftcloud.dataprep import processing

            return processing.run(self.backend("sagemaker"), srcs, opts, settings=settings, fmt=fmt,
                                  output_uri=os.fspath(out) if out else None, dry_run=dry_run, wait=wait)
        if out is None:
            raise UsageError("no output directory: pass out= (--out DIR).")
        from ftcloud_train.prepare.pipeline import prepare

        return prepare(srcs, out, opts, fmt=fmt, file_format=file_format, query=query, table=table,
                       log=log, dry_run=dry_run)

    # ------------------------------------------------------------------ platform
    def platform(self, *, refresh: bool = True) -> Any:
        """The platform stack's outputs (a :class:`~ftcloud.platform.Platform`)."""
        backend = self.backend("sagemaker")
        return backend.platform(refresh=refresh)  # type: ignore[attr-defined]

    def use_platform(self, stack: str) -> Any:
        """Make ``stack`` (or ``"local"``) the default for later commands; saved in the user config."""
        if stack == "local":
            self.config.backend = "local"
            self.config.save()
            return None
        self.stack = stack
        found = self.platform(refresh=True)
        self.config.backend = "sagemaker"
        self.config.stack = stack
        if self.region:
            self.config.region = self.region
        if self.profile:
            self.config.profile = self.profile
        from ftcloud.platform import cache_entry

        self.config.platform_cache = cache_entry(found)
        self.config.save()
        return found

    def context_line(self, backend: Backend) -> str:
        """``backend: sagemaker  platform: stack X (profile p, eu-west-1)`` for the header."""
        return f"backend: {backend.name} · {backend.describe_target()}"


# ---------------------------------------------------------------------- module-level shortcuts
def _client(kwargs: dict[str, Any]) -> Client:
    return Client(
        kwargs.pop("backend", None),
        profile=kwargs.pop("profile", None),
        region=kwargs.pop("region", None),
        stack=kwargs.pop("stack", None),
    )


def launch(
    spec: JobSpec | None = None,
    *,
    config: str | os.PathLike | None = None,
    set_values: list[str] | tuple[str, ...] | None = None,
    wait: bool = False,
    dry_run: bool = False,
    skip_validation: bool = False,
    force: bool = False,
    **kwargs: Any,
) -> Job:
    """Launch a fine-tuning job. Keyword arguments are flat spec keys (``technique``, ``model``,
    ``data``, ``lora_r``, ``instance_type``, ``spot``, ...) plus ``backend``, ``profile``,
    ``region``, ``stack``. With ``wait=True`` it blocks until the job ends. Local data is
    validated first (:func:`validate_data`) unless ``skip_validation``; on SageMaker a job that
    the plan says will not fit its instance is refused unless ``force``."""
    client = _client(kwargs)
    job = client.launch(spec, config=config, set_values=set_values, dry_run=dry_run,
                        skip_validation=skip_validation, force=force, **kwargs)
    if wait and not dry_run:
        job.wait()
    return job


def plan(spec: JobSpec | None = None, *, config: str | os.PathLike | None = None,
         set_values: list[str] | tuple[str, ...] | None = None, dataset_tokens: int | None = None,
         **kwargs: Any) -> Any:
    """Plan a job before launching it (memory, instance, time, cost); see :meth:`Client.plan`."""
    return _client(kwargs).plan(spec, config=config, set_values=set_values, dataset_tokens=dataset_tokens, **kwargs)


def status(name: str, **kwargs: Any) -> JobStatus:
    return _client(kwargs).status(name)


def jobs(limit: int = 20, **kwargs: Any) -> list[JobStatus]:
    return _client(kwargs).jobs(limit)


def logs(name: str, *, follow: bool = False, cursor: LogCursor | None = None, **kwargs: Any) -> Iterator[LogEvent]:
    return _client(kwargs).logs(name, follow=follow, cursor=cursor)


def stop(name: str, **kwargs: Any) -> JobStatus:
    return _client(kwargs).stop(name)


def resume(name: str, **kwargs: Any) -> JobStatus:
    """Resume a stopped or failed local job from its newest complete checkpoint."""
    return _client(kwargs).resume(name)


def get_job(name: str, **kwargs: Any) -> Job:
    """A handle on an existing job (looked up like `status`)."""
    return _client(kwargs).job(name)


def load_job(path: str | os.PathLike, **overrides: Any) -> JobSpec:
    """Read and validate a job YAML file (flat ``overrides`` win over the file)."""
    return build_job_spec(config=path, overrides=overrides)


def spec_from(values: Mapping[str, Any]) -> JobSpec:
    """A validated :class:`JobSpec` from a nested mapping (the YAML layout)."""
    return JobSpec.from_dict(values).validate()


def register(job: Any = None, group: str | None = None, *, description: str | None = None,
             tags: Mapping[str, str] | None = None, image: str | None = None, from_tuning: str | None = None,
             **kwargs: Any) -> Any:
    """Register a Completed job, or the best trial of ``from_tuning``, as a model version
    (PendingManualApproval); see :meth:`Client.register`."""
    return _client(kwargs).register(job, group, description=description, tags=tags, image=image,
                                    from_tuning=from_tuning)


def approve(ref: str, reason: str | None = None, **kwargs: Any) -> Any:
    """Approve a model version: ``ARN``, ``GROUP:VERSION`` or ``GROUP`` (its latest)."""
    return _client(kwargs).approve(ref, reason)


def reject(ref: str, reason: str, **kwargs: Any) -> Any:
    """Reject a model version with a reason."""
    return _client(kwargs).reject(ref, reason)


def versions(group: str | None = None, **kwargs: Any) -> list[Any]:
    """Every version of a model group, oldest first."""
    return _client(kwargs).versions(group)


def model_version(ref: str, *, status: str | None = None, **kwargs: Any) -> Any:
    """One model version by reference (``status="Approved"`` with ``GROUP``: its latest approved)."""
    return _client(kwargs).model_version(ref, status=status)


def deploy(target: str, name: str | None = None, *, wait: bool = True, dry_run: bool = False, **kwargs: Any) -> Any:
    """Deploy a job, ``GROUP:VERSION``, ``GROUP`` or package ARN as an endpoint; see :meth:`Client.deploy`."""
    client = _client(kwargs)
    return client.deploy(target, name, wait=wait, dry_run=dry_run, **kwargs)


def undeploy(endpoint: str, **kwargs: Any) -> Any:
    """Delete an endpoint and what deploy created for it (never the job or the registry entry)."""
    return _client(kwargs).undeploy(endpoint)


def list_endpoints(**kwargs: Any) -> list[Any]:
    """Endpoints of the selected backend with their live state. (Not ``ftcloud.endpoints``: that
    name is the :mod:`ftcloud.endpoints` package.)"""
    return _client(kwargs).endpoints()


def invoke(endpoint: str, prompt: str | list[str] | None = None, **kwargs: Any) -> Any:
    """Ask an endpoint; see :meth:`Client.invoke` (messages=, parameters=, adapter=, stream=, payload=)."""
    client = _client(kwargs)
    return client.invoke(endpoint, prompt, **kwargs)


def best_trial_name(status: Any) -> str:
    """The training job of ``status``'s best trial; a clear error when no trial has completed."""
    best = status.best
    if best is None or best.status != "Completed":
        counts = ", ".join(f"{n} {s}" for s, n in sorted(status.counts().items())) or "no trials yet"
        raise UsageError(
            f"Tuning {status.name} has no completed trial with an objective value ({counts}).",
            hint=f"Wait for it ('ftcloud tuning {status.name}') or register a job by name.",
        )
    return best.name


def tune(
    spec: JobSpec | None = None,
    *,
    config: str | os.PathLike | None = None,
    set_values: list[str] | tuple[str, ...] | None = None,
    tuning: Any = None,
    wait: bool = False,
    dry_run: bool = False,
    **kwargs: Any,
) -> Tuning:
    """Start a hyperparameter tuning; returns a :class:`Tuning` (``.status()``, ``.trials``, ``.best``,
    ``.wait()``, ``.stop()``). Keyword arguments: the job's flat keys (as :func:`launch`) plus
    ``params=["learning_rate=1e-5:1e-3:log", "lora_r=8,16,32"]``, ``strategy``, ``max_trials``,
    ``max_parallel``, ``objective``, ``goal``, ``early_stopping``, ``tune_seed``, ``max_tuning_runtime``,
    ``target``, ``warm_start_from``, ``resource``/``min_resource``/``max_resource`` (see docs/tuning.md)."""
    client = _client(kwargs)
    handle = client.tune(spec, config=config, set_values=set_values, tuning=tuning, dry_run=dry_run, **kwargs)
    if wait and not dry_run:
        handle.wait()
    return handle


def get_tuning(name: str, **kwargs: Any) -> Tuning:
    """A handle on an existing tuning."""
    return _client(kwargs).get_tuning(name)


def tuning_status(name: str, **kwargs: Any) -> Any:
    """A tuning's status with every trial and the best one. (Not ``ftcloud.tuning``: that name is the
    :mod:`ftcloud.tuning` package.)"""
    return _client(kwargs).tuning(name)


def tunings(limit: int = 20, **kwargs: Any) -> list[Any]:
    """Recent tunings of the selected backend, newest first."""
    return _client(kwargs).tunings(limit)


def stop_tuning(name: str, **kwargs: Any) -> Any:
    """Stop a tuning and its running trials."""
    return _client(kwargs).stop_tuning(name)


def prepare_data(sources: Any, out: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """Prepare a data set (clean, dedup, split, augment, balance, data card); see :meth:`Client.prepare_data`.
    ``backend="sagemaker"`` runs it as a Processing job."""
    client = _client(kwargs)
    return client.prepare_data(sources, out, **kwargs)


# ---------------------------------------------------------------------- data
def validate_data(
    sources: str | os.PathLike | list[str | os.PathLike],
    *,
    fmt: str = "auto",
    max_problems: int = 20,
    max_chars: int | None = None,
    query: str | None = None,
    table: str | None = None,
) -> Any:
    """Read every row of ``sources`` (files, directories, ``s3://``, ``http(s)://``, SQLAlchemy URLs
    with ``query``/``table``) and return a :class:`~ftcloud_train.datasource.ValidationReport`:
    ``ok``, ``format``, ``rows``, and ``problems`` with file:line, field, message and fix."""
    from ftcloud_train import datasource

    return datasource.validate(sources, fmt=fmt, max_problems=max_problems,
                               max_chars=max_chars or datasource.MAX_ROW_CHARS, query=query, table=table)


def data_stats(
    sources: str | os.PathLike | list[str | os.PathLike],
    *,
    fmt: str = "auto",
    tokenizer: Any = None,
    max_length: int | None = None,
    overlength: str | None = None,
    bins: int = 20,
    query: str | None = None,
    table: str | None = None,
) -> Any:
    """Counts, labels and length distribution of ``sources`` (a :class:`~ftcloud.datastats.DataStats`).
    ``tokenizer``: a Hugging Face id, a local path or a loaded tokenizer (lengths in tokens, exactly
    as training tokenizes), or None (characters). Also what ``max_length``/``overlength`` will do."""
    from ftcloud import datastats

    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = datastats.load_tokenizer(os.fspath(tokenizer))
    return datastats.compute_stats(sources, fmt=fmt, tokenizer=tokenizer, max_length=max_length,
                                   overlength=overlength, bins=bins, query=query, table=table)
