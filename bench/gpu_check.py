"""GPU check: the real training entrypoint on the shapes users run, with the numbers that matter.

Every run goes through ``python -m ftcloud_train train`` on a directory laid out like ``/opt/ml``
(as the tests do), with ``precision=auto`` and the attention kernel the recipe picks. Models are
random-initialised from configs and saved with ``save_pretrained`` next to the generated tokenizer
of :mod:`ftcloud_train.tiny`: nothing is downloaded.

On a CUDA GPU (about 8 minutes on one H200-class GPU; ``--budget-seconds`` caps it):

| check    | model                                           | technique | batching               |
|----------|-------------------------------------------------|-----------|------------------------|
| lora     | Llama-3-8B shape (4096 x 32 layers, 8 KV heads) | lora      | packed, length_grouped |
| qlora    | Llama-3-8B shape                                | qlora     | what ``auto`` picks    |
| dora     | Llama-3.2-1B shape (2048 x 16 layers)           | dora      | what ``auto`` picks    |
| full     | Llama-3.2-1B shape                              | full      | packed, length_grouped |
| torchrun | Llama-3.2-1B shape                              | lora      | what ``auto`` picks    |

The torchrun row runs ``python -m torch.distributed.run --standalone --nproc_per_node=1`` around the
entrypoint: as a torchrun worker the recipe gets an NCCL process group even for one process, so
the stop agreement and the checkpoint barrier run as NCCL collectives on CUDA tensors (they must
not raise), and the row checks that NCCL really created a communicator and a checkpoint was saved.

On CPU the GPU rows are reported as skipped (saying why) and a tiny model runs a handful of
steps of lora and the torchrun row (gloo) instead, in under a minute: that checks the script
itself (job trees, parsing, the table) and the torchrun path.

Columns:

* tokens/s: non-padding tokens per second, mean of the metric lines after the first (which
  includes start-up);
* peak GPU memory: ``peak_gpu_memory_bytes`` of ``metrics.json`` (``torch.cuda.max_memory_allocated``
  in the training process, before evaluation);
* plan GiB: what ``ftcloud plan``'s estimator predicts for the same run (tensors, without the CUDA
  context that ``max_memory_allocated`` does not see either; an upper bound for length-grouped rows);
* MFU: model FLOPs per token x tokens/s / the GPU's dense peak (table below). Model FLOPs per
  token = 2N forward + 2N backward through the activations + 2N' weight gradients, where N counts
  the parameters that do matrix multiplies (input embeddings excluded, the output head included)
  and N' the trainable ones: 6N for full fine-tuning, about 4N for adapters (frozen weights get no
  gradient). Attention-score FLOPs and recomputation under gradient checkpointing are not counted
  (counting them would give hardware, not model, FLOPs utilisation);
* loss: first and last ``train_loss`` of ``loss_history.json``; the row fails if it did not fall.

Dense (no sparsity) tensor-core peaks, TFLOPS, from NVIDIA's datasheets: see :data:`PEAK_TFLOPS`.

    python bench/gpu_check.py [--json out.json] [--steps N] [--budget-seconds 480] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: GPU name fragment -> dense bf16 TFLOPS (fp16 for GPUs without bf16: V100, T4). First match wins,
#: so longer names come first. Defined once, in the planner's GPU table (A10G: the A10's figure).
from ftcloud.planning.instances import GPUS  # noqa: E402

PEAK_TFLOPS: list[tuple[str, float]] = [(name, gpu.peak_tflops) for name, gpu in GPUS.items()]

#: Model shapes (transformers LlamaConfig fields). ``tiny`` is the CPU stand-in.
SHAPES: dict[str, dict] = {
    "llama3-8b": dict(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    ),
    "llama3.2-1b": dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=8192, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=512, max_position_embeddings=4096, tie_word_embeddings=False,
        initializer_range=0.2,  # as ftcloud_train.tiny: lets a LoRA on a tiny model fit the data fast
    ),
}


@dataclass
class Check:
    """One training run of the plan."""

    name: str
    shape: str
    technique: str
    batching: str = "auto"
    torchrun: bool = False


GPU_PLAN = [
    Check("lora", "llama3-8b", "lora", "packed"),
    Check("lora", "llama3-8b", "lora", "length_grouped"),
    Check("qlora", "llama3-8b", "qlora"),
    Check("dora", "llama3.2-1b", "dora"),
    Check("full", "llama3.2-1b", "full", "packed"),
    Check("full", "llama3.2-1b", "full", "length_grouped"),
    Check("torchrun", "llama3.2-1b", "lora", torchrun=True),
]
CPU_PLAN = [
    Check("lora", "tiny", "lora", "length_grouped"),
    Check("torchrun", "tiny", "lora", "length_grouped", torchrun=True),
]


@dataclass
class Environment:
    device: str  # "cuda" | "cpu"
    gpu_name: str | None
    gpu_count: int
    bf16: bool
    peak_tflops: float | None
    flash_attn_installed: bool
    torch: str
    transformers: str


@dataclass
class Result:
    check: str
    model: str
    technique: str
    batching: str
    launcher: str
    status: str = "ok"  # ok | failed | skipped
    detail: str = ""
    attention: str | None = None
    precision: str | None = None
    steps: int | None = None
    tokens_per_second: float | None = None
    peak_gpu_memory_gb: float | None = None
    plan_gpu_memory_gb: float | None = None  # the planner's estimate of the same peak (tensors, no overhead)
    mfu: float | None = None
    loss_first: float | None = None
    loss_last: float | None = None
    seconds: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def loss_fell(self) -> bool:
        return self.loss_first is not None and self.loss_last is not None and self.loss_last < self.loss_first


# ---------------------------------------------------------------------------- environment
def detect_environment() -> Environment:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else None
    try:
        import flash_attn  # noqa: F401

        flash = True
    except ImportError:
        flash = False
    return Environment(
        device="cuda" if cuda else "cpu",
        gpu_name=name,
        gpu_count=torch.cuda.device_count() if cuda else 0,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        peak_tflops=peak_tflops(name) if name else None,
        flash_attn_installed=flash,
        torch=torch.__version__,
        transformers=transformers.__version__,
    )


def peak_tflops(gpu_name: str) -> float | None:
    """Dense tensor-core peak of a GPU by its CUDA name; None for one not in :data:`PEAK_TFLOPS`."""
    for fragment, tflops in PEAK_TFLOPS:
        if fragment in gpu_name:
            return tflops
    return None


# ---------------------------------------------------------------------------- models and data
def build_model(out_dir: Path, shape: str, device: str) -> dict:
    """Random-init a Llama of ``shape`` with the generated tokenizer; save both. Returns its sizes."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ftcloud_train.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    fields = dict(SHAPES[shape])
    fields["vocab_size"] = max(fields["vocab_size"], len(tokenizer))
    config = LlamaConfig(
        **fields, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # what a hub checkpoint holds
    torch.manual_seed(0)
    with torch.device(device):  # initialising 8B parameters is seconds on a GPU, minutes on a CPU
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings().weight.numel()
    matmul = total - (0 if config.tie_word_embeddings else embeddings)  # lookups are not matmuls
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"total_parameters": total, "matmul_parameters": matmul}


