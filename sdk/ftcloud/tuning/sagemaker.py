"""SageMaker Automatic Model Tuning with plain boto3: CreateHyperParameterTuningJob and friends.

:func:`tuning_request` is a pure function from the CreateTrainingJob request that
:class:`~ftcloud.backends.sagemaker.SageMakerBackend` builds for a normal launch (the same
uploads, image, role, KMS keys, VPC, network isolation, inter-container encryption, spot with
MaxWait and checkpoints, retry strategy, environment and tags) to the tuning request. Every key of
that request is carried into the training job definition or mapped explicitly; a key it does not
know stops the launch rather than being dropped (the SageMaker Python SDK's HyperparameterTuner
drops network isolation, inter-container encryption and the volume KMS key).
"""

from __future__ import annotations

from typing import Any

from ftcloud.errors import FtcloudError, LaunchError
from ftcloud.tuning.base import (
    Objective,
    Trial,
    Tuner,
    TuningLaunchResult,
    TuningNotFoundError,
    TuningSpec,
    TuningStatus,
)
from ftcloud.tuning.space import from_wire, to_wire, validate_tuning

STRATEGY_TO_SAGEMAKER = {"bayesian": "Bayesian", "random": "Random", "grid": "Grid", "hyperband": "Hyperband"}
SCALING_TO_SAGEMAKER = {"auto": "Auto", "linear": "Linear", "logarithmic": "Logarithmic",
                        "reverse_logarithmic": "ReverseLogarithmic"}
GOAL_TO_SAGEMAKER = {"minimize": "Minimize", "maximize": "Maximize"}

#: CreateTrainingJob keys carried unchanged into HyperParameterTrainingJobDefinition.
CARRIED_KEYS = (
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "VpcConfig",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
)
#: CreateTrainingJob keys mapped elsewhere: the name becomes the tuning's, hyperparameters split into
#: static and ranged, tags go on the tuning job, the algorithm spec is trimmed below.
MAPPED_KEYS = ("TrainingJobName", "HyperParameters", "Tags", "AlgorithmSpecification")
#: AlgorithmSpecification keys HyperParameterAlgorithmSpecification accepts.
ALGORITHM_KEYS = ("TrainingImage", "TrainingInputMode", "AlgorithmName", "MetricDefinitions")
#: ...and the ones it has no place for (SageMaker keeps tuning metrics itself).
ALGORITHM_DROPPED = ("EnableSageMakerMetricsTimeSeries",)


