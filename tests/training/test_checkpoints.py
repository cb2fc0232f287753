"""Checkpoints count only when their files match the marker's manifest and load.

SageMaker syncs ``/opt/ml/checkpoints`` to S3 file by file in no order and restores it at the next
start, so the marker can arrive without (or next to stale) weights; a checkpoint can also match its
manifest and still not load. Neither may make every retry fail, and rotation must never delete the
only good checkpoint.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from ftcloud.contract import CHECKPOINT_COMPLETE_MARKER
from ftcloud_train import checkpoints
from ftcloud_train.job import JobContext
from ftcloud_train.launcher import needs_relaunch, torchrun_command

from .jobtree import make_job, metrics, run_module


def _ckpt(root, step, complete=True, payload=b"x" * 10):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(payload)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        checkpoints.mark_complete(path)
    return path


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------- manifest
def test_latest_complete_skips_torn_saves(tmp_path):
    _ckpt(tmp_path, 5)
    _ckpt(tmp_path, 10)
    _ckpt(tmp_path, 15, complete=False)
    assert checkpoints.latest_complete(tmp_path).name == "checkpoint-10"
    notes = checkpoints.sort_out(tmp_path, probe=False)
    assert notes == ["discarded incomplete checkpoint checkpoint-15 (a save was interrupted)"]
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-10"]


def test_marker_carries_every_file_with_size_and_fingerprint(tmp_path):
    path = _ckpt(tmp_path, 7)
    (path / "sub").mkdir()
    (path / "sub" / "adapter.safetensors").write_bytes(b"abc")
    checkpoints.mark_complete(path)
    manifest = json.loads((path / CHECKPOINT_COMPLETE_MARKER).read_text())
    assert manifest["step"] == 7
    assert set(manifest["files"]) == {"weights.bin", "trainer_state.json", "sub/adapter.safetensors"}
    assert manifest["files"]["sub/adapter.safetensors"]["size"] == 3
    assert not list(path.glob(".*tmp"))


def _tear(path: Path, how: str) -> None:
    weights = path / "weights.bin"
    if how == "missing":  # the marker reached S3, the weights did not
        weights.unlink()
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[:-3])
    elif how == "changed":  # same size: the weights of another save of the same step
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))


@pytest.mark.parametrize(("how", "reason"), [("missing", "missing"), ("truncated", "size"), ("changed", "checksum")])
def test_marker_without_matching_weights_is_not_complete_and_the_previous_is_chosen(tmp_path, how, reason):
    _ckpt(tmp_path, 5)
    torn = _ckpt(tmp_path, 10, payload=bytes(range(256)) * 40)
    _tear(torn, how)
    assert (torn / CHECKPOINT_COMPLETE_MARKER).is_file()  # the marker alone proved nothing
    assert not checkpoints.is_complete(torn)
    assert checkpoints.latest_complete(tmp_path).name == "checkpoint-5"

    notes = checkpoints.sort_out(tmp_path, probe=False)
    assert len(notes) == 1 and notes[0].startswith(f"set aside checkpoint checkpoint-10 as checkpoint-10.bad-{reason}")
    # set aside, not deleted: kept for inspection, out of listing, resume and rotation
    assert _names(tmp_path) == ["checkpoint-10.bad-" + reason, "checkpoint-5"]
    assert checkpoints.agreed_latest(tmp_path).name == "checkpoint-5"


def test_old_format_marker_is_set_aside_not_trusted(tmp_path):
    """Markers written before manifests existed (``step=N``) cannot be checked: not complete.

    A SageMaker job keeps one image for all its attempts and the SDK gives every job its own S3
    checkpoint prefix, so only a checkpoint copied from an older job can carry one; it is kept
    (``.bad-manifest``) so a user can still resume from it by hand.
    """
    old = tmp_path / "checkpoint-5"
    old.mkdir()
    (old / "weights.bin").write_bytes(b"w")
    (old / CHECKPOINT_COMPLETE_MARKER).write_text("step=5\n")
    assert not checkpoints.is_complete(old)
    assert checkpoints.latest_complete(tmp_path) is None
    notes = checkpoints.sort_out(tmp_path, probe=False)
    assert "has no manifest" in notes[0]
    assert _names(tmp_path) == ["checkpoint-5.bad-manifest"]
    assert (tmp_path / "checkpoint-5.bad-manifest" / "weights.bin").read_bytes() == b"w"


def test_fingerprint_of_a_large_file_sees_its_head_tail_and_samples_but_not_reads_it_all(tmp_path, monkeypatch):
    big = tmp_path / "optimizer.pt"
    size = 40 << 20
    big.write_bytes(random.Random(0).randbytes(size))
    reference = checkpoints.fingerprint(big)
    read = []
    real_open = open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def read(self, n=-1):
            data = self.fh.read(n)
            read.append(len(data))
            return data

        def seek(self, offset):
            return self.fh.seek(offset)

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: Counting(real_open(p, mode, *a, **k)))
    assert checkpoints.fingerprint(big) == reference
    monkeypatch.undo()
    assert sum(read) < 4 << 20  # cheap: ~3 MiB of a 40 MiB file
    for offset in (10, size - 10):  # head and tail (a torch.save zip ends with every record's CRC)
        data = bytearray(big.read_bytes())
        data[offset] ^= 1
        big.write_bytes(bytes(data))
        assert checkpoints.fingerprint(big) != reference
        data[offset] ^= 1
        big.write_bytes(bytes(data))
    assert checkpoints.fingerprint(big) == reference


def test_files_that_match_the_manifest_but_do_not_open_are_set_aside(tmp_path):
    import torch
    from safetensors.torch import save_file

    for step in (5, 10):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        save_file({"lora_A": torch.ones(2, 2)}, path / "adapter_model.safetensors")
        torch.save({"state": {}, "param_groups": []}, path / "optimizer.pt")
        (path / "training_args.bin").write_bytes(b"a full pickle the Trainer never reads on resume")
        checkpoints.mark_complete(path)
    damaged = tmp_path / "checkpoint-10" / "adapter_model.safetensors"
    damaged.write_bytes(b"\xff" * 8 + damaged.read_bytes()[8:])  # header length garbled, same size
    checkpoints.mark_complete(tmp_path / "checkpoint-10")  # the manifest alone cannot tell
    assert checkpoints.is_complete(tmp_path / "checkpoint-10")

    notes = checkpoints.sort_out(tmp_path)
    assert len(notes) == 1 and "checkpoint-10.bad-unreadable: adapter_model.safetensors does not open" in notes[0]
    assert checkpoints.agreed_latest(tmp_path).name == "checkpoint-5"


# ---------------------------------------------------------------------------- rotation
def test_rotation_keeps_newest_complete_and_in_flight(tmp_path):
    for step in (5, 10, 15):
        _ckpt(tmp_path, step)
    _ckpt(tmp_path, 20, complete=False)  # being written right now
    checkpoints.rotate(tmp_path, keep=2)
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-15", "checkpoint-20"]


def test_rotation_never_deletes_the_only_good_checkpoint(tmp_path):
    _ckpt(tmp_path, 5)
    torn = _ckpt(tmp_path, 10)  # restored from S3: marker, no weights
    (torn / "weights.bin").unlink()
    assert checkpoints.rotate(tmp_path, keep=1) == []
    assert checkpoints.is_complete(tmp_path / "checkpoint-5")
    _ckpt(tmp_path, 15)  # a good newer one: now the older good one may go
    assert [p.name for p in checkpoints.rotate(tmp_path, keep=1)] == ["checkpoint-5"]
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-15"]


def test_numeric_not_lexical_order(tmp_path):
    _ckpt(tmp_path, 9)
    _ckpt(tmp_path, 100)
    assert checkpoints.latest_complete(tmp_path).name == "checkpoint-100"


# ---------------------------------------------------------------------------- load failures
def _load_optimizer_and_scheduler(error: BaseException):  # named like the Trainer's loader
    raise error


def _training_step(error: BaseException):
    raise error


def _caught(fn, error):
    try:
        fn(error)
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("did not raise")


def test_only_failures_inside_the_trainers_loaders_condemn_a_checkpoint():
    import torch

    assert checkpoints.failed_while_loading(_caught(_load_optimizer_and_scheduler, ValueError("groups differ")))
    assert not checkpoints.failed_while_loading(_caught(_training_step, ValueError("nan loss")))
    # out of memory while loading is the machine's limit, not the checkpoint's fault
    assert not checkpoints.failed_while_loading(_caught(_load_optimizer_and_scheduler, torch.OutOfMemoryError("oom")))
    assert not checkpoints.failed_while_loading(_caught(_load_optimizer_and_scheduler, MemoryError()))


def test_the_real_trainer_failing_to_load_versus_failing_to_train(tiny_model_dir, tmp_path):
    """The loader names in LOAD_FUNCTIONS are the ones transformers really calls."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    rows = [{"input_ids": [1, 5, 6, 7, 2], "labels": [1, 5, 6, 7, 2]}] * 8

    def trainer(max_steps, callbacks=()):
        args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, save_steps=2, save_strategy="steps",
                                 per_device_train_batch_size=2, use_cpu=True, report_to=[], logging_steps=100,
                                 disable_tqdm=True)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return Trainer(model=model, args=args, train_dataset=rows, callbacks=list(callbacks))

    trainer(2).train()
    saved = tmp_path / "checkpoint-2"
    assert (saved / "optimizer.pt").is_file()

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise RuntimeError("training blew up after a clean resume")

    with pytest.raises(RuntimeError) as during_training:
        trainer(4, [Boom()]).train(resume_from_checkpoint=str(saved))
    assert not checkpoints.failed_while_loading(during_training.value)

    state = torch.load(saved / "optimizer.pt", weights_only=True)
    state["param_groups"][0]["params"] = state["param_groups"][0]["params"][:1]  # does not fit the model
    torch.save(state, saved / "optimizer.pt")
    with pytest.raises(ValueError) as while_loading:
        trainer(4).train(resume_from_checkpoint=str(saved))
    assert checkpoints.failed_while_loading(while_loading.value)

    (saved / "trainer_state.json").write_text("{not json")
    with pytest.raises(Exception) as bad_state:  # noqa: PT011 - whatever json raises
        trainer(4).train(resume_from_checkpoint=str(saved))
    assert checkpoints.failed_while_loading(bad_state.value)