def hyperparameters(check: Check, model_dir: Path, steps: int, on_gpu: bool) -> dict:
    """What the job gets (as strings, like SageMaker delivers them)."""
    hp = {
        "model": str(model_dir), "technique": check.technique, "batching": check.batching,
        "max_steps": steps, "gradient_accumulation_steps": 1, "warmup_ratio": 0.0,
        "lr_scheduler_type": "constant", "validation_split": 0.0, "save_steps": 0, "seed": 0,
    }
    if on_gpu:
        # about 4k tokens per micro-batch either way: 2 packed rows of 2048, or 32 grouped samples
        batch = 2 if check.batching == "packed" else 32
        hp |= {"max_length": 2048, "per_device_train_batch_size": batch, "logging_steps": 5,
               "learning_rate": 1e-4 if check.technique == "full" else 5e-4}
    else:
        hp |= {"max_length": 96, "per_device_train_batch_size": 8, "logging_steps": 2,
               "learning_rate": 1e-3 if check.technique == "full" else 3e-3}
    if check.torchrun:
        hp["save_steps"] = max(steps // 2, 1)  # a checkpoint: its barrier is a collective too
    return {k: str(v) for k, v in hp.items()}


def make_job(root: Path, hp: dict, rows: list[dict]):
    from ftcloud.contract import ContainerPaths
    from ftcloud_train.tiny import write_jsonl

    paths = ContainerPaths(root)
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    paths.hyperparameters.write_text(json.dumps(hp))
    paths.resource_config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    paths.input_data_config.write_text(json.dumps({"train": {"ContentType": "application/jsonlines"}}))
    write_jsonl(paths.channel("train") / "data.jsonl", rows)
    return paths


# ---------------------------------------------------------------------------- one run
def run_entrypoint(paths, torchrun: bool, on_gpu: bool, timeout: float, log_file: Path) -> tuple[int, str]:
    """``python -m ftcloud_train train`` on the tree (or under a 1-process torchrun); returns (code, output)."""
    from ftcloud.contract import ROOT_ENV

    env = {**os.environ, ROOT_ENV: str(paths.root), "PYTHONUNBUFFERED": "1",
           "FTCLOUD_NPROC_PER_NODE": "1"}  # one GPU: the launcher must not spread over all of them
    cmd = [sys.executable, "-m", "ftcloud_train", "train"]
    if torchrun:
        # torchrun sets LOCAL_RANK, so the recipe trains as a worker: Accelerate then initialises a
        # process group even for one process (NCCL on CUDA, gloo on CPU) and every collective runs.
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *cmd[1:]]
        env["NCCL_DEBUG"] = "VERSION"  # NCCL prints its version when the first collective creates a communicator
    with log_file.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: torchrun's workers too
            proc.wait()
            code = -9
    return code, log_file.read_text(errors="replace")


