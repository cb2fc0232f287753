"""The platform stack: composes one construct per capability and exports what the SDK discovers."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Fn, Stack, Tags
from constructs import Construct

from ftcloud import platform_outputs as out
from infra.config import PlatformConfig
from infra.endpoint import InferenceEndpoint
from infra.iam import SageMakerExecutionRole
from infra.image import TrainingImage
from infra.monitoring import PlatformMonitoring
from infra.network import PlatformNetwork
from infra.registry import ModelRegistry
from infra.storage import DATA_CAPTURE_PREFIX, PlatformStorage
from infra.training_workflow import TrainingWorkflow


class PlatformStack(Stack):
    """Everything ``ftcloud`` needs in one account/region, configured by :class:`PlatformConfig`.

    The stack is environment-agnostic (no account/region at synth): the same context always
    synthesizes the same template, without AWS credentials.
    """

    def __init__(self, scope: Construct, id: str, *, config: PlatformConfig, **kwargs) -> None:
        super().__init__(scope, id, **kwargs)
        self.config = c = config
        # cfn-lint 1.x's resource schemas do not know the Tags these two types gained recently;
        # neither needs a cost-allocation tag, so leave them untagged and the template lint-clean.
        Tags.of(self).add(
            "project",
            "ftcloud",
            exclude_resource_types=[
                "AWS::CloudWatch::Dashboard",
                "AWS::ApplicationAutoScaling::ScalableTarget",
            ],
        )

        self.storage = PlatformStorage(
            self,
            "Storage",
            resource_prefix=c.resource_prefix,
            retain_data=c.retain_data,
            log_retention_days=c.log_retention_days,
            checkpoint_retention_days=c.checkpoint_retention_days,
        )
        self.image = TrainingImage(
            self,
            "Image",
            source=c.image_source,
            resource_prefix=c.resource_prefix,
            image_tag=c.image_tag,
            image_uri=c.image_uri,
            retain=c.retain_data,
        )
        self.network = None
        if c.vpc_enabled:
            self.network = PlatformNetwork(
                self,
                "Network",
                mode=c.vpc_mode,
                flow_logs_bucket=self.storage.logs_bucket,
                cidr=c.vpc_cidr,
                max_azs=c.vpc_max_azs,
                nat_gateways=c.vpc_nat_gateways,
                vpc_id=c.vpc_id,
                subnet_ids=c.vpc_subnet_ids,
                route_table_ids=c.vpc_route_table_ids,
            )
        subnet_ids = self.network.subnet_ids if self.network else None
        security_group_ids = self.network.security_group_ids if self.network else None

        self.execution_role = SageMakerExecutionRole(
            self,
            "ExecutionRole",
            storage=self.storage,
            image=self.image,
            network=self.network,
            hf_token_secret_arn=c.hf_token_secret_arn,
        )
        self.registry = ModelRegistry(
            self, "Registry", group_name=c.model_package_group_name, retain=c.retain_data
        )
        self.monitoring = PlatformMonitoring(
            self,
            "Monitoring",
            resource_prefix=c.resource_prefix,
            key=self.storage.key,
            dashboard_name=c.dashboard_name,
            alarm_email=c.alarm_email,
        )
        self.workflow = TrainingWorkflow(
            self,
            "TrainingWorkflow",
            resource_prefix=c.resource_prefix,
            execution_role=self.execution_role.role,
            image_uri=self.image.image_uri,
            artifact_bucket_name=self.storage.artifact_bucket.bucket_name,
            key=self.storage.key,
            registry=self.registry,
            topic=self.monitoring.topic,
            defaults={
                "instanceType": c.training_instance_type,
                "instanceCount": c.training_instance_count,
                "volumeSizeGb": c.training_volume_size_gb,
                "maxRuntimeSeconds": c.training_max_runtime_hours * 3600,
                "hyperParameters": {},
            },
            network_isolation=c.network_isolation,
            subnet_ids=subnet_ids,
            security_group_ids=security_group_ids,
            log_retention_days=c.log_retention_days,
            retain_logs=c.retain_data,
        )
        self.monitoring.watch_training(self.workflow.state_machine)

        self.endpoint = None
        if c.endpoint_enabled:
            key_arn = self.storage.key.key_arn
            self.endpoint = InferenceEndpoint(
                self,
                "Endpoint",
                endpoint_name=c.endpoint_name,
                execution_role=self.execution_role.role,
                role_dependency=self.execution_role.policy,
                instance_type=c.endpoint_instance_type,
                min_capacity=c.endpoint_min_capacity,
                max_capacity=c.endpoint_max_capacity,
                target_invocations=c.endpoint_target_invocations,
                scale_in_cooldown=Duration.seconds(c.endpoint_scale_in_cooldown_seconds),
                scale_out_cooldown=Duration.seconds(c.endpoint_scale_out_cooldown_seconds),
                network_isolation=c.network_isolation,
                model_package_arn=c.endpoint_model_package_arn,
                model_data_url=c.endpoint_model_data_url,
                image_uri=self.image.image_uri,
                volume_kms_key_arn=key_arn if c.endpoint_kms_supported else None,
                subnet_ids=subnet_ids,
                security_group_ids=security_group_ids,
                data_capture_s3_uri=(
                    f"s3://{self.storage.artifact_bucket.bucket_name}/{DATA_CAPTURE_PREFIX}"
                    if c.endpoint_data_capture
                    else None
                ),
                data_capture_percent=c.endpoint_data_capture_percent,
                data_capture_kms_key_arn=key_arn,
            )
            self.monitoring.watch_endpoint(self.endpoint.endpoint_name, self.endpoint.variant_name)
        self.monitoring.add_alarm_status()

        self._outputs(subnet_ids, security_group_ids)

    def _outputs(self, subnet_ids: list[str] | None, security_group_ids: list[str] | None) -> None:
        values: dict[str, str] = {
            out.EXECUTION_ROLE_ARN: self.execution_role.role_arn,
            out.DATASET_BUCKET: self.storage.dataset_bucket.bucket_name,
            out.ARTIFACT_BUCKET: self.storage.artifact_bucket.bucket_name,
            out.KMS_KEY_ARN: self.storage.key.key_arn,
            out.IMAGE_URI: self.image.image_uri,
            out.MODEL_PACKAGE_GROUP: self.registry.group_name,
            out.TRAINING_STATE_MACHINE_ARN: self.workflow.state_machine.state_machine_arn,
            out.ALARM_TOPIC_ARN: self.monitoring.topic.topic_arn,
            out.DASHBOARD_NAME: self.monitoring.dashboard.dashboard_name,
        }
        if subnet_ids and security_group_ids:
            values[out.SUBNET_IDS] = Fn.join(",", subnet_ids)
            values[out.SECURITY_GROUP_IDS] = Fn.join(",", security_group_ids)
        if self.config.hf_token_secret_arn:
            values[out.HF_TOKEN_SECRET_ARN] = self.config.hf_token_secret_arn
        if self.endpoint is not None:
            values[out.ENDPOINT_NAME] = self.endpoint.endpoint_name
        for key in out.ALL_OUTPUTS:  # contract order, so the template is stable
            if key in values:
                output = CfnOutput(self, key, value=values[key], description=out.DESCRIPTIONS[key])
                output.override_logical_id(key)
