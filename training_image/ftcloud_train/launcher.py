"""Multi-process and multi-node runs: re-launch the entrypoint under torchrun.

SageMaker starts one container per host and lists every host in ``resourceconfig.json``.
When there are several hosts, or several GPUs on this host, the entrypoint runs itself again
under ``torchrun`` with the right ``nnodes`` / ``node_rank`` / master address; the workers see
``LOCAL_RANK`` and train with DDP (NCCL on GPUs, gloo on CPUs).

``FTCLOUD_NPROC_PER_NODE`` overrides the process count (CPU runs and tests);
``FTCLOUD_MASTER_ADDR`` / ``FTCLOUD_MASTER_PORT`` override the rendezvous address.

**Stops.** SageMaker sends SIGTERM to the container and SIGKILLs it 120 s later. The launcher
forwards SIGTERM to torchrun, which forwards it to the workers and SIGKILLs them after its
shutdown timeout: 30 s by default, too short for a large checkpoint. The launcher sets that
timeout (torchrun's ``--shutdown_timeout``; the image's torch 2.13 has it) to ``FTCLOUD_STOP_GRACE_SECONDS`` (default 110 s:
the 120 s window less a margin for torchrun's teardown and the container's exit); the workers
agree on the stop within seconds (:mod:`ftcloud_train.stopping`) and spend the rest saving.

**Networking** (:func:`distributed_environment`): NCCL and gloo pick the interface to use from
``network_interface_name`` in ``resourceconfig.json``; on instance types with an Elastic Fabric
Adapter the libfabric variables EFA needs are set. Both only where the user has not set them.

Instance types reasoned about (SageMaker training names; EFA support per EC2's
``network-info.efa-supported`` and the lists SageMaker's own torchrun driver uses):

* GPUDirect RDMA over EFA - ``FI_PROVIDER=efa``, ``FI_EFA_USE_DEVICE_RDMA=1``, ``RDMAV_FORK_SAFE=1``:
  ml.p4d.24xlarge, ml.p4de.24xlarge (A100, 4 EFA), ml.p5.48xlarge, ml.p5e.48xlarge,
  ml.p5en.48xlarge (H100/H200, 32 or 16 EFA), ml.p6-b200.48xlarge (B200).
* EFA where GPUDirect RDMA is absent or not confirmed - ``FI_PROVIDER=efa`` only:
  ml.p3dn.24xlarge, ml.p5.4xlarge, ml.g4dn.{8,12,16}xlarge, ml.g5.{8,12,16,24,48}xlarge,
  ml.g6.{8,12,16,24,48}xlarge, ml.g6e.{8,12,16,24,48}xlarge. Requiring RDMA where the device
  has none makes libfabric refuse the EFA endpoint, hence two lists (recent libfabric still
  uses RDMA by itself where the device offers it).
* Everything else (ml.g5.2xlarge, ml.g6.xlarge, ml.p3.*, CPU types...): no EFA; NCCL and gloo use
  TCP on ``network_interface_name``.
* Not covered: Trainium (trn1, trn1n, trn2) and Gaudi (dl1) use Neuron / Habana collectives,
  not NCCL; this image is CUDA-only.

``NCCL_PROTO=simple`` is not set: it was required with aws-ofi-nccl <= 1.5 (LL protocols could
corrupt data over EFA); newer plugins set it themselves where the platform needs it, and forcing it
slows small all-reduces. These variables reach NCCL only through the aws-ofi-nccl plugin and
libfabric: an image without them (the pytorch/pytorch base has neither) ignores them and NCCL
runs over TCP sockets on the interface above.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from ftcloud.contract import EXIT_STOPPED
from ftcloud_train.job import JobContext, UserError

DEFAULT_MASTER_PORT = 29500

#: Seconds torchrun lets workers save after a stop before it SIGKILLs them. SageMaker SIGKILLs
#: the whole container 120 s after SIGTERM; 10 s stay for torchrun's and the launcher's exit.
DEFAULT_STOP_GRACE_SECONDS = 110
STOP_GRACE_ENV = "FTCLOUD_STOP_GRACE_SECONDS"

#: What each torchrun worker runs: this entrypoint again.
WORKER_COMMAND = ("-m", "ftcloud_train", "train")

_EFA_RDMA_INSTANCES = frozenset({
    "ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.p5.48xlarge", "ml.p5e.48xlarge", "ml.p5en.48xlarge",
    "ml.p6-b200.48xlarge",
})
_EFA_INSTANCES = _EFA_RDMA_INSTANCES | {
    "ml.p3dn.24xlarge", "ml.p5.4xlarge",
    *(f"ml.g4dn.{size}xlarge" for size in (8, 12, 16)),
    *(f"ml.{family}.{size}xlarge" for family in ("g5", "g6", "g6e") for size in (8, 12, 16, 24, 48)),
}


def distributed_environment(resource_config: Mapping, environ: Mapping[str, str]) -> dict[str, str]:
    """Variables to add to the torchrun workers' environment for this host's network.

    ``resource_config`` is SageMaker's ``resourceconfig.json``; ``environ`` the current
    environment, whose values always win (a user's ``NCCL_SOCKET_IFNAME`` is never replaced).
    """
    wanted: dict[str, str] = {}
    interface = resource_config.get("network_interface_name")
    if interface:
        wanted["NCCL_SOCKET_IFNAME"] = str(interface)
        wanted["GLOO_SOCKET_IFNAME"] = str(interface)
    instance_type = _instance_type(resource_config)
    if instance_type in _EFA_INSTANCES:
        wanted["FI_PROVIDER"] = "efa"
    if instance_type in _EFA_RDMA_INSTANCES:
        wanted["FI_EFA_USE_DEVICE_RDMA"] = "1"
        wanted["RDMAV_FORK_SAFE"] = "1"  # DataLoader workers fork after NCCL registered memory
    return {key: value for key, value in wanted.items() if key not in environ}


def _instance_type(resource_config: Mapping) -> str:
    """This host's instance type; heterogeneous clusters list it per instance group."""
    current = resource_config.get("current_instance_type")
    if current:
        return str(current)
    host = resource_config.get("current_host")
    for group in resource_config.get("instance_groups") or []:
        if host in (group.get("hosts") or []):
            return str(group.get("instance_type", ""))
    return ""


def stop_grace_seconds(environ: Mapping[str, str]) -> int:
    raw = environ.get(STOP_GRACE_ENV, "").strip()
    if not raw:
        return DEFAULT_STOP_GRACE_SECONDS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise UserError(
            f"{STOP_GRACE_ENV}={raw!r}: expected a whole number of seconds > 0 (default "
            f"{DEFAULT_STOP_GRACE_SECONDS}; SageMaker kills a stopped job 120 s after SIGTERM)."
        )
    return value


def torchrun_has_shutdown_timeout() -> bool:
    """Whether this torch's torchrun takes ``--shutdown_timeout`` (older ones always wait 30 s)."""
    try:
        from torch.distributed.launcher.api import LaunchConfig
    except ImportError:
        return False
    return "shutdown_timeout" in getattr(LaunchConfig, "__dataclass_fields__", {})


def processes_per_node() -> int:
    override = os.environ.get("FTCLOUD_NPROC_PER_NODE")
    if override:
        return max(1, int(override))
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except ImportError:
        return 1


def torchrun_command(
    ctx: JobContext, nproc: int, grace_seconds: int | None = None, worker: Sequence[str] = WORKER_COMMAND
) -> list[str]:
    master = os.environ.get("FTCLOUD_MASTER_ADDR") or ctx.hosts[0]
    port = os.environ.get("FTCLOUD_MASTER_PORT") or str(DEFAULT_MASTER_PORT)
    grace = [f"--shutdown_timeout={grace_seconds}"] if grace_seconds is not None else []
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={len(ctx.hosts)}",
        f"--node_rank={ctx.node_rank}",
        f"--nproc_per_node={nproc}",
        f"--master_addr={master}",
        f"--master_port={port}",
        *grace,
        *worker,
    ]


