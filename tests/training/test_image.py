"""The container image: same pins as CI, root as SageMaker expects, no secrets, and what its
entrypoint script really does with ``train`` and ``serve`` (Docker cannot run here, so the
script runs directly against a directory laid out like /opt/ml)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from .jobtree import make_job

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "training_image" / "Dockerfile").read_text()
SCRIPT = ROOT / "training_image" / "docker-entrypoint.sh"
OTHER_UID = 65534  # nobody: stands for any non-root user the image might be run as


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, ``\\`` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def test_instructions_parser_joins_continuations_and_skips_comments():
    parsed = instructions("# c\nFROM x\nRUN a \\\n  && b\n\nUSER root\n")
    assert parsed == [("FROM", "x"), ("RUN", "a    && b"), ("USER", "root")]


def test_image_installs_ci_pins_runs_as_root_and_declares_the_serving_contract():
    parsed = instructions(DOCKERFILE)
    args = {}
    for keyword, value in parsed:
        args.setdefault(keyword, []).append(value)
    assert 'pip install -c constraints.txt ".[train,serve,data]"' in args["RUN"]
    # SageMaker mounts /opt/ml at run time and expects root; an explicit final USER root also
    # guards against a base image that switches user.
    assert args["USER"][-1] in ("root", "0")
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in args["LABEL"]
    assert "8080" in args["EXPOSE"]
    # exec form, so the script (and, after its exec, python) receives SageMaker's SIGTERM
    entrypoint = json.loads(args["ENTRYPOINT"][-1])
    assert f"training_image/docker-entrypoint.sh {entrypoint[0]}" in args["COPY"]
    assert json.loads(args["CMD"][-1]) == ["train"]
    assert not re.search(r"\b(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|\w*SECRET\w*|\w*PASSWORD\w*|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY)\s*=", DOCKERFILE, re.I)
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    import peft
    import transformers

    assert transformers.__version__ == pins["transformers"] and peft.__version__ == pins["peft"]


def _script(*args: str, ml_root: Path, as_other_user: bool = False, script: Path = SCRIPT):
    env = {**os.environ, "FTCLOUD_ML_ROOT": str(ml_root)}
    cmd = ["sh", str(script), *args]
    if as_other_user and os.geteuid() == 0:
        cmd = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_entrypoint_script_dispatches_train(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, lora_rank=4)  # fails fast in hyperparameter parsing
    proc = _script("train", ml_root=paths.root)
    assert proc.returncode == 1 and "lora_rank" in paths.failure_file.read_text()
    bad = _script("bogus", ml_root=paths.root)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_entrypoint_script_hands_serve_and_its_arguments_to_the_server(tmp_path):
    # `serve` skips the write check (an endpoint may mount /opt/ml/model read-only): a file where
    # checkpoints/ should be is ignored. The script passes `--port` through to the server, which
    # binds that port first and then refuses an empty model dir, naming it.
    (tmp_path / "checkpoints").write_text("not a directory")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _script("serve", "--port", str(port), "--host", "127.0.0.1", ml_root=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert f"no model in {tmp_path / 'model'}" in proc.stderr
    assert f'"event": "listening", "host": "127.0.0.1", "port": {port}' in proc.stdout
    assert "not writable" not in proc.stderr


def test_entrypoint_script_names_the_directory_and_uid_it_cannot_write(tmp_path):
    # A file where a directory should be: not writable for any user, root included.
    (tmp_path / "checkpoints").write_text("not a directory")
    proc = _script("train", ml_root=tmp_path)
    expected = f"ftcloud: {tmp_path / 'checkpoints'} is not writable by uid {os.geteuid()}"
    assert proc.returncode == 1
    assert proc.stderr.startswith(expected)
    assert (tmp_path / "output" / "failure").read_text().startswith(expected)  # training never started
    assert "SageMaker runs the image as root" in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_entrypoint_script_refuses_a_non_root_user_on_root_owned_mounts():
    """The defect itself: /opt/ml mounted root-owned, the image run as another user."""
    uid = OTHER_UID if os.geteuid() == 0 else os.geteuid()
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's 0700 tmp root: uid must reach it
        Path(tmp).chmod(0o755)
        script = Path(shutil.copy(SCRIPT, tmp))  # readable by uid wherever the checkout lives
        ml = Path(tmp) / "ml"
        ml.mkdir(mode=0o755)
        (ml / "model").mkdir()
        (ml / "output").mkdir()
        if os.geteuid() == 0:
            os.chown(ml / "output", OTHER_UID, OTHER_UID)  # output writable, model root-owned
        else:
            (ml / "model").chmod(0o555)
        proc = _script("train", ml_root=ml, as_other_user=True, script=script)
        expected = f"ftcloud: {ml / 'model'} is not writable by uid {uid}"
        assert proc.returncode == 1 and proc.stderr.startswith(expected)
        assert (ml / "output" / "failure").read_text().startswith(expected)

        # Nothing writable, not even output/: the reason still reaches stderr (the job's log).
        shutil.rmtree(ml / "output")
        ml.chmod(0o555)
        proc = _script("train", ml_root=ml, as_other_user=True, script=script)
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"ftcloud: {ml / 'output'} is not writable by uid {uid}")
        assert not (ml / "output").exists()
        ml.chmod(0o755)
        (ml / "model").chmod(0o755)
