"""GPU training as infrastructure: a Step Functions workflow train -> register -> notify.

A pipeline starts a fine-tuning run by starting an execution with input like::

    {
      "trainingJobName": "llama-sft-0042",                # job is named "<resourcePrefix>-llama-sft-0042"
      "channels": {"train": "s3://<dataset bucket>/sft/train/",
                   "validation": "s3://<dataset bucket>/sft/val/"},   # any of train/validation/model
      "hyperParameters": {"technique": "qlora", "model": "", "max_length": 2048},
      "instanceType": "ml.g5.2xlarge", "instanceCount": 1,              # optional, defaults from cdk.json
      "volumeSizeGb": 200, "maxRuntimeSeconds": 86400                   # optional
    }

The workflow runs the job with the ``.sync`` integration (it waits for the job), registers the
model in the model package group as ``PendingManualApproval``, and publishes the result (or the
failure) to the alarm topic.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from ftcloud.contract import DEFAULT_ROOT, SERVE_ENV_DEFAULTS, metric_definitions
from ftcloud.registry.base import BASE_MODEL_ENV
from ftcloud.registry.sagemaker import (
    BASE_MODEL_CHANNEL,
    DEFAULT_INFERENCE_INSTANCE_TYPES,
    HEADLINE_METRICS,
    MAX_METADATA_VALUE,
    METADATA_PREFIX,
    METRIC_METADATA_PREFIX,
    SUPPORTED_CONTENT_TYPES,
)
from ftcloud.sagemaker_facts import INPUT_PREFIX, has_local_nvme
from ftcloud.spec import TrainingSpec
from infra.config import KNOWN_INSTANCE_FAMILIES
from infra.nag import acknowledge_iam5, nag_arn
from infra.registry import ModelRegistry
from infra.storage import CHECKPOINTS_PREFIX, MODELS_PREFIX

#: SageMaker's EventBridge rule the ``.sync`` integration manages to learn when a job ends.
SYNC_RULE = "StepFunctionsGetEventsForSageMakerTrainingJobsRule"

#: Input fields the workflow requires; the rest default from cdk.json context.
REQUIRED_INPUT = ("trainingJobName", "channels.train")

LOG_RETENTION = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


class TrainingWorkflow(Construct):
    """The train -> register -> notify state machine and its own least-privilege role.

    The training step is a ``CustomState`` on the optimized ``sagemaker:createTrainingJob.sync``
    resource rather than ``tasks.SageMakerCreateTrainingJob``: from Python that L2 task accepts only
    a fixed hyperparameter map and a fixed channel list (jsii type-checks ``hyperparameters`` as a
    Mapping, so a run-time JSON path is rejected) and has no CheckpointConfig. A fine-tuning run
    needs all three per execution. The state machine uses JSONata, which builds the channel list
    from ``channels`` and stringifies hyperparameter values as SageMaker requires.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        resource_prefix: str,
        execution_role: iam.IRole,
        image_uri: str,
        artifact_bucket_name: str,
        key: kms.IKey,
        registry: ModelRegistry,
        topic: sns.ITopic,
        defaults: dict[str, Any],
        network_isolation: bool,
        subnet_ids: list[str] | None = None,
        security_group_ids: list[str] | None = None,
        log_retention_days: int = 365,
        retain_logs: bool = True,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        job_prefix = f"{resource_prefix}-"
        training_jobs_arn = stack.format_arn(
            service="sagemaker", resource="training-job", resource_name=f"{job_prefix}*"
        )

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                "states.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": stack.account}}
            ),
            description="ftcloud training workflow: run, register, notify (least privilege)",
        )
        # What the .sync integration calls: create/poll/stop the job (only ours, by name prefix),
        # tag it, pass it the execution role, and manage SageMaker's job-state EventBridge rule.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=[training_jobs_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[execution_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[stack.format_arn(service="events", resource="rule", resource_name=SYNC_RULE)],
            )
        )
        # Publishing to the KMS-encrypted topic needs the key too.
        key.grant(self.role, "kms:GenerateDataKey", "kms:Decrypt")

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/{resource_prefix}-training",
            encryption_key=key,
            retention=LOG_RETENTION[log_retention_days],
            removal_policy=RemovalPolicy.RETAIN if retain_logs else RemovalPolicy.DESTROY,
        )

        train = self._train_state(
            job_prefix=job_prefix,
            execution_role=execution_role,
            image_uri=image_uri,
            artifact_bucket_name=artifact_bucket_name,
            key=key,
            network_isolation=network_isolation,
            subnet_ids=subnet_ids,
            security_group_ids=security_group_ids,
        )
        # The same version the SDK's 'ftcloud register' creates (ftcloud.registry.sagemaker): the
        # image serves what it trained, with the contract's serving environment, the base weights
        # attached when they came from S3, and lineage + headline metrics in the metadata.
        register = tasks.CallAwsService.jsonata(
            self,
            "Register",
            comment="Register the trained model; a person approves it before it is deployed.",
            service="sagemaker",
            action="createModelPackage",
            iam_action="sagemaker:CreateModelPackage",
            iam_resources=registry.registration_arns,
            parameters={
                "ModelPackageGroupName": registry.group_name,
                "ModelApprovalStatus": "PendingManualApproval",
                "ModelPackageDescription": "{% 'Fine-tuned by training job ' & $states.input.training.jobName %}",
                "InferenceSpecification": {
                    "Containers": "{% " + _serving_containers(image_uri) + " %}",
                    "SupportedContentTypes": list(SUPPORTED_CONTENT_TYPES),
                    "SupportedResponseMIMETypes": list(SUPPORTED_CONTENT_TYPES),
                    "SupportedRealtimeInferenceInstanceTypes": list(DEFAULT_INFERENCE_INSTANCE_TYPES),
                },
                "CustomerMetadataProperties": "{% " + _metadata_properties() + " %}",
            },
            outputs="{% $merge([$states.input, {'modelPackageArn': $states.result.ModelPackageArn}]) %}",
        )
        notify_succeeded = tasks.SnsPublish.jsonata(
            self,
            "NotifySucceeded",
            topic=topic,
            subject=f"{resource_prefix}: fine-tuned model waiting for approval",
            message=sfn.TaskInput.from_text(
                "{% $string({'status': 'SUCCEEDED', 'trainingJobName': $states.input.training.jobName, "
                "'modelDataUrl': $states.input.training.modelDataUrl, 'modelPackageArn': $states.input.modelPackageArn, "
                "'approve': 'aws sagemaker update-model-package --model-approval-status Approved "
                "--model-package-arn ' & $states.input.modelPackageArn}) %}"
            ),
            outputs="{% $states.input %}",
        )
        # A catcher hands on only the error ({Error, Cause}); the job name comes from a workflow
        # variable. An object constructor drops undefined fields, so this message always renders.
        notify_failed = tasks.SnsPublish.jsonata(
            self,
            "NotifyFailed",
            topic=topic,
            subject=f"{resource_prefix}: training workflow failed",
            message=sfn.TaskInput.from_text(
                "{% $string({'status': 'FAILED', 'trainingJobName': $trainingJobName, "
                "'execution': $states.context.Execution.Id, 'error': $states.input.Error, "
                "'cause': $states.input.Cause}) %}"
            ),
        ).next(
            sfn.Fail.jsonata(
                self,
                "Failed",
                error="TrainingWorkflowFailed",
                cause="See the NotifyFailed message and the execution history.",
            )
        )
        train.add_catch(notify_failed)
        register.add_catch(notify_failed)

        required = " and ".join(f"$exists($states.input.{path})" for path in REQUIRED_INPUT)
        apply_defaults = sfn.Pass.jsonata(
            self,
            "ApplyDefaults",
            comment="Fill optional fields from the cdk.json defaults.",
            outputs="{% $merge([" + json.dumps(defaults, sort_keys=True) + ", $states.input]) %}",
            assign={"trainingJobName": "{% $states.input.trainingJobName %}"},
        )
        definition = (
            sfn.Choice.jsonata(self, "CheckInput")
            .when(sfn.Condition.jsonata("{% " + required + " %}"), apply_defaults)
            .otherwise(
                sfn.Fail.jsonata(
                    self,
                    "InvalidInput",
                    error="InvalidInput",
                    cause="The execution input needs 'trainingJobName' and 'channels.train' (an s3:// URI).",
                )
            )
        )
        apply_defaults.next(train).next(register).next(notify_succeeded)

        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            query_language=sfn.QueryLanguage.JSONATA,
            role=self.role,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
            # SageMaker stops a job after 28 days at most; this only catches a stuck execution.
            timeout=Duration.days(29),
        )
        self._acknowledge_wildcards(training_jobs_arn, registry)

    def _train_state(
        self,
        *,
        job_prefix: str,
        execution_role: iam.IRole,
        image_uri: str,
        artifact_bucket_name: str,
        key: kms.IKey,
        network_isolation: bool,
        subnet_ids: list[str] | None,
        security_group_ids: list[str] | None,
    ) -> sfn.CustomState:
        job_name = f"'{job_prefix}' & $states.input.trainingJobName"
        channels = (
            "[$each($states.input.channels, function($uri, $name) {{'ChannelName': $name, 'DataSource': "
            "{'S3DataSource': {'S3DataType': 'S3Prefix', 'S3Uri': $uri, 'S3DataDistributionType': 'FullyReplicated'}}}})]"
        )
        arguments: dict[str, Any] = {
            "TrainingJobName": "{% " + job_name + " %}",
            "RoleArn": execution_role.role_arn,
            "AlgorithmSpecification": {
                "TrainingImage": image_uri,
                "TrainingInputMode": "File",
                "MetricDefinitions": metric_definitions(),
                "EnableSageMakerMetricsTimeSeries": True,
            },
            # SageMaker wants every hyperparameter value as a string.
            "HyperParameters": "{% $merge([$each($states.input.hyperParameters, function($v, $k) {{$k: $string($v)}})]) %}",
            "InputDataConfig": "{% " + channels + " %}",
            "OutputDataConfig": {
                "S3OutputPath": f"s3://{artifact_bucket_name}/{MODELS_PREFIX}",
                "KmsKeyId": key.key_arn,
            },
            "ResourceConfig": "{% " + _resource_config(key.key_arn) + " %}",
            "StoppingCondition": {"MaxRuntimeInSeconds": "{% $states.input.maxRuntimeSeconds %}"},
            # Spot interruptions and retries resume from here (the container checkpoints into LocalPath).
            "CheckpointConfig": {
                "S3Uri": "{% 's3://"
                + artifact_bucket_name
                + "/"
                + CHECKPOINTS_PREFIX
                + "' & "
                + job_name
                + " & '/' %}",
                "LocalPath": f"{DEFAULT_ROOT}/checkpoints",
            },
            "EnableNetworkIsolation": network_isolation,
            "EnableInterContainerTrafficEncryption": True,
            "Tags": [{"Key": "ftcloud:execution", "Value": "{% $states.context.Execution.Name %}"}],
        }
        if subnet_ids:
            arguments["VpcConfig"] = {"Subnets": subnet_ids, "SecurityGroupIds": security_group_ids or []}
        return sfn.CustomState(
            self,
            "Train",
            state_json={
                "Type": "Task",
                "Comment": "Run the SageMaker training job and wait for it (.sync).",
                "Resource": f"arn:{Aws.PARTITION}:states:::sagemaker:createTrainingJob.sync",
                "Arguments": arguments,
                # FinalMetricDataList (last value of each metric line) -> {'eval_loss': 0.87, ...};
                # an object constructor drops 'metrics' when the job reported none.
                "Output": (
                    "{% $merge([$states.input, {'training': {'jobName': $states.result.TrainingJobName, "
                    "'jobArn': $states.result.TrainingJobArn, "
                    "'modelDataUrl': $states.result.ModelArtifacts.S3ModelArtifacts, "
                    "'metrics': $merge($states.result.FinalMetricDataList.{MetricName: Value})}}]) %}"
                ),
            },
        )

    def _acknowledge_wildcards(self, training_jobs_arn: str, registry: ModelRegistry) -> None:
        stack = Stack.of(self)
        policy = self.role.node.find_child("DefaultPolicy")
        acks = {
            "Resource::*": (
                "Only for actions without resource-level permissions that Step Functions needs for the "
                "logging and tracing this workflow turns on: logs:*LogDelivery*, logs:PutResourcePolicy, "
                "logs:Describe*, xray:PutTraceSegments/PutTelemetryRecords/GetSampling*."
            ),
            f"Resource::{nag_arn(stack, training_jobs_arn)}": (
                "Training jobs are named per execution at run time; the name prefix limits the role to "
                "this platform's jobs."
            ),
            f"Resource::{nag_arn(stack, registry.versions_arn)}": (
                "Model package versions get their number when created; scoped to this platform's group."
            ),
        }
        acknowledge_iam5(policy, acks)