def needs_relaunch(ctx: JobContext) -> int:
    """Processes per node to launch, or 0 when this process should train by itself."""
    if "LOCAL_RANK" in os.environ:  # already a torchrun worker
        return 0
    nproc = processes_per_node()
    return nproc if (len(ctx.hosts) > 1 or nproc > 1) else 0


def relaunch(ctx: JobContext, nproc: int, worker: Sequence[str] = WORKER_COMMAND) -> int:
    grace = stop_grace_seconds(os.environ)
    if not torchrun_has_shutdown_timeout():
        print(f"[ftcloud] warning: this torch's torchrun has no --shutdown_timeout: on a stop, workers get "
              f"30 s to checkpoint instead of {grace} s (the image's torch 2.13 has the option)", flush=True)
        grace = None
    cmd = torchrun_command(ctx, nproc, grace, worker)
    network = distributed_environment(ctx.resource_config, os.environ)
    print(f"[ftcloud] distributed: {len(ctx.hosts)} node(s) x {nproc} process(es): {' '.join(cmd[2:])}", flush=True)
    if network:
        print(f"[ftcloud] network: {' '.join(f'{k}={v}' for k, v in sorted(network.items()))}", flush=True)
    proc: subprocess.Popen | None = None
    stopping = forwarded = False

    def forward_once() -> None:
        # Once only: torchrun's handler raises again on a second signal, which would cut short
        # its graceful wait and SIGKILL the workers mid-save.
        nonlocal forwarded
        if proc is not None and not forwarded:
            forwarded = True
            proc.send_signal(signal.SIGTERM)

    def on_sigterm(signum, frame):  # SageMaker's SIGTERM must reach the workers so they checkpoint
        nonlocal stopping
        stopping = True
        forward_once()

    signal.signal(signal.SIGTERM, on_sigterm)  # before the start: a stop that early is not lost
    proc = subprocess.Popen(cmd, env={**os.environ, **network})
    if stopping:  # it arrived while torchrun was starting
        forward_once()
    code = proc.wait()
    # torchrun reports workers that stopped on SIGTERM as failed; to callers it is a clean stop.
    return EXIT_STOPPED if stopping and code != 0 else code
