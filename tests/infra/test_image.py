"""Container image: selectable source; pull permission scoped to exactly that repository."""

from __future__ import annotations

import json

from infra.config import REPO_ROOT
from tests.infra.support import as_list, flatten, policy_statements

PULL = {"ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"}


def _pull_resources(synth) -> list[str]:
    resources = []
    for st in policy_statements(synth):
        actions = set(as_list(st["Action"]))
        if actions & PULL:
            assert actions == PULL
            resources.extend(flatten(r) for r in as_list(st["Resource"]))
    return resources


def test_ecr_repository_scans_on_push_with_immutable_tags(synth, template):
    template("full").has_resource_properties(
        "AWS::ECR::Repository",
        {
            "RepositoryName": "ftcloud-training",
            "ImageScanningConfiguration": {"ScanOnPush": True},
            "ImageTagMutability": "IMMUTABLE",
        },
    )
    repo = next(iter(synth("full").resources("AWS::ECR::Repository")))
    assert _pull_resources(synth("full")) == [f"<{repo}.Arn>"]


def test_existing_uri_pulls_only_from_that_repository(synth):
    s = synth("imported")
    assert not s.resources("AWS::ECR::Repository")
    assert _pull_resources(s) == [
        "arn:<AWS::Partition>:ecr:us-east-1:763104351884:repository/huggingface-pytorch-training"
    ]
    assert s.template["Outputs"]["TrainingImageUri"]["Value"].startswith("763104351884.dkr.ecr.us-east-1")


def test_asset_builds_training_image_for_x86_and_pulls_only_from_the_asset_repository(synth):
    s = synth("default")
    manifest = json.loads((s.outdir / f"{s.stack.stack_name}.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "training_image/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    staged = s.outdir / image["source"]["directory"]
    assert (staged / "training_image" / "Dockerfile").is_file()
    # The build context is an allow-list: no VCS, caches or other clutter travel to Docker.
    assert not any(
        p.name in (".git", "node_modules", "cdk.out", "__pycache__", "tests") for p in staged.rglob("*")
    )
    # ...but everything the Dockerfile COPYs does (README.md only once the repository has one).
    dockerfile = (staged / "training_image" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith(("COPY ", "ADD ")):
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            for src in sources:
                if (REPO_ROOT / src).exists():
                    assert (staged / src).exists(), (
                        f"{src} is COPYed by the Dockerfile but not in the asset context"
                    )
    (repo,) = _pull_resources(s)
    assert repo == (
        "arn:<AWS::Partition>:ecr:<AWS::Region>:<AWS::AccountId>:repository/"
        "cdk-hnb659fds-container-assets-<AWS::AccountId>-<AWS::Region>"
    )