# ---------------------------------------------------------------------------- the entrypoint
@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A LoRA job that wrote checkpoint-4 and checkpoint-8 (both complete) and finished at step 8."""
    paths = make_job(tmp_path_factory.mktemp("trained"), tiny_model_dir, technique="lora", max_steps=8,
                     save_steps=4, save_total_limit=3, logging_steps=4)
    proc = run_module(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p.name for p in checkpoints.list_checkpoints(paths.checkpoint_dir)] == ["checkpoint-4", "checkpoint-8"]
    return paths


def _next_attempt(trained, tmp_path, tiny_model_dir, restore):
    """A fresh job tree (max_steps 12) whose checkpoint dir ``restore(src, dst)`` fills like SageMaker."""
    paths = make_job(tmp_path / "attempt", tiny_model_dir, technique="lora", max_steps=12, save_steps=4,
                     save_total_limit=3, logging_steps=4)
    paths.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    restore(trained.checkpoint_dir, paths.checkpoint_dir)
    return paths


def _s3_order_sync(src: Path, dst: Path, cut: dict[str, int], seed: int = 0) -> None:
    """Copy like SageMaker's sync: file by file, in no order, each checkpoint's marker first; a spot
    interruption stops checkpoint ``name``'s copy after ``cut[name]`` files."""
    rng = random.Random(seed)
    for ckpt in checkpoints.list_checkpoints(src):
        files = [p for p in ckpt.rglob("*") if p.is_file() and p.name != CHECKPOINT_COMPLETE_MARKER]
        rng.shuffle(files)
        files = [ckpt / CHECKPOINT_COMPLETE_MARKER, *files][: cut.get(ckpt.name, len(files) + 1)]
        for path in files:
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


