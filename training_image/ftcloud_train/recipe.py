"""Supervised fine-tuning recipe: LoRA, QLoRA, DoRA and full fine-tuning in one loop.

Read top to bottom, :func:`run` is the whole training story:

1. device and precision (bf16 / fp16 on GPUs, fp32 on CPU);
2. tokenizer and data: format detection, chat template, completion-only labels, EOS,
   the over-length policy and its counts, a held-out split when there is no validation channel;
3. batching: length-grouped (default off-GPU) or packed with per-document attention;
4. model: the base (4-bit NF4 + double quantization for QLoRA), k-bit preparation, gradient
   checkpointing, then the adapter (LoRA / DoRA) - the technique is data, not a second loop;
5. the Hugging Face Trainer, with the paged 8-bit optimizer for QLoRA, DDP under torchrun;
6. resume from the newest *complete* checkpoint; checkpoints every ``save_steps`` and on SIGTERM;
7. evaluation (loss, perplexity), then artifacts: adapter or full weights, tokenizer with its
   chat template, generation config, the resolved spec, ``metrics.json``, ``loss.png``.

Knobs: every field of :class:`ftcloud.spec.TrainingSpec` (see its help texts).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftcloud.contract import EXIT_STOPPED
from ftcloud_train import checkpoints
from ftcloud_train.batching import PadCollator, pack_samples, resolve_batching
from ftcloud_train.data import DataError, build_split, read_rows, split_holdout
from ftcloud_train.job import JobContext, UserError
from ftcloud_train.modeling import (
    Device,
    count_parameters,
    load_model,
    load_tokenizer,
    resolve_hf_token,
    resolve_model_source,
    resolve_precision,
    save_merged,
)
from ftcloud_train.report import emit_metrics, log, plot_loss, write_json_atomic


# ---------------------------------------------------------------------------- stop requests
class StopRequest:
    """Set by SIGTERM (SageMaker stop, spot interruption); all ranks agree before acting."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def agreed(self) -> bool:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            flag = torch.tensor([1 if self.requested else 0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.requested = bool(flag.item())
        return self.requested


def _callback_class():
    from transformers import TrainerCallback

    @dataclass
    class FtcloudCallback(TrainerCallback):
        """Metric lines, complete-checkpoint markers and rotation, SIGTERM checkpoints."""

        stop: StopRequest
        checkpoint_dir: Path
        keep: int
        history: list = field(default_factory=list)
        _last_time: float = 0.0
        _last_tokens: int = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self._last_time = time.perf_counter()
            self._last_tokens = state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            if self.stop.agreed():
                log(f"SIGTERM received: saving a checkpoint at step {state.global_step} and stopping")
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            now = time.perf_counter()
            metrics = {}
            if "loss" in logs:
                metrics["train_loss"] = logs["loss"]
                tokens = state.num_input_tokens_seen - self._last_tokens
                if now > self._last_time and tokens > 0:
                    metrics["tokens_per_second"] = tokens / (now - self._last_time)
                self._last_time, self._last_tokens = now, state.num_input_tokens_seen
            for key in ("eval_loss", "learning_rate", "grad_norm"):
                if key in logs and logs[key] is not None:
                    metrics[key] = float(logs[key])
            if "eval_loss" in metrics:
                metrics["eval_perplexity"] = _perplexity(metrics["eval_loss"])
            if not metrics:
                return
            metrics["epoch"] = float(state.epoch or 0.0)
            emit_metrics(state.global_step, metrics)
            self.history.append({"step": state.global_step, **metrics})

        def on_save(self, args, state, control, **kwargs):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank has written its part (e.g. its RNG state)
            # Every host has its own checkpoint directory (SageMaker syncs each to S3), so the
            # first process of each host marks and rotates its own copy.
            if state.is_local_process_zero:
                path = self.checkpoint_dir / f"checkpoint-{state.global_step}"
                if path.is_dir():
                    checkpoints.mark_complete(path)
                    checkpoints.rotate(self.checkpoint_dir, self.keep)
                    log(f"checkpoint saved: {path.name}")

    return FtcloudCallback


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


