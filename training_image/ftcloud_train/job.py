"""What SageMaker (or the local backend) hands the container: spec, hosts, channels."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ftcloud.contract import CHANNELS, ContainerPaths, trial_checkpoint_subdir
from ftcloud.spec import TrainingSpec

#: Shell-style patterns of keys that SageMaker and its SDKs add to hyperparameters.json: automatic
#: model tuning adds ``_tuning_objective_metric``; the SageMaker Python SDK adds ``sagemaker_program``,
#: ``sagemaker_region``, ``sagemaker_job_name``, ``sagemaker_container_log_level``... They are skipped
#: (and logged); any other unknown key is still refused, so a typo never trains with a default.
IGNORED_HYPERPARAMETERS = ("sagemaker_*", "_*")


class UserError(Exception):
    """A problem the user fixes (bad hyperparameter, bad data, missing model); no traceback."""


@dataclass
class JobContext:
    paths: ContainerPaths
    spec: TrainingSpec
    hosts: list[str]
    current_host: str
    #: ``resourceconfig.json`` as SageMaker wrote it (``current_instance_type``,
    #: ``network_interface_name``, ``instance_groups``...); empty when there is none.
    resource_config: dict = field(default_factory=dict)

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    def channel(self, name: str) -> Path | None:
        path = self.paths.channel(name)
        return path if path.is_dir() and any(path.iterdir()) else None


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON in {what} ({exc.msg}).") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object.")
    return data


def load_job(paths: ContainerPaths) -> JobContext:
    from ftcloud.spec import SpecError, matches_any

    raw = _read_json(paths.hyperparameters, "hyperparameters")
    subdir = trial_checkpoint_subdir(raw, dict(os.environ))
    if subdir and not paths.checkpoint_subdir:
        paths = dataclasses.replace(paths, checkpoint_subdir=subdir)
    ignored = sorted(k for k in raw if matches_any(k, IGNORED_HYPERPARAMETERS))
    if ignored:
        from ftcloud_train.report import log

        log(f"ignored hyperparameters added by SageMaker: {', '.join(ignored)}")
    try:
        spec = TrainingSpec.from_mapping(raw, source=str(paths.hyperparameters), ignore=IGNORED_HYPERPARAMETERS)
    except SpecError as exc:
        raise UserError(str(exc)) from None
    resources = _read_json(paths.resource_config, "resource config")
    hosts = list(resources.get("hosts") or ["algo-1"])
    current = resources.get("current_host") or hosts[0]
    if current not in hosts:
        raise UserError(f"{paths.resource_config}: current_host {current!r} is not in hosts {hosts}.")
    unknown = sorted(set(_read_json(paths.input_data_config, "input data config")) - set(CHANNELS))
    if unknown:
        raise UserError(
            f"{paths.input_data_config}: unknown channel(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(CHANNELS)} (train is required)."
        )
    return JobContext(paths=paths, spec=spec, hosts=hosts, current_host=current, resource_config=resources)
