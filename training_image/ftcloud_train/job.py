"""What SageMaker (or the local backend) hands the container: spec, hosts, channels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ftcloud.contract import CHANNELS, ContainerPaths
from ftcloud.spec import TrainingSpec

#: Keys SageMaker itself may add to hyperparameters.json (HPO adds the objective metric).
IGNORED_HYPERPARAMETERS = ("sagemaker_*", "_*")


class UserError(Exception):
    """A problem the user fixes (bad hyperparameter, bad data, missing model); no traceback."""


@dataclass
class JobContext:
    paths: ContainerPaths
    spec: TrainingSpec
    hosts: list[str]
    current_host: str

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
    from ftcloud.spec import SpecError

    raw = _read_json(paths.hyperparameters, "hyperparameters")
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
    return JobContext(paths=paths, spec=spec, hosts=hosts, current_host=current)