def tuning_request(training: dict[str, Any], tuning: TuningSpec, name: str) -> dict[str, Any]:
    """The exact CreateHyperParameterTuningJob request for ``tuning`` over the job whose
    CreateTrainingJob request is ``training``."""
    unknown = sorted(set(training) - set(CARRIED_KEYS) - set(MAPPED_KEYS))
    algorithm = training["AlgorithmSpecification"]
    unknown += sorted(f"AlgorithmSpecification.{k}" for k in set(algorithm) - set(ALGORITHM_KEYS) - set(ALGORITHM_DROPPED))
    if unknown:
        # A new launch setting must be carried on purpose, never lost on the way to the trials.
        raise FtcloudError(
            f"ftcloud does not know how to carry {', '.join(unknown)} into a tuning's training jobs.",
            hint="Report this as a bug; until then, launch single jobs with 'ftcloud launch'.",
        )
    metrics = algorithm.get("MetricDefinitions", [])
    if tuning.objective.metric not in {m["Name"] for m in metrics}:
        raise FtcloudError(f"objective metric {tuning.objective.metric!r} has no MetricDefinition in the request.")
    ranged = {p.name for p in tuning.parameters}
    definition: dict[str, Any] = {
        "StaticHyperParameters": {k: v for k, v in training["HyperParameters"].items() if k not in ranged},
        "AlgorithmSpecification": {k: v for k, v in algorithm.items() if k in ALGORITHM_KEYS},
    }
    definition.update({k: training[k] for k in CARRIED_KEYS if k in training})

    ranges: dict[str, list[dict[str, Any]]] = {
        "IntegerParameterRanges": [],
        "ContinuousParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for p in tuning.parameters:
        if p.kind == "categorical":
            ranges["CategoricalParameterRanges"].append({"Name": p.name, "Values": [to_wire(v) for v in p.values]})
        else:
            key = "IntegerParameterRanges" if p.kind == "integer" else "ContinuousParameterRanges"
            low, high = (int(p.low), int(p.high)) if p.kind == "integer" else (p.low, p.high)
            ranges[key].append({"Name": p.name, "MinValue": to_wire(low), "MaxValue": to_wire(high),
                                "ScalingType": SCALING_TO_SAGEMAKER[p.scaling]})

    limits: dict[str, int] = {"MaxParallelTrainingJobs": tuning.max_parallel}
    if tuning.strategy != "grid":  # grid runs every combination; SageMaker counts them itself
        limits["MaxNumberOfTrainingJobs"] = tuning.max_trials
    if tuning.max_runtime is not None:
        limits["MaxRuntimeInSeconds"] = tuning.max_runtime
    config: dict[str, Any] = {
        "Strategy": STRATEGY_TO_SAGEMAKER[tuning.strategy],
        "HyperParameterTuningJobObjective": {
            "Type": GOAL_TO_SAGEMAKER[tuning.objective.goal],
            "MetricName": tuning.objective.metric,
        },
        "ResourceLimits": limits,
        "ParameterRanges": {k: v for k, v in ranges.items() if v},
        "TrainingJobEarlyStoppingType": "Auto" if tuning.early_stopping == "auto" else "Off",
    }
    if tuning.seed is not None:
        config["RandomSeed"] = tuning.seed
    if tuning.strategy == "hyperband":
        config["StrategyConfig"] = {
            "HyperbandStrategyConfig": {"MinResource": tuning.min_resource, "MaxResource": tuning.max_resource}
        }
    if tuning.target is not None:
        config["TuningJobCompletionCriteria"] = {"TargetObjectiveMetricValue": tuning.target}
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
    }
    if tuning.warm_start_from:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": n} for n in tuning.warm_start_from],
            "WarmStartType": tuning.warm_start_type,
        }
    if training.get("Tags"):
        request["Tags"] = list(training["Tags"])
    return request