def _resource_config(volume_key_arn: str) -> str:
    """JSONata for ResourceConfig: the volume is encrypted with the platform key, except on
    instance types with local NVMe storage, where SageMaker rejects a VolumeKmsKeyId (the
    instance store is hardware-encrypted). Same rule as the SDK's ``has_local_nvme``: its known
    families, plus any family with a ``d`` (m5d, c6id, ...) for types newer than this list."""
    nvme = sorted(f.split("-")[0] for f in KNOWN_INSTANCE_FAMILIES if has_local_nvme(f"ml.{f}.xlarge"))
    families = ", ".join(f"'{f}'" for f in dict.fromkeys(nvme))
    return (
        "($family := $split($split($states.input.instanceType, '.')[1], '-')[0]; "
        f"$nvme := $family in [{families}] or $contains($family, /^[a-z]+[0-9]+[a-z]*d[a-z]*$/); "
        "$merge([{'InstanceType': $states.input.instanceType, 'InstanceCount': $states.input.instanceCount, "
        "'VolumeSizeInGB': $states.input.volumeSizeGb}, "
        f"$nvme ? {{}} : {{'VolumeKmsKeyId': '{volume_key_arn}'}}]))"
    )


#: The technique a run gets when its hyperParameters name none (the container's default).
DEFAULT_TECHNIQUE = next(f.default for f in dataclasses.fields(TrainingSpec) if f.name == "technique")

