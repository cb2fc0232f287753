"""The container entrypoint run as a module on a prepared /opt/ml-style tree (no SDK involved)."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import pytest

from ftcloud.contract import metric_definitions
from ftcloud_train import checkpoints

from .jobtree import make_job, metrics, run_module


def test_module_run_produces_a_loadable_adapter_metrics_and_plot(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, technique="lora", max_steps=10)
    proc = run_module(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, paths.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(paths.model_dir)
    assert tokenizer.chat_template  # shipped with the adapter
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What colour is sky?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8)
    assert out.shape[1] > ids["input_ids"].shape[1]

    m = metrics(paths)
    assert m["global_step"] == 10 and m["eval_loss"] > 0 and "eval_perplexity" in m
    png = (paths.model_dir / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    spec = json.loads((paths.model_dir / "ftcloud_spec.json").read_text())
    assert spec["technique"] == "lora" and spec["resolved"]["learning_rate"] == 3e-3
    assert json.loads((paths.model_dir / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id
    assert list(paths.tensorboard_dir.rglob("events.out.tfevents.*"))

    # Metric lines match the regexes the SDK hands SageMaker as MetricDefinitions.
    regexes = {d["Name"]: re.compile(d["Regex"]) for d in metric_definitions()}
    found = {name: [float(m.group(1)) for m in rx.finditer(proc.stdout)] for name, rx in regexes.items()}
    assert len(found["train_loss"]) >= 2 and found["train_loss"][-1] < found["train_loss"][0]
    assert found["eval_loss"] == [pytest.approx(m["eval_loss"], rel=1e-4)]
    assert found["tokens_per_second"] and all(v > 0 for v in found["tokens_per_second"])


def test_bad_hyperparameter_writes_failure_naming_the_key(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, lora_rank=8)
    proc = run_module(paths)
    assert proc.returncode != 0
    reason = paths.failure_file.read_text()
    assert "lora_rank" in reason and "lora_r" in reason and "Traceback" not in reason
    assert not (paths.model_dir / "metrics.json").exists()


def test_bad_value_names_key_and_allowed_values(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, technique="qlorra")
    assert run_module(paths).returncode != 0
    reason = paths.failure_file.read_text()
    assert "'technique'" in reason and "lora, qlora, dora, full" in reason


def test_bad_data_line_is_named_in_failure(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir)
    data = paths.channel("train") / "data.jsonl"
    lines = data.read_text().splitlines()
    lines[2] = '{"messages": [oops'
    data.write_text("\n".join(lines) + "\n")
    assert run_module(paths).returncode != 0
    assert "train/data.jsonl:3" in paths.failure_file.read_text()


def _wait_for(predicate, timeout=180.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.mark.slow
def test_kill_9_then_restart_resumes_from_last_complete_checkpoint(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, max_steps=150, save_steps=5, save_total_limit=2)
    proc = run_module(paths, background=True)
    ok = _wait_for(lambda: (c := checkpoints.latest_complete(paths.checkpoint_dir)) is not None and c.name != "checkpoint-5")
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert ok, "no checkpoint appeared"
    assert not (paths.model_dir / "metrics.json").exists(), "the run finished before it could be killed"
    last = checkpoints.latest_complete(paths.checkpoint_dir)
    # A save that was cut short leaves an unmarked directory: simulate one, it must be ignored.
    torn = paths.checkpoint_dir / "checkpoint-9999"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"half")

    second = run_module(paths)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming from {last.name}" in second.stdout
    assert "discarded incomplete checkpoint checkpoint-9999" in second.stdout
    m = metrics(paths)
    assert m["global_step"] == 150 and m["resumed_from"] == last.name
    steps = [int(s) for s in re.findall(r"ftcloud-metric step=(\d+) .*train_loss", second.stdout)]
    assert steps and min(steps) > int(last.name.split("-")[1])  # continued, did not restart at 0
    assert len([p for p in checkpoints.list_checkpoints(paths.checkpoint_dir)]) <= 2  # rotation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_stops_cleanly(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, max_steps=100000, save_steps=0, logging_steps=1)
    proc = run_module(paths, background=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("ftcloud-metric step=3 "):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert proc.returncode == 143, output
    saved = checkpoints.latest_complete(paths.checkpoint_dir)
    assert saved is not None and int(saved.name.split("-")[1]) >= 3, output
    assert "SIGTERM received" in output
    assert not paths.failure_file.exists()  # a stop is not a failure


@pytest.mark.slow
def test_two_process_torchrun_gloo_completes_with_one_artifact(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, technique="lora", max_steps=6, logging_steps=2, save_steps=3)
    proc = run_module(paths, env={"FTCLOUD_NPROC_PER_NODE": "2", "FTCLOUD_MASTER_ADDR": "127.0.0.1",
                                  "FTCLOUD_MASTER_PORT": str(_free_port())})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "distributed: 1 node(s) x 2 process(es)" in output
    assert "x2 precision" in output  # the workers saw WORLD_SIZE=2
    assert len(list(paths.model_dir.glob("adapter_model.safetensors"))) == 1
    m = metrics(paths)
    assert m["global_step"] == 6
    # rank 0 alone prints metric lines: one line per logging step, not two
    assert len(re.findall(r"^ftcloud-metric step=6 .*train_loss", proc.stdout, re.M)) == 1
    assert checkpoints.latest_complete(paths.checkpoint_dir).name == "checkpoint-6"


@pytest.mark.slow
def test_two_hosts_each_with_its_own_disk_train_together(tiny_model_dir, tmp_path):
    """Two SageMaker-style hosts (two roots, one resourceconfig each) on 127.0.0.1: the entrypoint
    relaunches under torchrun with nnodes=2; host 1 writes the artifacts; both keep checkpoints."""
    hosts = ["algo-1", "algo-2"]
    roots = [make_job(tmp_path / host, tiny_model_dir, max_steps=4, logging_steps=2, save_steps=2,
                      hosts=hosts, current_host=host) for host in hosts]
    env = {"FTCLOUD_NPROC_PER_NODE": "1", "FTCLOUD_MASTER_ADDR": "127.0.0.1", "FTCLOUD_MASTER_PORT": str(_free_port())}
    procs = [run_module(paths, env=env, background=True) for paths in roots]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out
    assert "distributed: 2 node(s) x 1 process(es)" in outputs[0] and "--node_rank=1" in outputs[1]
    assert metrics(roots[0])["global_step"] == 4
    assert not (roots[1].model_dir / "metrics.json").exists()  # one artifact set, from the first host
    for paths in roots:  # each host can resume from its own disk
        latest = checkpoints.latest_complete(paths.checkpoint_dir)
        assert latest is not None and latest.name == "checkpoint-4"
        assert (latest / "adapter_model.safetensors").is_file()
