"""Multi-process stops and networking: the stop agreement's device and cadence, torchrun's grace
period after SIGTERM, and the network environment handed to the torchrun workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ftcloud_train import checkpoints
from ftcloud_train.launcher import (
    DEFAULT_STOP_GRACE_SECONDS,
    STOP_GRACE_ENV,
    distributed_environment,
    stop_grace_seconds,
    torchrun_command,
)
from ftcloud_train.stopping import StopRequest, agreement_interval, collective_device

from .jobtree import make_job, run_module

# ----------------------------------------------------------------------------- collective device


@pytest.mark.parametrize(
    ("backend", "cuda_device", "local_rank", "device"),
    [
        ("gloo", None, 3, "cpu"),
        ("mpi", None, 0, "cpu"),
        ("ucc", None, 1, "cpu"),
        ("nccl", None, 3, "cuda:3"),  # CUDA not initialised yet: LOCAL_RANK's GPU
        ("nccl", 5, 3, "cuda:5"),  # the device the Trainer made current wins
        ("NCCL", 0, 0, "cuda:0"),
        ("xccl", None, 2, "xpu:2"),
        ("cuda:nccl", 1, 1, "cuda:1"),  # dist.get_backend_config() spelling
        ("cuda:nccl,cpu:gloo", 1, 1, "cpu"),  # Accelerate's FSDP group: CPU tensors go to gloo
        ("cpu:gloo,cuda:nccl", 1, 1, "cpu"),  # init_process_group() without a backend
        ("cpu:gloo", None, 0, "cpu"),
    ],
)
def test_collective_device_table(backend, cuda_device, local_rank, device):
    assert collective_device(backend, cuda_device, local_rank) == device


def test_collective_device_for_dist_backend_values():
    # What dist.get_backend() really returns is a Backend (a str subclass), not a plain str.
    assert collective_device(dist.Backend("nccl"), None, 1) == "cuda:1"
    assert collective_device(dist.Backend("gloo"), None, 1) == "cpu"


def test_unknown_backend_is_named_with_the_file_to_fix():
    with pytest.raises(ValueError, match=r"'smddp'.*ftcloud_train/stopping.py"):
        collective_device("smddp", 0, 0)


class _Handed(Exception):
    """Raised by the fake all_reduce once it has seen the tensor."""


def test_stop_agreement_hands_nccl_a_cuda_tensor_without_a_gpu(monkeypatch):
    """Under NCCL the flag tensor must live on the rank's GPU; a CPU tensor raises there.

    FakeTensorMode lets torch build a ``cuda:1`` tensor on this CPU-only machine, so the test
    sees the real tensor the agreement hands to all_reduce.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    handed = []

    def fake_all_reduce(tensor, op=None, **kwargs):
        handed.append((tensor.device, op))
        raise _Handed

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    monkeypatch.setenv("LOCAL_RANK", "1")
    request = StopRequest()
    request.requested = True
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(_Handed):
        request.agreed()
    assert handed == [(torch.device("cuda", 1), dist.ReduceOp.MAX)]

    # Once the Trainer has made a device current, that one is used.
    handed.clear()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(_Handed):
        StopRequest().agreed()
    assert handed[0][0] == torch.device("cuda", 0)


# ----------------------------------------------------------------------------- agreement cadence


@pytest.mark.parametrize(
    ("seconds_per_step", "target", "interval"),
    [
        (None, 5.0, 1),  # nothing measured yet: agree at the next step
        (0.0, 5.0, 1),
        (0.125, 5.0, 40),
        (2.0, 5.0, 2),
        (5.0, 5.0, 1),
        (30.0, 5.0, 1),  # slow steps: every step
        (float("inf"), 5.0, 1),
    ],
)
def test_agreement_interval_table(seconds_per_step, target, interval):
    assert agreement_interval(seconds_per_step, target) == interval


