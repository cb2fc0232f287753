"""Elastic inference endpoint: model, endpoint config, endpoint, autoscaling on invocations."""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct, IConstruct

from ftcloud.endpoints.alarms import rollback_alarm_names

VARIANT_NAME = "AllTraffic"

#: Application Auto Scaling's service-linked role for SageMaker variants. Using it (instead of a
#: role CDK would create) is what AWS recommends and leaves no extra IAM to review.
AUTOSCALING_SERVICE_LINKED_ROLE = (
    "role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)

#: Seconds SageMaker waits for a model to download / pass its first health check. LLM weights
#: take minutes, far beyond the 60 s defaults of smaller models.
MODEL_DOWNLOAD_TIMEOUT_S = 1800
CONTAINER_STARTUP_TIMEOUT_S = 1800
#: Blue/green bake time of a config update: the new fleet takes all traffic while SageMaker watches
#: the rollback alarms this long, then the old fleet goes. All at once: it needs no minimum fleet
#: size, unlike canary/linear shares (the SDK's deploy offers those per update).
ROLLBACK_BAKE_S = 600


class InferenceEndpoint(Construct):
    """A real-time endpoint serving either an (approved) model package or a ``model.tar.gz``.

    The endpoint keeps its scaled instance count across config updates
    (``RetainAllVariantProperties``); an Application Auto Scaling target between ``min_capacity``
    and ``max_capacity`` tracks ``SageMakerVariantInvocationsPerInstance`` with cooldowns.
    Optional data capture writes requests and responses to the artifact bucket. A config update
    (new model) is a blue/green deployment that rolls back when one of the endpoint's rollback
    alarms (``rollback_alarm_names(endpoint_name)``, created by ``PlatformMonitoring``) fires.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        endpoint_name: str,
        execution_role: iam.IRole,
        role_dependency: IConstruct,
        instance_type: str,
        min_capacity: int,
        max_capacity: int,
        target_invocations: int,
        scale_in_cooldown: Duration,
        scale_out_cooldown: Duration,
        network_isolation: bool,
        model_package_arn: str = "",
        model_data_url: str = "",
        image_uri: str = "",
        volume_kms_key_arn: str | None = None,
        subnet_ids: list[str] | None = None,
        security_group_ids: list[str] | None = None,
        data_capture_s3_uri: str | None = None,
        data_capture_percent: int = 20,
        data_capture_kms_key_arn: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        if bool(model_package_arn) == bool(model_data_url):
            raise ValueError("give exactly one of model_package_arn and model_data_url")
        if model_package_arn:
            container = sagemaker.CfnModel.ContainerDefinitionProperty(model_package_name=model_package_arn)
        else:
            container = sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image_uri, model_data_url=model_data_url, mode="SingleModel"
            )
        vpc_config = (
            sagemaker.CfnModel.VpcConfigProperty(
                security_group_ids=security_group_ids or [], subnets=subnet_ids
            )
            if subnet_ids
            else None
        )
        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=execution_role.role_arn,
            primary_container=container,
            enable_network_isolation=network_isolation,
            vpc_config=vpc_config,
        )
        # SageMaker checks the role's permissions (image pull, model data) when it creates the model.
        self.model.node.add_dependency(role_dependency)
        data_capture = None
        if data_capture_s3_uri:
            data_capture = sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
                enable_capture=True,
                initial_sampling_percentage=data_capture_percent,
                destination_s3_uri=data_capture_s3_uri,
                kms_key_id=data_capture_kms_key_arn,
                capture_options=[
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
                ],
                capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                    json_content_types=["application/json"]
                ),
            )
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    model_name=self.model.attr_model_name,
                    instance_type=instance_type,
                    initial_instance_count=min_capacity,
                    initial_variant_weight=1.0,
                    model_data_download_timeout_in_seconds=MODEL_DOWNLOAD_TIMEOUT_S,
                    container_startup_health_check_timeout_in_seconds=CONTAINER_STARTUP_TIMEOUT_S,
                )
            ],
            # None for instance types with local NVMe storage: it is hardware-encrypted and SageMaker
            # rejects a KmsKeyId for them.
            kms_key_id=volume_kms_key_arn,
            data_capture_config=data_capture,
        )
        self.rollback_alarm_names = rollback_alarm_names(endpoint_name)
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            # Without this, every config update resets the instance count autoscaling chose.
            retain_all_variant_properties=True,
            # Used by updates only (creation has no old fleet to return to); the same guard the
            # SDK's UpdateEndpoint sets. The alarm names are plain strings, not references, so
            # the endpoint does not wait for alarms that watch it.
            deployment_config=sagemaker.CfnEndpoint.DeploymentConfigProperty(
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                        type="ALL_AT_ONCE", wait_interval_in_seconds=ROLLBACK_BAKE_S
                    ),
                    termination_wait_in_seconds=ROLLBACK_BAKE_S,
                ),
                auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                    alarms=[
                        sagemaker.CfnEndpoint.AlarmProperty(alarm_name=name)
                        for name in self.rollback_alarm_names
                    ]
                ),
            ),
        )
        self.endpoint_name = self.endpoint.attr_endpoint_name
        self.variant_name = VARIANT_NAME

        self.scalable_target = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint.attr_endpoint_name}/variant/{VARIANT_NAME}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=min_capacity,
            max_capacity=max_capacity,
            role=iam.Role.from_role_arn(
                self,
                "ScalingRole",
                f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:{AUTOSCALING_SERVICE_LINKED_ROLE}",
                mutable=False,
            ),
        )
        self.scaling_policy = self.scalable_target.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=target_invocations,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            scale_in_cooldown=scale_in_cooldown,
            scale_out_cooldown=scale_out_cooldown,
        )