# ---------------------------------------------------------------------------- data
def prepare_data(ctx: JobContext, tokenizer):
    spec = ctx.spec
    try:
        train_rows = read_rows(ctx.paths.channel("train"), "train")
        val_dir = ctx.channel("validation")
        if val_dir is not None:
            eval_rows = read_rows(val_dir, "validation")
        else:
            train_rows, eval_rows = split_holdout(train_rows, spec.validation_split, spec.seed)
        train, train_report = build_split(train_rows, "train", spec, tokenizer)
        log(train_report.summary())
        evals, eval_report = [], None
        if eval_rows:
            try:
                evals, eval_report = build_split(eval_rows, "validation", spec, tokenizer)
            except DataError:
                if val_dir is not None:
                    raise  # the user's own validation set must be usable
                log(f"warning: none of the {len(eval_rows)} held-out rows is usable; skipping evaluation")
    except DataError as exc:
        raise UserError(str(exc)) from None
    if eval_report is not None:
        log(eval_report.summary())
    return train, evals, [r.to_dict() for r in (train_report, eval_report) if r is not None]


def flash_attention_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------- trainer
def training_arguments(ctx: JobContext, device: Device, precision: str, batching: str):
    from transformers import TrainingArguments

    spec = ctx.spec
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(ctx.paths.tensorboard_dir)  # this job's tree, always
    try:
        import tensorboard  # noqa: F401

        report_to = ["tensorboard"]
    except ImportError:
        report_to = []
    return TrainingArguments(
        output_dir=str(ctx.paths.checkpoint_dir),
        per_device_train_batch_size=spec.per_device_train_batch_size,
        per_device_eval_batch_size=spec.per_device_train_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        learning_rate=spec.resolved_learning_rate,
        num_train_epochs=spec.num_train_epochs,
        max_steps=spec.max_steps,
        lr_scheduler_type=spec.lr_scheduler_type,
        warmup_steps=spec.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
        optim=spec.resolved_optimizer,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        logging_steps=spec.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if spec.save_steps > 0 else "no",
        save_steps=max(spec.save_steps, 1),
        save_total_limit=None,  # rotation happens after the completeness marker (checkpoints.rotate)
        # Hosts do not share a disk: each writes a whole checkpoint so each can resume from its own.
        save_on_each_node=len(ctx.hosts) > 1,
        eval_strategy="no",
        report_to=report_to,
        seed=spec.seed,
        data_seed=spec.seed,
        train_sampling_strategy="group_by_length" if batching == "length_grouped" else "random",
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_pin_memory=device.type == "cuda",
        ddp_backend=("nccl" if device.type == "cuda" else "gloo") if device.world_size > 1 else None,
        ddp_find_unused_parameters=False,
        log_level="warning",
    )