@pytest.fixture
def one_rank_gloo():
    """A real one-process gloo group, so the agreement runs its real collective."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_agreement_runs_every_few_seconds_not_every_step(one_rank_gloo, monkeypatch):
    now = [0.0]
    collectives = []
    real_all_reduce = dist.all_reduce

    def counting_all_reduce(tensor, *args, **kwargs):
        collectives.append(step)
        assert tensor.device.type == "cpu"  # gloo
        return real_all_reduce(tensor, *args, **kwargs)

    monkeypatch.setattr(dist, "all_reduce", counting_all_reduce)
    request = StopRequest(target_seconds=1.0, clock=lambda: now[0])
    stopped_at = None
    for step in range(1, 200):
        now[0] += 0.125  # a 0.125 s optimizer step
        if step == 57:
            request._handle(signal.SIGTERM, None)
        if request.agreed():
            stopped_at = step
            break
    # The first step agrees at once, the second measures the step time; then every 8 steps (1 s).
    assert collectives == [1, 2, 10, 18, 26, 34, 42, 50, 58]  # 9 collectives for 58 steps
    assert stopped_at == 58  # the first agreement after the signal at step 57


def test_single_process_checks_its_flag_every_step_without_collectives(monkeypatch):
    monkeypatch.setattr(dist, "all_reduce", lambda *a, **k: pytest.fail("no collective without a group"))
    request = StopRequest()
    assert request.agreed() is False
    request._handle(signal.SIGTERM, None)
    assert request.agreed() is True


# ----------------------------------------------------------------------------- torchrun and the stop window


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A torchrun worker that trains (0.02 s steps) until the ranks agree to stop, then "saves" for
# SAVE seconds and marks the save done. Each rank gets a different agreement target, so the
# ranks propose different intervals; it records the steps at which it ran a collective.
_WORKER = """
import json, os, sys, time
from pathlib import Path
import torch.distributed as dist
from ftcloud_train.stopping import StopRequest

out, save_seconds = Path(sys.argv[1]), float(sys.argv[2])
dist.init_process_group("gloo")
rank = dist.get_rank()
request = StopRequest(target_seconds=0.2 if rank == 0 else 1.0)
request.install()
collectives, real_all_reduce, step = [], dist.all_reduce, 0
def counting_all_reduce(tensor, *args, **kwargs):
    collectives.append(step)
    return real_all_reduce(tensor, *args, **kwargs)
dist.all_reduce = counting_all_reduce
env = {k: os.environ.get(k) for k in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "FI_PROVIDER")}
(out / f"env-{rank}.json").write_text(json.dumps(env))
(out / f"ready-{rank}").touch()
while True:
    step += 1
    time.sleep(0.02)
    if request.agreed():
        break
