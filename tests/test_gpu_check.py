"""bench/gpu_check.py runs on a machine without a GPU: CPU rows train for real, GPU rows say why they were skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: gpu_check runs its GPU plan (minutes), not the CPU one")
    out = tmp_path_factory.mktemp("gpu-check") / "results.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    return proc, json.loads(out.read_text()) if out.exists() else None


def test_cpu_rows_train_and_learn(cpu_run):
    proc, document = cpu_run
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = {(r["check"], r["status"]): r for r in document["results"]}
    for check in ("lora", "torchrun"):
        row = rows[(check, "ok")]
        assert row["model"] == "tiny"
        assert row["loss_fell"] and row["loss_last"] < row["loss_first"]
        assert row["steps"] == 10
        assert row["tokens_per_second"] > 0
        assert row["precision"] == "fp32"
        assert row["attention"]  # the kernel the recipe reported using
        assert row["peak_gpu_memory_gb"] is None and row["mfu"] is None  # no GPU, no GPU numbers
        assert 0 < row["plan_gpu_memory_gb"] < 0.05  # the planner's estimate for the tiny model (~10 MB)
    assert rows[("torchrun", "ok")]["launcher"] == "torchrun"
    assert rows[("torchrun", "ok")]["extra"]["process_group"] == "gloo"
    assert document["environment"]["device"] == "cpu"


def test_gpu_rows_are_reported_as_skipped_with_the_reason(cpu_run):
    proc, document = cpu_run
    skipped = [r for r in document["results"] if r["status"] == "skipped"]
    assert {(r["check"], r["model"]) for r in skipped} == {
        ("lora", "llama3-8b"), ("qlora", "llama3-8b"), ("dora", "llama3.2-1b"), ("full", "llama3.2-1b"),
        ("torchrun", "llama3.2-1b"),
    }
    assert {r["batching"] for r in skipped if r["check"] == "lora"} == {"packed", "length_grouped"}
    assert all("CUDA" in r["detail"] for r in skipped)


def test_the_table_lists_every_row(cpu_run):
    proc, document = cpu_run
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("check "))
    assert "tokens/s" in lines[header] and "MFU" in lines[header] and "peak GPU GiB" in lines[header]
    assert "plan GiB" in lines[header]
    body = [line.split() for line in lines[header + 2: header + 2 + len(document["results"])]]
    assert [(cells[0], cells[1]) for cells in body] == [(r["check"], r["model"]) for r in document["results"]]
    statuses = [cells[7] for cells in body]
    assert statuses.count("ok") == 2 and statuses.count("skipped") == 7
    assert "needs a CUDA GPU" in proc.stdout  # the reason is printed, not only counted


def test_mfu_and_peak_table():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))

    assert gpu_check.peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_tflops("NVIDIA A10G") == 125.0
    assert gpu_check.peak_tflops("NVIDIA L40S") == 362.0
    assert gpu_check.peak_tflops("NVIDIA L4") == 121.0
    assert gpu_check.peak_tflops("Some Future GPU") is None
    # full fine-tuning: 6 N FLOPs per token; 1e9 params at 1e4 tokens/s on a 100 TFLOPS GPU -> 60%
    assert gpu_check.mfu(1e4, 10**9, 10**9, 100.0) == pytest.approx(0.6)
    # adapters: frozen weights get no gradient, 4 N (+ 2 N' for the few trainable ones)
    assert gpu_check.mfu(1e4, 10**9, 0, 100.0) == pytest.approx(0.4)
    assert gpu_check.mfu(None, 10**9, 0, 100.0) is None and gpu_check.mfu(1e4, 10**9, 0, None) is None
