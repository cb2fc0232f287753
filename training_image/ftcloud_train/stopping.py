"""Stop requests (SageMaker stop, spot interruption) that every rank acts on at the same step.

SageMaker sends SIGTERM to every host and SIGKILLs the container 120 s later; the launcher
gives the torchrun workers most of that window (see :mod:`ftcloud_train.launcher`). Under DDP a
rank may see the signal one step before another, and a rank that saves and stops while its
peers train on would leave them waiting in a collective forever, so the ranks *agree*: an
all-reduce (MAX) of every rank's flag, after which all of them save the same step and exit.

Two CUDA facts shape the agreement (CPU/gloo tests cannot show them):

* NCCL reduces only CUDA tensors; a CPU tensor raises "No backend type associated with device
  type cpu". :func:`collective_device` picks the tensor's device from the process group's
  backend (table-tested).
* Every agreement is a collective plus a device-to-host copy, i.e. a sync point that stops the
  CPU from queueing the next step's kernels. So the ranks agree every few *seconds*, not every
  step: each agreement also carries every rank's proposal for how many steps to wait until the
  next one (the number of steps that fit in :data:`AGREE_EVERY_SECONDS` at the speed measured
  since the previous agreement), and all ranks adopt the smallest. The interval is decided in the
  collective itself, so every rank runs the same number of collectives at the same steps (a
  rank-local timer would deadlock).

Worst-case latency from SIGTERM to an agreed stop is about ``AGREE_EVERY_SECONDS`` plus one
optimizer step (plus an evaluation pass, if one is running): 5 s leaves well over 90 s of the
launcher's grace period for the checkpoint itself. Steps slower than 5 s agree every step.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable

#: Target time between two agreements; small against SageMaker's 120 s stop window.
AGREE_EVERY_SECONDS = 5.0

# Backends that reduce CPU tensors, and the accelerator type of those that need device tensors.
_CPU_BACKENDS = {"gloo", "mpi", "ucc"}
_DEVICE_BACKENDS = {"nccl": "cuda", "xccl": "xpu"}


def collective_device(backend: str, cuda_device: int | None, local_rank: int) -> str:
    """The device a tensor must be on for a collective on a process group with ``backend``.

    ``backend`` is what ``dist.get_backend()`` returns (``"nccl"``, ``"gloo"``, ...) or a
    per-device configuration such as ``"cuda:nccl,cpu:gloo"`` (``dist.get_backend_config()``;
    Accelerate initialises FSDP runs that way). A group that can reduce CPU tensors gets
    ``"cpu"`` (no device sync); NCCL gets the process's current CUDA device (``cuda_device``,
    set by the Trainer) or, before CUDA is initialised, ``cuda:LOCAL_RANK``.
    """
    name = str(backend).lower()
    if ":" in name:  # "cuda:nccl,cpu:gloo": device type -> backend
        devices = dict(part.split(":", 1) for part in name.split(",") if ":" in part)
        if "cpu" in devices:
            return "cpu"
        name = next(iter(devices.values()), "")
    if name in _CPU_BACKENDS:
        return "cpu"
    if name in _DEVICE_BACKENDS:
        kind = _DEVICE_BACKENDS[name]
        index = cuda_device if kind == "cuda" and cuda_device is not None else local_rank
        return f"{kind}:{index}"
    raise ValueError(
        f"process-group backend {backend!r} is not one the stop agreement knows "
        f"(known: {', '.join(sorted(_CPU_BACKENDS | set(_DEVICE_BACKENDS)))}); "
        "add it to ftcloud_train/stopping.py with the device its collectives need."
    )


def agreement_interval(seconds_per_step: float | None, target_seconds: float = AGREE_EVERY_SECONDS) -> int:
    """Optimizer steps until the next agreement: as many as fit in ``target_seconds``, at least 1."""
    if not seconds_per_step or seconds_per_step <= 0 or not math.isfinite(seconds_per_step):
        return 1
    return max(1, int(target_seconds // seconds_per_step))


def _all_reduce_max(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    backend = dist.get_backend()
    if backend == "undefined":  # init_process_group() without a backend: read the per-device map
        backend = dist.get_backend_config()
    current = torch.cuda.current_device() if torch.cuda.is_initialized() else None
    device = collective_device(backend, current, int(os.environ.get("LOCAL_RANK", "0")))
    flags = torch.tensor(values, dtype=torch.float32, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags.tolist()


class StopRequest:
    """Set by SIGTERM; :meth:`agreed` tells every rank, at the same step, whether to stop."""

    def __init__(self, target_seconds: float = AGREE_EVERY_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.requested = False
        self.target_seconds = target_seconds
        self._clock = clock
        self._calls = 0  # calls so far (one before training, then one per step): the same on every rank
        self._next_agreement = 1  # the first step agrees, then measures how fast steps are
        self._last_agreement: tuple[int, float] | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def agreed(self) -> bool:
        """Call once per optimizer step on every rank; True when all ranks must save and stop."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested  # one process: nothing to agree on, no cost
        self._calls += 1
        if self._calls < self._next_agreement:
            return False
        now = self._clock()
        seconds_per_step = None
        if self._last_agreement is not None:
            last_call, last_time = self._last_agreement
            seconds_per_step = (now - last_time) / (self._calls - last_call)
        proposal = agreement_interval(seconds_per_step, self.target_seconds)
        # One MAX all-reduce carries both decisions: any rank's stop flag, and (negated, so MAX
        # picks the minimum) the shortest interval any rank proposes.
        stop, negated_interval = _all_reduce_max([1.0 if self.requested else 0.0, -float(proposal)])
        self._next_agreement = self._calls + max(1, int(-negated_interval))
        self._last_agreement = (self._calls, now)
        if stop > 0:
            self.requested = True  # ranks that saw no signal stop too, and report a stop
        return stop > 0
