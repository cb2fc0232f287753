"""The SageMaker execution role: what training jobs and the endpoint may touch, and nothing more."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct, IConstruct

from ftcloud.endpoints.alarms import rollback_alarm_names
from infra.image import TrainingImage
from infra.nag import acknowledge_iam5, nag_arn
from infra.network import PlatformNetwork
from infra.storage import PlatformStorage

#: Where SageMaker writes container logs and metrics for jobs and endpoints.
#: Where SageMaker writes with the execution role: training jobs (and tuning trials), endpoints, and
#: the Processing jobs of ``ftcloud data prepare --backend sagemaker``.
SAGEMAKER_LOG_GROUPS = ("/aws/sagemaker/TrainingJobs", "/aws/sagemaker/Endpoints/*", "/aws/sagemaker/ProcessingJobs")
SAGEMAKER_METRIC_NAMESPACES = ("/aws/sagemaker/TrainingJobs", "/aws/sagemaker/Endpoints", "/aws/sagemaker/ProcessingJobs")
#: The rollback alarms of any endpoint, by ftcloud's naming convention (``<endpoint>-latency-p99``,
#: ``<endpoint>-5xx-rate``): endpoint names are chosen at deploy time, so only the suffix is fixed.
ROLLBACK_ALARM_PATTERNS = tuple(rollback_alarm_names("*"))


class SageMakerExecutionRole(Construct):
    """Role assumed by SageMaker for training jobs, models and endpoints.

    No AmazonSageMakerFullAccess and no ``*`` actions: it reads the dataset bucket, reads and
    writes the artifact bucket, uses the platform key, pulls the one platform image, writes its
    own logs and metrics, reads the state of the endpoints' rollback alarms, attaches to the
    platform subnets when a VPC is configured, and reads the Hugging Face token secret when one is
    configured.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        storage: PlatformStorage,
        image: TrainingImage,
        network: PlatformNetwork | None = None,
        hf_token_secret_arn: str = "",
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com",
                # Confused-deputy guard: only SageMaker acting for this account may assume it.
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description="ftcloud: SageMaker training jobs and endpoints (least privilege)",
        )
        storage.grant_read_data(self.role)
        storage.grant_write_artifacts(self.role)
        # Volume encryption with the platform key: SageMaker creates a grant for the attached volume.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:CreateGrant", "kms:DescribeKey"],
                resources=[storage.key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )
        image.grant_pull(self.role)

        log_groups = [
            stack.format_arn(
                service="logs",
                resource="log-group",
                resource_name=f"{group}:*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for group in SAGEMAKER_LOG_GROUPS
        ]
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=log_groups,
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": list(SAGEMAKER_METRIC_NAMESPACES)}},
            )
        )
        # Blue/green updates with AutoRollbackConfiguration: SageMaker reads the alarms' state with
        # the endpoint's execution role (AWS: "Ensure that your IAM execution role has permission to
        # perform the cloudwatch:DescribeAlarms action on the auto-rollback alarms you specify").
        # DescribeAlarms supports alarm ARNs, so only alarms named by ftcloud's convention.
        rollback_alarms = [
            stack.format_arn(
                service="cloudwatch",
                resource="alarm",
                resource_name=pattern,
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for pattern in ROLLBACK_ALARM_PATTERNS
        ]
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms"], resources=rollback_alarms)
        )
        if network is not None:
            network.grant_network_interfaces(self.role)
        self.hf_token_secret_arn = hf_token_secret_arn
        if hf_token_secret_arn:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue"],
                    resources=[hf_token_secret_arn],
                )
            )

        self._acknowledge_wildcards(storage, image, log_groups, rollback_alarms, network is not None)

    @property
    def role_arn(self) -> str:
        return self.role.role_arn

    @property
    def policy(self) -> IConstruct:
        """The role's inline policy: depend on it when a resource needs the permissions at creation."""
        return self.role.node.find_child("DefaultPolicy")

    def _acknowledge_wildcards(
        self,
        storage: PlatformStorage,
        image: TrainingImage,
        log_groups: list[str],
        rollback_alarms: list[str],
        has_vpc: bool,
    ) -> None:
        """Each remaining wildcard is either a resource type without resource-level permissions or
        object keys chosen at run time; the reasons say which."""
        policy = self.policy
        stack = Stack.of(self)
        acks = {
            f"Resource::{nag_arn(stack, storage.dataset_bucket.arn_for_objects('*'))}": (
                "Objects of the dataset bucket only: the data set keys are chosen per job at run time."
            ),
            f"Resource::{nag_arn(stack, storage.artifact_bucket.arn_for_objects('*'))}": (
                "Objects of the artifact bucket only: job outputs, checkpoints and data capture are "
                "written under per-job keys chosen at run time."
            ),
            "Resource::*": (
                "Only actions without resource-level permissions use '*': ecr:GetAuthorizationToken "
                "(a registry login; image access is scoped to one repository), cloudwatch:PutMetricData "
                "(restricted by the cloudwatch:namespace condition to SageMaker's namespaces)"
                + (", and ec2:Describe* for VPC attachment." if has_vpc else ".")
            ),
        }
        for arn in log_groups:
            acks[f"Resource::{nag_arn(stack, arn)}"] = (
                "SageMaker's own log groups (/aws/sagemaker/TrainingJobs, /aws/sagemaker/Endpoints/<name>, "
                "/aws/sagemaker/ProcessingJobs); "
                "their streams are named per job or instance at run time."
            )
        for arn in rollback_alarms:
            acks[f"Resource::{nag_arn(stack, arn)}"] = (
                "Rollback alarms of endpoints named at deploy time (<endpoint>-latency-p99, "
                "<endpoint>-5xx-rate), for cloudwatch:DescribeAlarms only: SageMaker reads them with "
                "this role during blue/green updates."
            )
        if has_vpc:
            eni = stack.format_arn(service="ec2", resource="network-interface", resource_name="*")
            acks[f"Resource::{nag_arn(stack, eni)}"] = (
                "ENIs SageMaker creates for jobs/endpoints do not exist yet; the ec2:Vpc condition "
                "limits them to the platform VPC."
            )
        acknowledge_iam5(policy, acks)
