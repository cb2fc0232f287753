"""Container image for training and serving: project ECR repository, built asset, or existing URI."""

from __future__ import annotations

from aws_cdk import Aws, IgnoreMode, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import ECR_IMAGE_PATTERN, REPO_ROOT

#: The Dockerfile built by ``imageSource=asset`` (the build context is the repository root, so
#: the image can install the same ``pyproject.toml`` that CI installs).
DOCKERFILE = "training_image/Dockerfile"

#: Build context allow-list: what training_image/Dockerfile COPYs. Everything else (.git,
#: node_modules, cdk.out, runs...) stays out: it would slow every synth and make the asset hash,
#: hence the deployed image, depend on local clutter.
ASSET_EXCLUDE = [
    "*",
    "!training_image",
    "!sdk",
    "!pyproject.toml",
    "!constraints.txt",
    "!README.md",
    "**/__pycache__",
    "**/*.pyc",
    "**/*.egg-info",
    "**/.pytest_cache",
]

_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]


class TrainingImage(Construct):
    """The one image training jobs and endpoints run, chosen by ``imageSource``.

    - ``ecr``: a project repository (scan on push, immutable tags) you push ``imageTag`` to.
    - ``asset``: ``training_image/Dockerfile`` built and pushed by ``cdk deploy`` (Docker needed
      only then; synthesis works without it).
    - ``uri``: an existing ECR image, e.g. a Deep Learning Container.

    :attr:`image_uri` is what SageMaker pulls; :meth:`grant_pull` allows exactly that repository.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        source: str,
        resource_prefix: str,
        image_tag: str,
        image_uri: str = "",
        retain: bool = True,
    ) -> None:
        super().__init__(scope, id)
        self.repository: ecr.IRepository
        if source == "ecr":
            repository = ecr.Repository(
                self,
                "Repository",
                repository_name=f"{resource_prefix}-training",
                image_scan_on_push=True,
                image_tag_mutability=ecr.TagMutability.IMMUTABLE,
                removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
                lifecycle_rules=[
                    ecr.LifecycleRule(description="Keep the 30 newest images", max_image_count=30),
                ],
            )
            self.repository = repository
            self.image_uri = repository.repository_uri_for_tag(image_tag)
        elif source == "asset":
            asset = ecr_assets.DockerImageAsset(
                self,
                "Asset",
                directory=str(REPO_ROOT),
                file=DOCKERFILE,
                exclude=ASSET_EXCLUDE,
                ignore_mode=IgnoreMode.DOCKER,
                # SageMaker hosts are x86_64; without this a laptop with Apple silicon builds arm64.
                platform=ecr_assets.Platform.LINUX_AMD64,
            )
            self.repository = asset.repository
            self.image_uri = asset.image_uri
        elif source == "uri":
            match = ECR_IMAGE_PATTERN.match(image_uri)
            if not match:  # PlatformConfig.validate() already rejects this; keep the construct safe alone
                raise ValueError(f"not an ECR image URI: {image_uri!r}")
            self.repository = ecr.Repository.from_repository_attributes(
                self,
                "Existing",
                repository_arn=(
                    f"arn:{Aws.PARTITION}:ecr:{match['region']}:{match['account']}:repository/{match['repository']}"
                ),
                repository_name=match["repository"],
            )
            self.image_uri = image_uri
        else:
            raise ValueError(f"unknown image source {source!r}")
        self.source = source

    def grant_pull(self, grantee: iam.IGrantable) -> None:
        """Pull this image, and only from this repository."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=_PULL_ACTIONS, resources=[self.repository.repository_arn])
        )
        # GetAuthorizationToken has no resource-level permissions: it only yields a registry login,
        # which by itself grants no image (see the acknowledgment in iam.py).
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
        )