def read_results(paths, output: str, result: Result, sizes: dict, env: Environment) -> None:
    """Fill ``result`` from metrics.json, loss_history.json and the log lines."""
    metrics = json.loads((paths.model_dir / "metrics.json").read_text())
    history = json.loads((paths.model_dir / "loss_history.json").read_text())
    result.steps = metrics.get("global_step")
    result.precision = metrics.get("precision")
    result.batching = metrics.get("batching") or result.batching
    for line in output.splitlines():
        if line.startswith("[ftcloud] attention="):
            result.attention = line.split("=", 1)[1].strip()
    losses = [h["train_loss"] for h in history if "train_loss" in h]
    if losses:
        result.loss_first, result.loss_last = losses[0], losses[-1]
    speeds = [h["tokens_per_second"] for h in history if "tokens_per_second" in h]
    steady = speeds[1:] or speeds  # the first line includes start-up (CUDA kernels, allocator)
    if steady:
        result.tokens_per_second = sum(steady) / len(steady)
    peak = metrics.get("peak_gpu_memory_bytes")
    if peak:
        result.peak_gpu_memory_gb = peak / 2**30
    result.plan_gpu_memory_gb = planned_peak_gb(paths, env)
    result.mfu = mfu(result.tokens_per_second, sizes["matmul_parameters"], metrics.get("trainable_parameters"),
                     env.peak_tflops)


def planned_peak_gb(paths, env: Environment) -> float | None:
    """The planner's estimate for this run (:mod:`ftcloud.planning`): what ``max_memory_allocated``
    sees, i.e. tensors without the CUDA context. Rows at max_length (packed) are its exact shape;
    length-grouped batches are shorter, so there it is an upper bound."""
    from ftcloud.planning.catalog import resolve_model
    from ftcloud.planning.memory import MemoryInputs, estimate_memory
    from ftcloud.spec import TrainingSpec

    spec = TrainingSpec.from_mapping(json.loads(paths.hyperparameters.read_text()))
    gpu_bf16 = env.bf16 if env.device == "cuda" else None
    est = estimate_memory(resolve_model(spec.model), MemoryInputs.from_spec(spec, gpu_bf16=gpu_bf16))
    return est.tensors / 2**30


def mfu(tokens_per_second: float | None, matmul_params: int, trainable: int | None, peak: float | None) -> float | None:
    """Model FLOPs utilisation (see the module docstring for what is counted)."""
    if not tokens_per_second or not peak or trainable is None:
        return None
    flops_per_token = 4 * matmul_params + 2 * min(trainable, matmul_params)
    return flops_per_token * tokens_per_second / (peak * 1e12)


def check_training_run(check: Check, work: Path, model_dir: Path, sizes: dict, rows: list[dict],
                       steps: int, env: Environment, timeout: float) -> Result:
    """One technique/batching run through the real entrypoint; status failed unless it trained and learned."""
    on_gpu = env.device == "cuda"
    result = Result(check.name, check.shape, check.technique, check.batching,
                    "torchrun" if check.torchrun else "entrypoint")
    slug = f"{check.name}-{check.shape}-{check.batching}"
    paths = make_job(work / slug, hyperparameters(check, model_dir, steps, on_gpu), rows)
    started = time.perf_counter()
    code, output = run_entrypoint(paths, check.torchrun, on_gpu, timeout, work / f"{slug}.log")
    result.seconds = time.perf_counter() - started
    if code != 0:
        result.status = "failed"
        reason = "timed out" if code == -9 else f"exit {code}"
        result.detail = f"{reason}; log {work / f'{slug}.log'}: " + " | ".join(output.strip().splitlines()[-5:])
        return result
    if not (paths.model_dir / "metrics.json").is_file():
        result.status, result.detail = "failed", f"exit 0 but no metrics.json; log {work / f'{slug}.log'}"
        return result
    read_results(paths, output, result, sizes, env)
    problems = []
    if env.bf16 and result.precision != "bf16":
        problems.append(f"precision auto gave {result.precision} on a bf16 GPU")
    if not result.loss_fell:
        problems.append(f"loss did not fall ({result.loss_first} -> {result.loss_last})")
    if result.steps != steps:
        problems.append(f"ran {result.steps} steps, not {steps}")
    if check.torchrun:
        result.extra["process_group"] = "nccl" if on_gpu else "gloo"
        if on_gpu and "NCCL version" not in output:
            problems.append("no NCCL communicator was created: the collectives did not run on NCCL")
        if not any(paths.checkpoint_dir.glob("checkpoint-*")):
            problems.append(f"no checkpoint in {paths.checkpoint_dir} (save_steps={steps // 2}) under torchrun")
    if problems:
        result.status, result.detail = "failed", "; ".join(problems)
    return result


