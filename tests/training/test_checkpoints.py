"""Only complete checkpoints are resumed from; rotation never deletes the newest."""

from __future__ import annotations

from ftcloud_train import checkpoints
from ftcloud_train.job import JobContext
from ftcloud_train.launcher import needs_relaunch, torchrun_command


def _ckpt(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(b"x" * 10)
    if complete:
        checkpoints.mark_complete(path)
    return path


def test_latest_complete_skips_torn_saves(tmp_path):
    _ckpt(tmp_path, 5)
    _ckpt(tmp_path, 10)
    _ckpt(tmp_path, 15, complete=False)
    assert checkpoints.latest_complete(tmp_path).name == "checkpoint-10"
    assert [p.name for p in checkpoints.discard_incomplete(tmp_path)] == ["checkpoint-15"]
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-10"]


def test_rotation_keeps_newest_complete_and_in_flight(tmp_path):
    for step in (5, 10, 15):
        _ckpt(tmp_path, step)
    _ckpt(tmp_path, 20, complete=False)  # being written right now
    checkpoints.rotate(tmp_path, keep=2)
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-15", "checkpoint-20"]


def test_numeric_not_lexical_order(tmp_path):
    _ckpt(tmp_path, 9)
    _ckpt(tmp_path, 100)
    assert checkpoints.latest_complete(tmp_path).name == "checkpoint-100"


def test_multi_host_relaunch_command(monkeypatch, tmp_path):
    from ftcloud.contract import ContainerPaths
    from ftcloud.spec import TrainingSpec

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("FTCLOUD_NPROC_PER_NODE", "1")
    monkeypatch.delenv("FTCLOUD_MASTER_ADDR", raising=False)
    ctx = JobContext(ContainerPaths(tmp_path), TrainingSpec(), ["algo-1", "algo-2", "algo-3"], "algo-2")
    assert needs_relaunch(ctx) == 1
    cmd = torchrun_command(ctx, 1)
    assert "--nnodes=3" in cmd and "--node_rank=1" in cmd and "--master_addr=algo-1" in cmd
    single = JobContext(ContainerPaths(tmp_path), TrainingSpec(), ["algo-1"], "algo-1")
    assert needs_relaunch(single) == 0
    monkeypatch.setenv("LOCAL_RANK", "0")  # already a worker: never relaunch again
    assert needs_relaunch(ctx) == 0