#: JSONata bindings shared by the register expressions: the run's technique, whether the artifact
#: is adapter-only, the base weights' S3 prefix (the ``model`` channel) and the base model id.
_REGISTER_BINDINGS = (
    "$hp := $states.input.hyperParameters; "
    f"$technique := $exists($hp.technique) ? $string($hp.technique) : '{DEFAULT_TECHNIQUE}'; "
    "$adapter := $technique != 'full'; "
    "$baseS3 := $states.input.channels.model; "
    "$modelId := $exists($hp.model) ? $string($hp.model) : ''; "
)


def _serving_containers(image_uri: str) -> str:
    """JSONata for InferenceSpecification.Containers, as the SDK builds it: the contract's serving
    environment; an adapter-only artifact whose base came from S3 gets that prefix attached as the
    ``base`` model data source (the server's default path), one from a model id gets its id."""
    env = json.dumps({k: v for k, v in SERVE_ENV_DEFAULTS.items() if v != ""}, sort_keys=True)
    base_source = json.dumps(
        {"ChannelName": BASE_MODEL_CHANNEL, "S3DataSource": {"S3DataType": "S3Prefix", "CompressionType": "None"}}
    )
    return (
        "(" + _REGISTER_BINDINGS
        + f"$env := $merge([{env}, ($adapter and $not($exists($baseS3)) and $modelId != '') "
        f"? {{'{BASE_MODEL_ENV}': $modelId}} : {{}}]); "
        f"$container := {{'Image': '{image_uri}', 'ModelDataUrl': $states.input.training.modelDataUrl, "
        "'Environment': $env}; "
        f"$source := {base_source}; "
        "[($adapter and $exists($baseS3)) ? $merge([$container, {'AdditionalModelDataSources': "
        "[$merge([$source, {'S3DataSource': $merge([$source.S3DataSource, {'S3Uri': $baseS3}])}])]}]) "
        ": $container])"
    )


