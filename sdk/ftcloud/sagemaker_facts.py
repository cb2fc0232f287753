"""Facts about SageMaker and the platform's S3 layout that the SDK and ``infra/`` share.

One definition each: the SDK writes to these prefixes and sends (or omits) these request fields;
the CDK app scopes lifecycle rules, IAM policies and its workflow to the same values. Import-light.
"""

from __future__ import annotations

import re

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
INPUT_PREFIX = "ftcloud/inputs"
OUTPUT_PREFIX = "ftcloud/jobs"
CHECKPOINT_PREFIX = "ftcloud/checkpoints"
#: `data prepare --backend sagemaker` (Processing jobs) writes its output under this prefix.
PREPARED_PREFIX = "ftcloud/prepared"

# Instance families with local NVMe instance storage: VolumeKmsKeyId must not be sent.
_NVME_FAMILIES = {
    "g4dn", "g5", "g6", "g6e", "gr6", "g7e",
    "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6",
    "trn1", "trn1n", "trn2",
}  # fmt: skip


def has_local_nvme(instance_type: str) -> bool:
    """True for instance types whose storage is local NVMe (g5, p4d, p5, m5d, ...)."""
    family = instance_type.removeprefix("ml.").split(".")[0]
    base = family.split("-")[0]  # p6-b200 -> p6
    if base in _NVME_FAMILIES:
        return True
    # Size-suffixed "d" families (m5d, c5d, r5d, m6id, c6id ...) carry instance storage too.
    return bool(re.fullmatch(r"[a-z]+\d+[a-z]*d[a-z]*", base)) and not base.startswith(("ml",))
