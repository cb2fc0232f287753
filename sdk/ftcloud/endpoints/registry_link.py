"""Where endpoints meet the model registry: resolving a deploy target to an approved version.

Kept in one small module so the registry's construction (its own module, :mod:`ftcloud.registry`)
is wired in one place. Only Approved versions deploy, locally and on SageMaker.
"""

from __future__ import annotations

from typing import Any


def approved_version(registry: Any, ref: str, *, job_checked: bool = False) -> Any:
    """The :class:`~ftcloud.registry.base.ModelVersion` ``ref`` names (GROUP:VERSION, GROUP = its
    newest Approved version, or a package ARN); refuses one that is not Approved.

    ``job_checked``: ``ref`` was looked up as a training job first and is none, which the error says."""
    from ftcloud.errors import UsageError
    from ftcloud.registry.base import APPROVED, ModelVersionNotFoundError

    try:
        return registry.get(ref, status=APPROVED)
    except ModelVersionNotFoundError as exc:
        if not job_checked:
            raise
        raise UsageError(
            f"'{ref}' is not a {registry.name} training job, and as a model group: {exc.message}",
            hint=exc.hint or "List jobs with 'ftcloud jobs' and versions with 'ftcloud versions GROUP'.",
        ) from None


def local_registry() -> Any:
    from ftcloud.registry.local import LocalRegistry

    return LocalRegistry()


def sagemaker_registry(backend: Any) -> Any:
    """The SageMaker registry over a :class:`~ftcloud.backends.sagemaker.SageMakerBackend`."""
    from ftcloud.registry.sagemaker import SageMakerRegistry

    return SageMakerRegistry(backend)