@pytest.mark.slow
def test_s3_order_sync_cut_short_then_resume_uses_the_previous_checkpoint(trained, tmp_path, tiny_model_dir):
    paths = _next_attempt(trained, tmp_path, tiny_model_dir,
                          lambda src, dst: _s3_order_sync(src, dst, cut={"checkpoint-8": 3}))
    assert (paths.checkpoint_dir / "checkpoint-8" / CHECKPOINT_COMPLETE_MARKER).is_file()
    proc = run_module(paths)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"set aside checkpoint checkpoint-8 as checkpoint-8\.bad-missing: \S+ is listed", out), out
    assert "resuming from checkpoint-4" in out
    m = metrics(paths)
    assert m["resumed_from"] == "checkpoint-4" and m["global_step"] == 12
    # the torn copy is kept aside; training wrote a fresh, complete checkpoint-8 and checkpoint-12
    assert (paths.checkpoint_dir / "checkpoint-8.bad-missing").is_dir()
    assert checkpoints.is_complete(paths.checkpoint_dir / "checkpoint-8")
    assert checkpoints.latest_complete(paths.checkpoint_dir).name == "checkpoint-12"


def _copy_all(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)


def _garbage_optimizer(ckpt: Path) -> None:
    (ckpt / "optimizer.pt").write_bytes(b"PK\x03\x04 not a zip any more" * 100)