class SageMakerTuner(Tuner):
    """Tunings as SageMaker hyperparameter tuning jobs; trials are its training jobs."""

    name = "sagemaker"

    def __init__(self, backend: Any):
        self.backend = backend  # a SageMakerBackend: its AWS context, platform and launch plan

    @property
    def sm(self) -> Any:
        return self.backend.sm

    @property
    def aws(self) -> Any:
        return self.backend.aws

    def describe_target(self) -> str:
        return self.backend.describe_target()

    # ------------------------------------------------------------------ launch
    def launch(self, job: Any, tuning: TuningSpec, *, dry_run: bool = False) -> TuningLaunchResult:
        if not job.name:
            from ftcloud.tuning.space import new_tuning_name

            job.name = new_tuning_name()
        validate_tuning(tuning, job)
        launch, plans, resolved = self.backend.plan_launch(job, dry_run=dry_run)
        request = tuning_request(launch.request, tuning, job.name)
        result = TuningLaunchResult(name=job.name, backend=self.name, dry_run=dry_run, request=request,
                                    notes=list(launch.notes))
        if dry_run:
            return result
        self.backend.upload_inputs(plans, resolved, launch)
        try:
            response = self.aws.call(
                self.sm.create_hyper_parameter_tuning_job,
                **request,
                error_context={"role_arn": resolved.role, "instance_type": job.compute.instance_type,
                               "spot": job.compute.spot},
            )
        except FtcloudError as exc:
            raise LaunchError(exc, launch.uploaded) from None
        result.location = response.get("HyperParameterTuningJobArn")
        return result

    # ------------------------------------------------------------------ status
    def _describe(self, name: str) -> dict[str, Any]:
        from ftcloud.adaptors import botocore_exceptions

        try:
            return self.sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        except botocore_exceptions.ClientError as exc:
            if _is_not_found(exc):
                raise self._not_found(name) from None
            raise self.aws.translate(exc) from None
        except botocore_exceptions.BotoCoreError as exc:
            raise self.aws.translate(exc) from None

    def _not_found(self, name: str) -> TuningNotFoundError:
        where = self.aws.describe()
        return TuningNotFoundError(
            f"No SageMaker tuning job named '{name}'{f' ({where})' if where else ''}.",
            hint="List them with 'ftcloud tunings --backend sagemaker' (check --region / --profile).",
        )

    def _trial_summaries(self, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
        while True:
            page = self.aws.call(self.sm.list_training_jobs_for_hyper_parameter_tuning_job, **kwargs)
            out += page.get("TrainingJobSummaries", [])
            if not page.get("NextToken"):
                return out
            kwargs["NextToken"] = page["NextToken"]

    def status(self, name: str) -> TuningStatus:
        d = self._describe(name)
        status = tuning_status_from_describe(d)
        stopped_by_user = status.status in ("Stopping", "Stopped")
        summaries = sorted(self._trial_summaries(name), key=lambda s: _ts(s.get("CreationTime")) or 0)
        status.trials = [trial_from_summary(s, i, stopped_by_user) for i, s in enumerate(summaries)]
        best = d.get("BestTrainingJob")
        if best:
            status.best = next((t for t in status.trials if t.name == best["TrainingJobName"]), None) \
                or trial_from_summary(best, None, stopped_by_user)
        return status

    def list_tunings(self, limit: int = 20) -> list[TuningStatus]:
        response = self.aws.call(self.sm.list_hyper_parameter_tuning_jobs, SortBy="CreationTime",
                                 SortOrder="Descending", MaxResults=max(1, min(limit, 100)))
        # The summaries lack the objective: one Describe each (a listing holds at most `limit`).
        return [tuning_status_from_describe(self._describe(s["HyperParameterTuningJobName"]))
                for s in response.get("HyperParameterTuningJobSummaries", [])[:limit]]

    def stop(self, name: str) -> TuningStatus:
        from ftcloud.adaptors import botocore_exceptions

        try:
            self.sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        except botocore_exceptions.ClientError as exc:
            if _is_not_found(exc):
                raise self._not_found(name) from None
            message = exc.response.get("Error", {}).get("Message", "")
            if "status" not in message.lower():  # "... is in status Completed": nothing left to stop
                raise self.aws.translate(exc) from None
        except botocore_exceptions.BotoCoreError as exc:
            raise self.aws.translate(exc) from None
        return self.status(name)


# ---------------------------------------------------------------------- mapping responses
def tuning_status_from_describe(d: dict[str, Any]) -> TuningStatus:
    """DescribeHyperParameterTuningJob -> :class:`TuningStatus` (without trials)."""
    config = d.get("HyperParameterTuningJobConfig", {}) or {}
    objective = config.get("HyperParameterTuningJobObjective") or {}
    limits = config.get("ResourceLimits") or {}
    strategies = {v: k for k, v in STRATEGY_TO_SAGEMAKER.items()}
    return TuningStatus(
        name=d["HyperParameterTuningJobName"],
        backend="sagemaker",
        status=d.get("HyperParameterTuningJobStatus", ""),
        strategy=strategies.get(config.get("Strategy", ""), str(config.get("Strategy", "")).lower()),
        objective=Objective(objective.get("MetricName", ""), str(objective.get("Type", "Minimize")).lower()),
        max_trials=limits.get("MaxNumberOfTrainingJobs"),
        max_parallel=limits.get("MaxParallelTrainingJobs"),
        created=_ts(d.get("CreationTime")),
        ended=_ts(d.get("HyperParameterTuningEndTime")),
        failure_reason=d.get("FailureReason"),
        location=d.get("HyperParameterTuningJobArn"),
    )


def trial_from_summary(s: dict[str, Any], number: int | None, stopped_by_user: bool) -> Trial:
    """A HyperParameterTrainingJobSummary -> :class:`Trial`. A trial Stopped while its tuning was not
    being stopped was stopped by the tuner (early stopping / Hyperband): it is reported as Pruned."""
    status = s.get("TrainingJobStatus", "")
    if status == "Stopped" and not stopped_by_user:
        status = "Pruned"
    final = s.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    tuned = s.get("TunedHyperParameters") or {}
    return Trial(
        name=s["TrainingJobName"],
        status=status,
        parameters={k: from_wire(k, v) for k, v in tuned.items()},
        objective=float(final["Value"]) if "Value" in final else None,
        metrics={final["MetricName"]: float(final["Value"])} if "Value" in final and "MetricName" in final else {},
        started=_ts(s.get("TrainingStartTime")),
        ended=_ts(s.get("TrainingEndTime")),
        failure_reason=s.get("FailureReason"),
        number=number,
    )


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _is_not_found(exc: Any) -> bool:
    from ftcloud.backends.sagemaker import _is_not_found as not_found

    return not_found(exc)