# ---------------------------------------------------------------------------- the run
def run(ctx: JobContext) -> int:
    from transformers import Trainer

    spec, paths = ctx.spec, ctx.paths
    stop = StopRequest()
    stop.install()
    started = time.perf_counter()

    # 1. device and precision
    device = Device.detect()
    precision = resolve_precision(spec.precision, device)
    resolve_hf_token(spec.hf_token_secret_arn)
    source = resolve_model_source(ctx)
    log(f"technique={spec.technique} model={source} device={device.type} x{device.world_size} precision={precision}")

    # 2. tokenizer and data
    tokenizer = load_tokenizer(source, spec.trust_remote_code)
    train, evals, data_reports = prepare_data(ctx, tokenizer)

    # 3. batching
    batching = resolve_batching(spec.batching, device.type, flash_attention_available())
    if batching == "packed":
        train = pack_samples(train, spec.max_length)
        evals = pack_samples(evals, spec.max_length) if evals else evals
    log(f"batching={batching}: {len(train)} training rows, {len(evals)} evaluation rows")

    # 4. model and technique
    model = load_model(source, spec, device, precision)
    trainable, total = count_parameters(model)
    log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)")

    # 5. trainer
    paths.ensure()
    callback = _callback_class()(stop=stop, checkpoint_dir=paths.checkpoint_dir, keep=spec.save_total_limit)
    trainer = Trainer(
        model=model,
        args=training_arguments(ctx, device, precision, batching),
        train_dataset=train,
        eval_dataset=evals or None,
        data_collator=PadCollator(tokenizer.pad_token_id, multiple_of=8 if device.type == "cuda" else 1),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # metric lines replace its raw dict prints

    # 6. resume from the newest complete checkpoint (this host's copy), then train
    if device.local_rank == 0:
        for path in checkpoints.discard_incomplete(paths.checkpoint_dir):
            log(f"discarded incomplete checkpoint {path.name} (a save was interrupted)")
    _barrier()
    resume = checkpoints.latest_complete(paths.checkpoint_dir)
    if resume is not None:
        log(f"resuming from {resume.name}")
    if stop.requested:
        log("SIGTERM received before training started: nothing to checkpoint")
        return EXIT_STOPPED
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if stop.requested and trainer.state.global_step < trainer.state.max_steps:  # a late SIGTERM still saves
        log(f"stopped at step {trainer.state.global_step}; resume by starting the job again")
        return EXIT_STOPPED

    # 7. evaluate and save
    metrics = {
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
        "train_runtime_seconds": result.metrics.get("train_runtime"),
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "resumed_from": resume.name if resume else None,
        "batching": batching,
        "precision": precision,
        "data": data_reports,
    }
    if evals:
        eval_loss = trainer.evaluate()["eval_loss"]
        metrics.update(eval_loss=eval_loss, eval_perplexity=_perplexity(eval_loss))
    if device.is_main:
        save_artifacts(ctx, trainer, tokenizer, source, precision, batching, metrics, callback.history, started)
    _barrier()
    return 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_artifacts(ctx, trainer, tokenizer, source, precision, batching, metrics, history, started) -> None:
    spec, model_dir = ctx.spec, ctx.paths.model_dir
    trainer.save_model(str(model_dir))  # adapter for lora/qlora/dora, full weights for full
    tokenizer.save_pretrained(str(model_dir))
    generation = trainer.model.generation_config if hasattr(trainer.model, "generation_config") else None
    if generation is not None:
        generation.eos_token_id = tokenizer.eos_token_id
        generation.pad_token_id = tokenizer.pad_token_id
        generation.save_pretrained(str(model_dir))
    if spec.merge_adapter:
        save_merged(source, model_dir, model_dir / "merged", precision, spec.trust_remote_code)
        tokenizer.save_pretrained(str(model_dir / "merged"))
        log("merged adapter into the base weights: model/merged")
    resolved = {
        **spec.to_dict(),
        "resolved": {
            "model_source": source,
            "learning_rate": spec.resolved_learning_rate,
            "optimizer": spec.resolved_optimizer,
            "quantization": spec.resolved_quantization,
            "gradient_checkpointing": spec.resolved_gradient_checkpointing,
            "batching": batching,
            "precision": precision,
        },
    }
    write_json_atomic(model_dir / "ftcloud_spec.json", resolved)
    metrics["wall_seconds"] = time.perf_counter() - started
    write_json_atomic(model_dir / "metrics.json", metrics)
    write_json_atomic(model_dir / "loss_history.json", history)
    plot_loss(history, model_dir / "loss.png")
    log(f"done: step {metrics['global_step']}, train_loss {metrics['train_loss']:.4f}"
        + (f", eval_loss {metrics['eval_loss']:.4f}, perplexity {metrics['eval_perplexity']:.2f}" if "eval_loss" in metrics else "")
        + f"; artifacts in {model_dir}")