def _mismatched_optimizer(ckpt: Path) -> None:
    import torch

    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    state["param_groups"][0]["params"] = state["param_groups"][0]["params"][:1]  # opens, does not fit
    torch.save(state, ckpt / "optimizer.pt")


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "reason"), [(_garbage_optimizer, "unreadable"), (_mismatched_optimizer, "load")])
def test_checkpoint_matching_its_manifest_that_does_not_load_is_set_aside(trained, tmp_path, tiny_model_dir,
                                                                          damage, reason):
    """The manifest is regenerated after the damage, so only opening/loading can tell."""
    paths = _next_attempt(trained, tmp_path, tiny_model_dir, _copy_all)
    newest = paths.checkpoint_dir / "checkpoint-8"
    damage(newest)
    checkpoints.mark_complete(newest)
    assert checkpoints.is_complete(newest)

    proc = run_module(paths)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"checkpoint-8.bad-{reason}" in out
    assert (paths.checkpoint_dir / f"checkpoint-8.bad-{reason}" / "optimizer.pt").is_file()
    m = metrics(paths)
    assert m["resumed_from"] == "checkpoint-4" and m["global_step"] == 12
    steps = [int(s) for s in re.findall(r"ftcloud-metric step=(\d+) .*train_loss", proc.stdout)]
    assert steps and min(steps) > 4  # continued from checkpoint-4, did not restart at 0


# ---------------------------------------------------------------------------- hosts agree
def _agree(rank: int, world: int, port: int, dirs: list[str], out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        chosen = checkpoints.agreed_latest(Path(dirs[rank]))
        Path(out, f"rank{rank}").write_text(chosen.name if chosen else "none")
    finally:
        dist.destroy_process_group()


def test_hosts_resume_from_the_newest_step_complete_on_all_of_them(tmp_path):
    """Host 1's checkpoint-10 reached S3 whole, host 2's did not: both resume from checkpoint-5."""
    import socket

    import torch.multiprocessing as mp

    hosts = [tmp_path / "algo-1", tmp_path / "algo-2"]
    for host in hosts:
        _ckpt(host, 5)
        _ckpt(host, 10)
    (hosts[1] / "checkpoint-10" / "weights.bin").unlink()
    assert checkpoints.latest_complete(hosts[0]).name == "checkpoint-10"  # alone, host 1 would pick 10
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_agree, args=(2, port, [str(h) for h in hosts], str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["checkpoint-5", "checkpoint-5"]


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
