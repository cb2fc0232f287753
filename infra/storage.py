"""Storage: the platform KMS key, the dataset and artifact buckets, and their access-log bucket."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from ftcloud.sagemaker_facts import CHECKPOINT_PREFIX, OUTPUT_PREFIX

#: Key prefixes inside the artifact bucket, shared with the SDK's SageMaker backend so that the
#: lifecycle rules cover the SDK's jobs and the workflow's alike.
MODELS_PREFIX = f"{OUTPUT_PREFIX}/"
CHECKPOINTS_PREFIX = f"{CHECKPOINT_PREFIX}/"
DATA_CAPTURE_PREFIX = "ftcloud/data-capture/"


class PlatformStorage(Construct):
    """A rotating KMS key; dataset and artifact buckets (SSE-KMS with bucket keys, TLS only,
    versioned, no public access, access-logged); and the bucket receiving those access logs.

    Checkpoints are rewritten every few hundred steps, so the artifact bucket expires them (and
    their old versions) instead of keeping every copy forever.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        resource_prefix: str,
        retain_data: bool,
        log_retention_days: int,
        checkpoint_retention_days: int,
    ) -> None:
        super().__init__(scope, id)
        removal = RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY
        stack = Stack.of(self)

        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{resource_prefix}-platform",
            description="ftcloud platform: buckets, training output, endpoint volumes, alarm topic, logs",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        # CloudWatch alarms publish to the encrypted alarm topic: they need the key for SNS.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToUseTheKeyForSns",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        # CloudWatch Logs encrypts the workflow log group with this key; the condition pins the
        # grant to this account's log groups.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsInThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )

        # Server access logs cannot be delivered to an SSE-KMS bucket, hence S3-managed keys here.
        # (cdk-nag's S1 recognises it as the log destination, so it needs no access log itself.)
        self.logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=True,
            removal_policy=removal,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=Duration.days(log_retention_days),
                    noncurrent_version_expiration=Duration.days(7),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )

        self.dataset_bucket = self._data_bucket(
            "Datasets",
            removal,
            log_prefix="datasets/",
            lifecycle_rules=[_noncurrent_rule("old-dataset-versions", days=90)],
        )
        self.artifact_bucket = self._data_bucket(
            "Artifacts",
            removal,
            log_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-checkpoints",
                    prefix=CHECKPOINTS_PREFIX,
                    expiration=Duration.days(checkpoint_retention_days),
                    # Checkpoints are overwritten in place: old versions are waste after a day.
                    noncurrent_version_expiration=Duration.days(1),
                ),
                _noncurrent_rule("old-artifact-versions", days=90),
            ],
        )

    def _data_bucket(
        self, id: str, removal: RemovalPolicy, *, log_prefix: str, lifecycle_rules: list[s3.LifecycleRule]
    ) -> s3.Bucket:
        return s3.Bucket(
            self,
            id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # Bucket keys cut KMS request costs by ~99% for the many small checkpoint files.
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=self.logs_bucket,
            server_access_logs_prefix=log_prefix,
            lifecycle_rules=lifecycle_rules,
            removal_policy=removal,
        )

    def grant_read_data(self, grantee: iam.IGrantable) -> None:
        """Read any object of the dataset bucket (list, get, decrypt)."""
        _grant_objects(grantee, self.dataset_bucket, ["s3:GetObject"])
        self.key.grant_decrypt(grantee)

    def grant_write_artifacts(self, grantee: iam.IGrantable) -> None:
        """Read and write artifacts, checkpoints and data capture (list, get, put, delete, encrypt)."""
        _grant_objects(
            grantee,
            self.artifact_bucket,
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
        )
        # Not key.grant_encrypt_decrypt: it adds kms:ReEncrypt* and kms:GenerateDataKey* wildcards.
        self.key.grant(grantee, "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")


def _grant_objects(grantee: iam.IGrantable, bucket: s3.IBucket, object_actions: list[str]) -> None:
    # Explicit action lists instead of bucket.grant_read/grant_read_write: those use wildcards
    # (s3:GetObject*, s3:List*) and give more than a training job needs.
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:ListBucket", "s3:GetBucketLocation"], resources=[bucket.bucket_arn])
    )
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=object_actions, resources=[bucket.arn_for_objects("*")])
    )


def _noncurrent_rule(id: str, *, days: int) -> s3.LifecycleRule:
    return s3.LifecycleRule(
        id=id,
        noncurrent_version_expiration=Duration.days(days),
        abort_incomplete_multipart_upload_after=Duration.days(7),
    )
