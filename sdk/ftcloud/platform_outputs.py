"""Names of the CloudFormation outputs the infra stack exports and the SDK discovers.

Both ``infra/`` (which creates the ``CfnOutput``s) and the SDK (which reads them with
``DescribeStacks``) import this module, so a rename cannot drift between the two.
Import-light on purpose.
"""

from __future__ import annotations

#: Stack name used by ``cdk deploy`` and by ``ftcloud --stack`` when none is given.
DEFAULT_STACK_NAME = "FtcloudPlatform"

# Output key -> what it holds.
EXECUTION_ROLE_ARN = "ExecutionRoleArn"
DATASET_BUCKET = "DatasetBucketName"
ARTIFACT_BUCKET = "ArtifactBucketName"
KMS_KEY_ARN = "KmsKeyArn"
IMAGE_URI = "TrainingImageUri"
SUBNET_IDS = "SubnetIds"  # comma-separated; absent when no VPC is configured
SECURITY_GROUP_IDS = "SecurityGroupIds"  # comma-separated; absent when no VPC
MODEL_PACKAGE_GROUP = "ModelPackageGroupName"
TRAINING_STATE_MACHINE_ARN = "TrainingStateMachineArn"
ALARM_TOPIC_ARN = "AlarmTopicArn"
HF_TOKEN_SECRET_ARN = "HfTokenSecretArn"  # absent unless configured
ENDPOINT_NAME = "EndpointName"  # absent unless an endpoint is deployed
DASHBOARD_NAME = "DashboardName"

#: Every output key with a one-line description (used by ``ftcloud platform`` and docs/platform.md).
DESCRIPTIONS: dict[str, str] = {
    EXECUTION_ROLE_ARN: "SageMaker execution role for training jobs and endpoints",
    DATASET_BUCKET: "S3 bucket for training/validation data (SSE-KMS)",
    ARTIFACT_BUCKET: "S3 bucket for model artifacts, checkpoints and data capture (SSE-KMS)",
    KMS_KEY_ARN: "KMS key encrypting buckets, volumes and the alarm topic",
    IMAGE_URI: "Container image for training and serving",
    SUBNET_IDS: "Private subnets for network-isolated jobs and endpoints",
    SECURITY_GROUP_IDS: "Security group for training and endpoints",
    MODEL_PACKAGE_GROUP: "SageMaker model package group (model registry)",
    TRAINING_STATE_MACHINE_ARN: "Step Functions workflow: train -> register -> notify",
    ALARM_TOPIC_ARN: "SNS topic that receives alarms",
    HF_TOKEN_SECRET_ARN: "Secrets Manager secret holding a Hugging Face token",
    ENDPOINT_NAME: "Autoscaling inference endpoint",
    DASHBOARD_NAME: "CloudWatch dashboard",
}

ALL_OUTPUTS: tuple[str, ...] = tuple(DESCRIPTIONS)
