"""SageMaker training instances and their GPUs: the one table of memory, speed and price.

Prices are on-demand SageMaker *training* list prices per instance-hour in :data:`PRICE_REGION`,
as of :data:`PRICE_DATE`; they change, so the plan prints the date next to every cost. The spot
discount is a typical managed-spot saving for the family, not a quote (spot prices move hourly).
GPU peaks are dense (no sparsity) tensor-core TFLOPS from NVIDIA's datasheets, bf16 where the GPU
has it, fp16 otherwise; ``bench/gpu_check.py`` reads them from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ftcloud.errors import UsageError

PRICE_REGION = "us-east-1"
PRICE_DATE = "2025-06"
GIB = 2**30


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float  # total the device reports (nvidia-smi MiB / 1024), not the marketing GB
    peak_tflops: float  # dense bf16 (fp16 for GPUs without bf16)
    bf16: bool  # compute capability >= 8.0: precision auto picks bf16 (else fp16)


#: CUDA device-name fragment -> GPU. First match wins, so longer names come first.
GPUS: dict[str, Gpu] = {g.name: g for g in (
    Gpu("B200", 179.1, 2250.0, True),
    Gpu("H200", 140.4, 989.0, True),
    Gpu("H100 PCIe", 80.0, 756.0, True),
    Gpu("H100", 79.6, 989.0, True),  # SXM
    Gpu("A100-80GB", 80.0, 312.0, True),
    Gpu("A100", 40.0, 312.0, True),
    Gpu("L40S", 45.0, 362.0, True),
    Gpu("A10G", 22.5, 125.0, True),  # NVIDIA publishes no A10G figure; the A10's is used
    Gpu("A10", 22.5, 125.0, True),
    Gpu("L4", 22.5, 121.0, True),
    Gpu("V100", 16.0, 125.0, False),
    Gpu("T4", 15.0, 65.0, False),
)}  # fmt: skip


def gpu_by_device_name(device_name: str) -> Gpu | None:
    """The GPU whose name fragment occurs in a CUDA device name (``NVIDIA A10G`` -> A10G)."""
    for fragment, gpu in GPUS.items():
        if fragment in device_name:
            return gpu
    return None


@dataclass(frozen=True)
class Instance:
    type: str
    gpu: str  # key of GPUS
    gpus: int
    vcpus: int
    price_per_hour: float  # on-demand USD, PRICE_REGION, PRICE_DATE
    spot_discount: float  # typical managed-spot saving (0.65 = pay 35%)

    @property
    def gpu_spec(self) -> Gpu:
        return GPUS[self.gpu]

    @property
    def gpu_memory_gib(self) -> float:
        return self.gpu_spec.memory_gib

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gpu_memory_gib": self.gpu_memory_gib, "price_region": PRICE_REGION,
                "price_date": PRICE_DATE}


INSTANCES: dict[str, Instance] = {i.type: i for i in (
    Instance("ml.g4dn.xlarge", "T4", 1, 4, 0.736, 0.70),
    Instance("ml.g4dn.12xlarge", "T4", 4, 48, 4.89, 0.70),
    Instance("ml.g5.xlarge", "A10G", 1, 4, 1.408, 0.65),
    Instance("ml.g5.2xlarge", "A10G", 1, 8, 1.515, 0.65),
    Instance("ml.g5.4xlarge", "A10G", 1, 16, 2.03, 0.65),
    Instance("ml.g5.12xlarge", "A10G", 4, 48, 7.09, 0.65),
    Instance("ml.g5.48xlarge", "A10G", 8, 192, 20.36, 0.65),
    Instance("ml.g6.xlarge", "L4", 1, 4, 1.006, 0.60),
    Instance("ml.g6.2xlarge", "L4", 1, 8, 1.222, 0.60),
    Instance("ml.g6.12xlarge", "L4", 4, 48, 5.752, 0.60),
    Instance("ml.g6.48xlarge", "L4", 8, 192, 16.09, 0.60),
    Instance("ml.g6e.xlarge", "L40S", 1, 4, 2.336, 0.55),
    Instance("ml.g6e.12xlarge", "L40S", 4, 48, 13.117, 0.55),
    Instance("ml.g6e.48xlarge", "L40S", 8, 192, 37.64, 0.55),
    Instance("ml.p3.2xlarge", "V100", 1, 8, 3.825, 0.70),
    Instance("ml.p4d.24xlarge", "A100", 8, 96, 37.688, 0.60),
    Instance("ml.p4de.24xlarge", "A100-80GB", 8, 96, 47.11, 0.60),
    Instance("ml.p5.48xlarge", "H100", 8, 192, 113.07, 0.50),
)}  # fmt: skip


def instance(instance_type: str) -> Instance:
    """The table row of ``instance_type``; a clear error for a type the planner does not know."""
    row = INSTANCES.get(instance_type)
    if row is None:
        raise UsageError(
            f"the planner has no figures for instance type {instance_type!r}.",
            hint=f"Choose one of {', '.join(INSTANCES)}, or launch with --force to skip the memory check.",
        )
    return row


def markdown_table() -> str:
    """The instance table of docs/plan.md (a test keeps the two equal)."""
    lines = ["| instance type | GPUs | GPU memory (GiB) | vCPUs | on-demand $/h | typical spot saving |",
             "|---|---|---|---|---|---|"]
    for row in INSTANCES.values():
        lines.append(f"| `{row.type}` | {row.gpus}x {row.gpu} | {row.gpu_memory_gib:g} | {row.vcpus} | "
                     f"{row.price_per_hour:.3f} | {row.spot_discount:.0%} |")
    return "\n".join(lines)