def _metadata_properties() -> str:
    """JSONata for CustomerMetadataProperties with the SDK's keys (``ftcloud versions`` reads them):
    lineage and headline metrics, values cut to SageMaker's 256 characters, absent ones left out."""
    p, m = METADATA_PREFIX, METRIC_METADATA_PREFIX
    # SageMaker's value alphabet (ASCII part; the SDK's metadata_safe keeps non-ASCII letters too).
    cut = f"$substring($replace($string($v), /[^A-Za-z0-9 _.:\\/=+@-]/, '_'), 0, {MAX_METADATA_VALUE})"
    metrics = ", ".join(f"'{m}{name}': $states.input.training.metrics.{name}" for name in HEADLINE_METRICS)
    hash_re = "/" + INPUT_PREFIX.replace("/", "\\/") + "\\/([0-9a-f]{32})\\/?$/"
    return (
        "(" + _REGISTER_BINDINGS
        + f"$train := $states.input.channels.train; $hash := $match($train, {hash_re}).groups[0]; "
        f"$all := {{'{p}training_job': $states.input.training.jobName, "
        f"'{p}base_model': $exists($baseS3) ? $baseS3 : ($modelId != '' ? $modelId), "
        f"'{p}data': $train, '{p}data_content_hash': $hash, '{p}technique': $technique, "
        f"'{p}execution': $states.context.Execution.Id, {metrics}}}; "
        f"$merge($each($all, function($v, $k) {{ {{$k: {cut}}} }})))"
    )

