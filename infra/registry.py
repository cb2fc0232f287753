"""Model registry: the SageMaker model package group fine-tuned models are registered in."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


class ModelRegistry(Construct):
    """A model package group. Each workflow run adds a version pending manual approval; an
    approved version is what the endpoint serves (``endpointModelPackageArn``)."""

    def __init__(self, scope: Construct, id: str, *, group_name: str) -> None:
        super().__init__(scope, id)
        self.group = sagemaker.CfnModelPackageGroup(
            self,
            "Group",
            model_package_group_name=group_name,
            model_package_group_description="ftcloud fine-tuned models (train -> register -> approve -> deploy)",
        )
        self.group_name = group_name
        stack = Stack.of(self)
        self.group_arn = self.group.attr_model_package_group_arn
        # Versions are ARNs under the group name: model-package/<group>/<version>.
        self.versions_arn = stack.format_arn(
            service="sagemaker", resource="model-package", resource_name=f"{group_name}/*"
        )

    def grant_register(self, grantee: iam.IGrantable) -> None:
        """Create model package versions in this group (nothing else, no approval rights)."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateModelPackage"],
                resources=[self.group_arn, self.versions_arn],
            )
        )
