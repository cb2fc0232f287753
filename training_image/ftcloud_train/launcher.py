"""Multi-process and multi-node runs: re-launch the entrypoint under torchrun.

SageMaker starts one container per host and lists every host in ``resourceconfig.json``.
When there are several hosts, or several GPUs on this host, the entrypoint runs itself again
under ``torchrun`` with the right ``nnodes`` / ``node_rank`` / master address; the workers see
``LOCAL_RANK`` and train with DDP (NCCL on GPUs, gloo on CPUs).

``FTCLOUD_NPROC_PER_NODE`` overrides the process count (CPU runs and tests);
``FTCLOUD_MASTER_ADDR`` / ``FTCLOUD_MASTER_PORT`` override the rendezvous address.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ftcloud.contract import EXIT_STOPPED
from ftcloud_train.job import JobContext

DEFAULT_MASTER_PORT = 29500


def processes_per_node() -> int:
    override = os.environ.get("FTCLOUD_NPROC_PER_NODE")
    if override:
        return max(1, int(override))
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except ImportError:
        return 1


def torchrun_command(ctx: JobContext, nproc: int) -> list[str]:
    master = os.environ.get("FTCLOUD_MASTER_ADDR") or ctx.hosts[0]
    port = os.environ.get("FTCLOUD_MASTER_PORT") or str(DEFAULT_MASTER_PORT)
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={len(ctx.hosts)}",
        f"--node_rank={ctx.node_rank}",
        f"--nproc_per_node={nproc}",
        f"--master_addr={master}",
        f"--master_port={port}",
        "-m", "ftcloud_train", "train",
    ]


def needs_relaunch(ctx: JobContext) -> int:
    """Processes per node to launch, or 0 when this process should train by itself."""
    if "LOCAL_RANK" in os.environ:  # already a torchrun worker
        return 0
    nproc = processes_per_node()
    return nproc if (len(ctx.hosts) > 1 or nproc > 1) else 0


def relaunch(ctx: JobContext, nproc: int) -> int:
    cmd = torchrun_command(ctx, nproc)
    print(f"[ftcloud] distributed: {len(ctx.hosts)} node(s) x {nproc} process(es): {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.Popen(cmd)
    stopping = False

    def forward(signum, frame):  # SageMaker's SIGTERM must reach the workers so they checkpoint
        nonlocal stopping
        stopping = True
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    code = proc.wait()
    # torchrun reports workers that stopped on SIGTERM as failed; to callers it is a clean stop.
    return EXIT_STOPPED if stopping and code != 0 else code