# ---------------------------------------------------------------------------- the plan
def run_plan(env: Environment, work: Path, steps: int | None, budget_seconds: float, only: set[str]) -> list[Result]:
    from ftcloud_train.tiny import make_rows

    on_gpu = env.device == "cuda"
    plan = GPU_PLAN if on_gpu else CPU_PLAN
    steps = steps or (30 if on_gpu else 10)
    rows = make_rows(3000, "chat", seed=0, filler=(0, 12)) if on_gpu else make_rows(64, "chat", seed=0, filler=(0, 1))
    deadline = time.monotonic() + budget_seconds
    models: dict[str, tuple[Path, dict]] = {}
    results: list[Result] = []
    for check in plan:
        if only and check.name not in only:
            continue
        remaining = deadline - time.monotonic()
        if remaining < 30:
            results.append(skipped(check, f"out of the {budget_seconds:.0f} s budget"))
            continue
        progress(f"{check.name} {check.shape} {check.technique} batching={check.batching}")
        if check.shape not in models:
            started = time.perf_counter()
            model_dir = work / "models" / check.shape
            models[check.shape] = (model_dir, build_model(model_dir, check.shape, env.device))
            progress(f"built {check.shape} in {time.perf_counter() - started:.0f} s")
        model_dir, sizes = models[check.shape]
        results.append(check_training_run(check, work, model_dir, sizes, rows, steps, env,
                                          deadline - time.monotonic()))
    if not on_gpu:
        results += [skipped(check, "needs a CUDA GPU (none here)") for check in GPU_PLAN
                    if not only or check.name in only]
    return results


def skipped(check: Check, why: str) -> Result:
    return Result(check.name, check.shape, check.technique, check.batching,
                  "torchrun" if check.torchrun else "entrypoint", status="skipped", detail=why)


def progress(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- output
COLUMNS = ["check", "model", "technique", "batching", "launcher", "attention", "precision", "status",
           "tokens/s", "peak GPU GiB", "plan GiB", "MFU", "loss first->last", "s"]


def format_table(env: Environment, results: list[Result]) -> str:
    def cell(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"device: {env.device}" + (f" ({env.gpu_name} x{env.gpu_count}, dense peak "
                                   f"{cell(env.peak_tflops, '.0f')} TFLOPS)" if env.gpu_name else "")
        + f"; flash-attn installed: {env.flash_attn_installed}; torch {env.torch}; transformers {env.transformers}",
    ]
    table = [COLUMNS]
    for r in results:
        loss = f"{r.loss_first:.3f}->{r.loss_last:.3f}" if r.loss_first is not None else "-"
        table.append([
            r.check, r.model, r.technique, r.batching, r.launcher, r.attention or "-", r.precision or "-",
            r.status, cell(r.tokens_per_second, ".0f"), cell(r.peak_gpu_memory_gb, ".1f"),
            cell(r.plan_gpu_memory_gb, ".1f" if r.plan_gpu_memory_gb is None or r.plan_gpu_memory_gb >= 0.1 else ".4f"),
            "-" if r.mfu is None else f"{100 * r.mfu:.1f}%", loss, cell(r.seconds, ".0f"),
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for i, row in enumerate(table):
        lines.append("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    notes = [f"{r.check} {r.model} {r.batching}: {r.status}: {r.detail}" for r in results if r.detail]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-': stdout, no table)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 30 on a GPU, 10 on CPU)")
    parser.add_argument("--budget-seconds", type=float, default=480.0,
                        help="stop starting runs after this long (default 480: 8 minutes)")
    parser.add_argument("--only", default="", help="comma-separated check names (lora,qlora,dora,full,torchrun)")
    parser.add_argument("--workdir", help="where models and jobs go (default: a temporary directory, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, models)")
    args = parser.parse_args(argv)

    env = detect_environment()
    if env.device != "cuda":
        progress("no CUDA device: the GPU rows are skipped; a tiny model runs the CPU rows")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        only = {name.strip() for name in args.only.split(",") if name.strip()}
        results = run_plan(env, work, args.steps, args.budget_seconds, only)
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(work, ignore_errors=True)
    document = {"environment": asdict(env), "results": [asdict(r) | {"loss_fell": r.loss_fell} for r in results]}
    if args.json == "-":
        print(json.dumps(document, indent=2))
    else:
        print(format_table(env, results))
        if args.json:
            Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
