"""The examples the README points to keep working."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Share of held-out questions the demo must answer exactly. Measured: 6/20 (0.30) served with the fp32
# base, 5/20 on a 4-bit base, same adapter; an untrained or broken path scores 0/20.
ACCURACY_FLOOR = 0.15


def test_example_job_file_is_a_valid_qlora_spec():
    import ftcloud

    spec = ftcloud.load_job(ROOT / "examples" / "job.yaml")
    assert spec.training.technique == "qlora" and spec.compute.spot is True
    assert spec.training.to_hyperparameters()["bnb_4bit_use_double_quant"] == "true"


@pytest.mark.slow
def test_sdk_quickstart_runs_offline(tmp_path):
    env = {**os.environ, "FTCLOUD_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "sdk_quickstart.py"), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Completed" in proc.stdout


def test_demo_held_out_questions_are_never_trained_on_but_their_facts_are():
    from ftcloud_train.tiny import PHRASINGS, held_out_rows, make_rows

    held_out = held_out_rows(4)
    assert len({row["messages"][0]["content"] for row in held_out}) == len(held_out) >= 8
    for seed in range(5):
        train = make_rows(400, "chat", seed, (0, 2), phrasings=4, hold_out=True)
        questions = [row["messages"][0]["content"] for row in train]
        answers = {row["messages"][1]["content"] for row in train}
        for row in held_out:
            question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
            assert not any(q == question or q.startswith(question + " ") for q in questions), question
            assert answer in answers  # the fact itself is taught, in the other phrasings
    # Callers that ask for nothing new keep the one phrasing they always had.
    assert all(row["prompt"].startswith("What colour is ") for row in make_rows(50, "prompt_completion", 3))
    assert {p.split("{thing}")[0] for p in PHRASINGS} >= {"What colour is "}


def test_evaluate_refuses_held_out_questions_that_are_in_the_training_data(tmp_path):
    from ftcloud_train.tiny import held_out_rows, make_rows, write_jsonl

    held = write_jsonl(tmp_path / "heldout.jsonl", held_out_rows(4))
    leaky = write_jsonl(tmp_path / "train.jsonl", make_rows(200, "chat", 0, (0, 1), phrasings=4))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "evaluate.py"), "no-such-endpoint", str(held),
                           "--train", str(leaky)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "also in" in proc.stderr and str(leaky) in proc.stderr


def _servers_under(root: Path) -> list[int]:
    """Pids of live processes whose environment points their ML root (a served model) under ``root``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        if any(e.startswith(b"FTCLOUD_ML_ROOT=" + str(root).encode()) for e in env):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds leftover servers through /proc")
def test_readme_demo_runs_end_to_end(tmp_path):
    """`make demo` minus the install: generate, fine-tune with QLoRA, register, approve, deploy locally,
    score held-out questions through the endpoint, undeploy; nothing is left serving."""
    home = tmp_path / "home"
    env = {**os.environ, "FTCLOUD_DEMO_DIR": str(tmp_path)}
    env.pop("FTCLOUD_HOME", None)
    proc = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh")], capture_output=True, text=True,
                          env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Completed" in out

    # Scored on the questions the data generator held out, and none of them is in the training data.
    from ftcloud_train.tiny import held_out_rows

    held_out = [row["messages"][0]["content"] for row in held_out_rows(4)]
    train = (tmp_path / "train.jsonl").read_text()
    assert not any(json.dumps(q)[:-1] in train for q in held_out)
    asked = [line[3:] for line in out.splitlines() if line.startswith("Q: ")]
    assert asked == held_out
    accuracy = re.search(r"^accuracy: (\d+)/(\d+)$", out, re.MULTILINE)
    assert accuracy, out[-3000:]
    correct, total = int(accuracy[1]), int(accuracy[2])
    assert total == len(held_out) >= 8
    assert correct >= ACCURACY_FLOOR * total, out[-3000:]

    # The lifecycle really happened: an Approved version exists, and the endpoint is gone again.
    cli_env = {**env, "FTCLOUD_HOME": str(home)}

    def cli_json(*args: str):
        done = subprocess.run(["ftcloud", *args, "--backend", "local", "--json"], capture_output=True, text=True,
                              env=cli_env, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    versions = cli_json("versions")
    assert [v["status"] for v in versions] == ["Approved"]
    assert versions[0]["lineage"]["training_job"].startswith("demo-qlora-")
    assert f"Undeployed {versions[0]['lineage']['training_job']}" in out
    assert cli_json("endpoints") == []
    assert _servers_under(home) == []