(out / f"collectives-{rank}.json").write_text(json.dumps(collectives))
time.sleep(save_seconds)
(out / f"saved-{rank}").touch()
sys.exit(143)
"""

_DRIVER = """
import json, sys
from ftcloud.contract import ContainerPaths
from ftcloud.spec import TrainingSpec
from ftcloud_train.job import JobContext
from ftcloud_train.launcher import relaunch
root, resource_config, worker = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
ctx = JobContext(ContainerPaths(root), TrainingSpec(), ["algo-1"], "algo-1", resource_config=resource_config)
sys.exit(relaunch(ctx, 2, worker=worker))
"""


def _stop_during_save(tmp_path: Path, save_seconds: float, grace: int | None, resource_config: dict | None = None):
    """Launch 2 workers through the real launcher + torchrun, SIGTERM the launcher (as SageMaker
    does), and return (exit code, seconds from SIGTERM to exit, launcher output)."""
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "FTCLOUD_MASTER_ADDR": "127.0.0.1", "FTCLOUD_MASTER_PORT": str(_free_port())}
    env.pop(STOP_GRACE_ENV, None)
    for key in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "FI_PROVIDER"):
        env.pop(key, None)
    if grace is not None:
        env[STOP_GRACE_ENV] = str(grace)
    cmd = [sys.executable, "-c", _DRIVER, str(tmp_path), json.dumps(resource_config or {}),
           str(script), str(out), str(save_seconds)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not all((out / f"ready-{r}").exists() for r in (0, 1)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    time.sleep(0.5)  # a few agreements happen before the stop
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    output, _ = proc.communicate(timeout=save_seconds + 60)
    return proc.returncode, time.monotonic() - signalled, output, out


def _collectives(out: Path) -> list[list[int]]:
    return [json.loads((out / f"collectives-{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_short_grace_kills_a_slow_save_and_ranks_agree_at_the_same_steps(tmp_path):
    """The grace torchrun gives is the one the launcher sets: 2 s cuts a 6 s save short.
    Also: two gloo ranks with different agreement targets run the same collectives."""
    code, elapsed, output, out = _stop_during_save(
        tmp_path, save_seconds=6, grace=2,
        resource_config={"network_interface_name": "lo", "current_instance_type": "ml.p4d.24xlarge"},
    )
    assert code == 143, output
    assert "--shutdown_timeout=2" in output
    assert not any((out / f"saved-{r}").exists() for r in (0, 1)), "the save outlived the grace period"
    assert "Unable to shutdown process" in output  # torchrun's SIGKILL after the grace
    first, second = _collectives(out)
    assert first == second  # same steps on both ranks, so no rank waits in a collective alone
    assert len(first) >= 3 and max(b - a for a, b in zip(first, first[1:], strict=False)) >= 5  # not every step
    # The launcher handed its network settings to the workers; gloo really bound to "lo".
    for rank in (0, 1):
        env = json.loads((out / f"env-{rank}.json").read_text())
        assert env == {"NCCL_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "lo", "FI_PROVIDER": "efa"}


@pytest.mark.slow
def test_workers_get_the_whole_stop_window_not_torchruns_30_seconds(tmp_path):
    """A save that takes 35 s (> torchrun's default 30 s shutdown timeout) completes under the
    launcher's default grace, and the launcher reports a clean stop."""
    code, elapsed, output, out = _stop_during_save(tmp_path, save_seconds=35, grace=None)
    assert code == 143, output
    assert f"--shutdown_timeout={DEFAULT_STOP_GRACE_SECONDS}" in output
    assert all((out / f"saved-{r}").exists() for r in (0, 1)), output
    assert 35 <= elapsed < DEFAULT_STOP_GRACE_SECONDS, output


def test_torchrun_command_is_one_the_installed_torchrun_accepts(tmp_path):
    from torch.distributed.run import get_args_parser

    from ftcloud.contract import ContainerPaths
    from ftcloud.spec import TrainingSpec
    from ftcloud_train.job import JobContext

    ctx = JobContext(ContainerPaths(tmp_path), TrainingSpec(), ["algo-1", "algo-2"], "algo-2")
    cmd = torchrun_command(ctx, 8, 110)
    args = get_args_parser().parse_args(cmd[3:])
    assert args.shutdown_timeout == 110 and args.node_rank == 1 and args.nproc_per_node == "8"
    assert [args.training_script, *args.training_script_args] == ["ftcloud_train", "train"] and args.module


@pytest.mark.parametrize(
    ("environ", "grace"),
    [({}, DEFAULT_STOP_GRACE_SECONDS), ({STOP_GRACE_ENV: "45"}, 45), ({STOP_GRACE_ENV: " "}, DEFAULT_STOP_GRACE_SECONDS)],
)
def test_stop_grace_seconds(environ, grace):
    assert stop_grace_seconds(environ) == grace


@pytest.mark.parametrize("bad", ["0", "-5", "ninety", "1.5"])
def test_bad_stop_grace_names_the_variable(bad):
    from ftcloud_train.job import UserError

    with pytest.raises(UserError, match=STOP_GRACE_ENV):
        stop_grace_seconds({STOP_GRACE_ENV: bad})


@pytest.mark.slow
def test_two_process_training_stops_on_sigterm_with_one_agreed_checkpoint(tiny_model_dir, tmp_path):
    """The real entrypoint under torchrun (2 gloo ranks): SIGTERM to the launcher -> every rank
    agrees at the same step, the checkpoint is complete, exit 143, no failure recorded."""
    paths = make_job(tmp_path, tiny_model_dir, max_steps=100000, save_steps=0, logging_steps=1)
    proc = run_module(paths, background=True, env={"FTCLOUD_NPROC_PER_NODE": "2", "FTCLOUD_MASTER_ADDR": "127.0.0.1",
                                                   "FTCLOUD_MASTER_PORT": str(_free_port())})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("ftcloud-metric step=3 "):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    output = "".join(lines) + rest
    assert proc.returncode == 143, output
    saved = checkpoints.latest_complete(paths.checkpoint_dir)
    assert saved is not None and int(saved.name.split("-")[1]) >= 3, output
    assert "SIGTERM received: saving a checkpoint" in output
    # Both ranks saved that same step: each wrote its RNG state into the one checkpoint.
    assert {p.name for p in saved.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}, output
    assert not paths.failure_file.exists()


# ----------------------------------------------------------------------------- network environment

P4D = {"current_host": "algo-1", "current_instance_type": "ml.p4d.24xlarge", "network_interface_name": "eth0"}


@pytest.mark.parametrize(
    ("resource_config", "environ", "expected"),
    [
        # local runs: no resourceconfig fields, nothing set
        ({}, {}, {}),
        # a plain GPU type: only the interface
        ({"current_instance_type": "ml.g5.2xlarge", "network_interface_name": "eth0"}, {},
         {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0"}),
        # EFA with GPUDirect RDMA
        (P4D, {}, {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0", "FI_PROVIDER": "efa",
                   "FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"}),
        ({**P4D, "current_instance_type": "ml.p5en.48xlarge"}, {},
         {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0", "FI_PROVIDER": "efa",
          "FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"}),
        # EFA without RDMA: asking for RDMA there would make libfabric refuse the device
        ({**P4D, "current_instance_type": "ml.g5.48xlarge"}, {},
         {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0", "FI_PROVIDER": "efa"}),
        ({**P4D, "current_instance_type": "ml.g6e.12xlarge"}, {},
         {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0", "FI_PROVIDER": "efa"}),
        # a small size of an EFA family has no EFA
        ({**P4D, "current_instance_type": "ml.g6e.2xlarge"}, {},
         {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0"}),
        # the user's own settings win, one by one
        (P4D, {"NCCL_SOCKET_IFNAME": "ens5", "FI_PROVIDER": "tcp"},
         {"GLOO_SOCKET_IFNAME": "eth0", "FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"}),
        # heterogeneous cluster: the type comes from this host's instance group
        ({"current_host": "algo-2", "network_interface_name": "eth0",
          "instance_groups": [{"instance_group_name": "a", "instance_type": "ml.g5.2xlarge", "hosts": ["algo-1"]},
                              {"instance_group_name": "b", "instance_type": "ml.p5.48xlarge", "hosts": ["algo-2"]}]},
         {}, {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0", "FI_PROVIDER": "efa",
              "FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"}),
    ],
)
def test_distributed_environment_table(resource_config, environ, expected):
    assert distributed_environment(resource_config, environ) == expected


def test_resource_config_reaches_the_job_context(tmp_path):
    from ftcloud.contract import ContainerPaths
    from ftcloud_train.job import load_job

    paths = ContainerPaths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.hyperparameters.write_text("{}")
    paths.resource_config.write_text(json.dumps({**P4D, "hosts": ["algo-1", "algo-2"]}))
    ctx = load_job(paths)
    assert distributed_environment(ctx.resource_config, {})["FI_EFA_USE_DEVICE_RDMA"] == "1"
