"""Model registry: the SageMaker model package group fine-tuned models are registered in."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


class ModelRegistry(Construct):
    """A model package group. Each workflow run adds a version pending manual approval; an
    approved version is what the endpoint serves (``endpointModelPackageArn``)."""

    def __init__(self, scope: Construct, id: str, *, group_name: str, retain: bool = True) -> None:
        super().__init__(scope, id)
        self.group = sagemaker.CfnModelPackageGroup(
            self,
            "Group",
            model_package_group_name=group_name,
            model_package_group_description="ftcloud fine-tuned models (train -> register -> approve -> deploy)",
        )
        # Registered versions point at artifacts in the (retained) artifact bucket: keep them
        # together. A group that still holds versions could not be deleted anyway.
        self.group.apply_removal_policy(RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY)
        self.group_name = group_name
        stack = Stack.of(self)
        self.group_arn = self.group.attr_model_package_group_arn
        # Versions are ARNs under the group name: model-package/<group>/<version>.
        self.versions_arn = stack.format_arn(
            service="sagemaker", resource="model-package", resource_name=f"{group_name}/*"
        )

    @property
    def registration_arns(self) -> list[str]:
        """What registering a version touches: the group and its (future) versions."""
        return [self.group_arn, self.versions_arn]
