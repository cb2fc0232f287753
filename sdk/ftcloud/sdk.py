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
    ) -> JobStatus:
        """Block until Completed, Failed or Stopped; returns the final status (does not raise on Failed).

        ``on_update(status)`` runs on every status change, ``on_log(event)`` on every new log line."""
        return self.backend.wait(self.name, poll=poll, timeout=timeout, on_update=on_update, on_log=on_log)

    def logs(self, *, follow: bool = False, cursor: LogCursor | None = None, poll: float | None = None) -> Iterator[LogEvent]:
        return self.backend.logs(self.name, follow=follow, cursor=cursor, poll=poll)

    def stop(self) -> JobStatus:
        return self.backend.stop(self.name)


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
        **overrides: Any,
    ) -> Job:
        """Launch a job (returns at once; call :meth:`Job.wait`). ``dry_run`` only plans it:
        ``job.launch_result.request`` holds the exact request and nothing is created."""
        spec = self.build_spec(spec, config=config, set_values=set_values, **overrides)
        backend = self.backend(spec=spec)
        result = backend.launch(spec, dry_run=dry_run)
        return Job(result.name, backend, result)

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

    def register(self, job: Any, group: str | None = None, *, description: str | None = None,
                 tags: Mapping[str, str] | None = None, image: str | None = None) -> Any:
        """Register a Completed job (name, :class:`Job` or :class:`JobStatus`) as a new model version,
        PendingManualApproval, in the registry of the backend that ran it. Returns the
        :class:`~ftcloud.registry.base.ModelVersion`."""
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
    **kwargs: Any,
) -> Job:
    """Launch a fine-tuning job. Keyword arguments are flat spec keys (``technique``, ``model``,
    ``data``, ``lora_r``, ``instance_type``, ``spot``, ...) plus ``backend``, ``profile``,
    ``region``, ``stack``. With ``wait=True`` it blocks until the job ends."""
    client = _client(kwargs)
    job = client.launch(spec, config=config, set_values=set_values, dry_run=dry_run, **kwargs)
    if wait and not dry_run:
        job.wait()
    return job


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


def register(job: Any, group: str | None = None, *, description: str | None = None,
             tags: Mapping[str, str] | None = None, image: str | None = None, **kwargs: Any) -> Any:
    """Register a Completed job as a model version (PendingManualApproval); see :meth:`Client.register`."""
    return _client(kwargs).register(job, group, description=description, tags=tags, image=image)


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
