"""Supervised fine-tuning recipe: LoRA, QLoRA, DoRA and full fine-tuning in one loop.

Read top to bottom, :func:`run` is the whole training story:

1. device, precision plan (fp32 master weights, bf16 / fp16 autocast on GPUs, fp32 on CPU) and
   attention kernel (flash-attention where installed on Ampere+, else SDPA);
2. tokenizer and data: format detection, chat template, completion-only labels, EOS,
   the over-length policy and its counts, a held-out split when there is no validation channel;
   tokenized once per host and kept in the token cache for the other ranks and for restarts;
3. batching: length-grouped (default without flash-attention) or packed with per-document attention;
4. model: the base (4-bit NF4 + double quantization for QLoRA), k-bit preparation, gradient
   checkpointing, then the adapter (LoRA / DoRA) - the technique is data, not a second loop;
   ``task=classification`` loads a sequence-classification head instead of the LM head;
5. the Hugging Face Trainer, with the paged 8-bit optimizer for QLoRA, DDP under torchrun;
6. resume from the newest checkpoint whose files match its manifest and that loads (one that does
   not is set aside, the previous one is used); checkpoints every ``save_steps`` and on SIGTERM;
7. evaluation (loss, perplexity; classification: accuracy, macro-F1, per-class recall with its
   class-weighted or focal loss), then artifacts: adapter or full weights, tokenizer with its
   chat template, generation config, the resolved spec, ``metrics.json``, ``loss.png``.

Knobs: every field of :class:`ftcloud.spec.TrainingSpec` (see its help texts).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftcloud.contract import EXIT_STOPPED
from ftcloud_train import checkpoints, classification, token_cache
from ftcloud_train.batching import make_collator, pack_samples, resolve_batching
from ftcloud_train.data import DataError, build_split, read_rows, split_holdout
from ftcloud_train.job import JobContext, UserError
from ftcloud_train.modeling import (
    Device,
    PrecisionPlan,
    attention_implementation,
    count_parameters,
    flash_attention_installed,
    load_model,
    load_tokenizer,
    merge_eos_token_ids,
    precision_plan,
    resolve_hf_token,
    resolve_model_source,
    save_merged,
)
from ftcloud_train.report import (
    emit_metrics,
    emit_progress,
    log,
    plot_loss,
    quiet_libraries,
    write_json_atomic,
)
from ftcloud_train.stopping import StopRequest


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
            if state.is_world_process_zero:
                # The Trainer's own count (max_steps, or epochs x batches per epoch / accumulation, per
                # process under DDP), so a watcher's step N of total and ETA are exact.
                emit_progress("training", step=state.global_step, total_steps=state.max_steps,
                              num_epochs=state.num_train_epochs)

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
            for key in ("eval_loss", "learning_rate", "grad_norm", *classification.metric_keys(logs)):
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
def prepare_data(ctx: JobContext, tokenizer, leader: bool = True):
    """Train and evaluation samples, and their data reports.

    From the token cache when an entry's key matches (one ``ftcloud data prepare --tokenizer ... --token-cache`` left
    in the channel, or this job's own under the checkpoint directory, which restarts find); else
    the ``leader`` (first process of the host) reads and tokenizes, and caches for the other
    processes, which wait for it, and for restarts.
    """
    spec = ctx.spec
    train_dir, val_dir = ctx.paths.channel("train"), ctx.channel("validation")
    holdout = (spec.validation_split, spec.seed) if val_dir is None and spec.validation_split > 0 else None
    write_dir = ctx.paths.checkpoint_dir / token_cache.CACHE_DIRNAME
    rows: dict[str, list] = {}

    def read(split: str) -> list:  # only on a cache miss
        if not rows:
            rows["train"] = read_rows(train_dir, "train")
            if val_dir is not None:
                rows["validation"] = read_rows(val_dir, "validation")
            else:
                rows["train"], rows["validation"] = split_holdout(rows["train"], spec.validation_split, spec.seed)
        return rows[split]

    def cached(split: str, directory, extra=None):
        def build():
            split_rows = read(split)
            if not split_rows:
                return [], {"report": None}
            try:
                samples, report = build_split(split_rows, split, spec, tokenizer, (extra or {}).get("labels"))
            except DataError:
                if split == "train" or val_dir is not None:
                    raise  # the user's own validation set must be usable
                log(f"warning: none of the {len(split_rows)} held-out rows is usable; skipping evaluation")
                return [], {"report": None}
            return samples, {"report": report.to_dict(), "summary": report.summary()}

        # A held-out split is keyed by the train key (which covers the files) instead of hashing them again.
        files = [] if extra and "train_key" in extra else None
        key = token_cache.key(root=directory, files=files, spec=spec, tokenizer=tokenizer, split=split,
                              holdout=holdout if directory == train_dir else None, extra=extra)
        entry, origin = token_cache.load_or_build(key, build, write_dir=write_dir, leader=leader,
                                                  read_dirs=[directory / token_cache.CACHE_DIRNAME])
        report = entry.meta["report"]
        if report is not None:
            log(entry.meta["summary"])
        if origin != "built":
            log(f"{split}: {len(entry.samples)} samples from the token cache ({origin}): not tokenized again")
        return entry.samples, report, key

    try:
        train, train_report, train_key = cached("train", train_dir)
        evals, eval_report = [], None
        if val_dir is not None or holdout is not None:
            extra = {"labels": train_report.get("labels")}  # classification: ids follow the training rows
            if val_dir is None:
                extra["train_key"] = train_key
            evals, eval_report, _ = cached("validation", val_dir or train_dir, extra)
    except DataError as exc:
        raise UserError(str(exc)) from None
    return train, evals, [r for r in (train_report, eval_report) if r is not None]


# ---------------------------------------------------------------------------- trainer
def training_arguments(ctx: JobContext, device: Device, plan: PrecisionPlan, batching: str,
                       has_eval: bool = False):
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
        # Autocast (and the fp16 loss scaler) from the plan; the weights' dtypes come from load_model.
        bf16=plan.trainer_bf16,
        fp16=plan.trainer_fp16,
        use_cpu=device.type == "cpu",
        logging_steps=spec.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if spec.save_steps > 0 else "no",
        save_steps=max(spec.save_steps, 1),
        save_total_limit=None,  # rotation happens after the completeness marker (checkpoints.rotate)
        # Hosts do not share a disk: each writes a whole checkpoint so each can resume from its own.
        save_on_each_node=len(ctx.hosts) > 1,
        # Periodic evaluation gives tuning (pruners, hyperband) an objective before the end;
        # the final evaluation in step 7 runs either way.
        eval_strategy="steps" if has_eval and spec.eval_steps > 0 else "no",
        eval_steps=spec.eval_steps if spec.eval_steps > 0 else None,
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

    # 1. device, precision plan and attention kernel
    device = Device.detect()
    plan = precision_plan(
        device.capability, spec.technique, spec.precision, spec.resolved_quantization, spec.compute_dtype
    )
    precision = plan.precision
    attention = attention_implementation(device.capability, flash_attention_installed(), plan.compute_dtype)
    resolve_hf_token(spec.hf_token_secret_arn, model_channel=ctx.channel("model"))
    source = resolve_model_source(ctx)
    log(
        f"technique={spec.technique} model={source} device={device.type} x{device.world_size} precision={precision}"
        f" (weights {plan.load_dtype}, trainable {plan.trainable_dtype}, autocast {plan.autocast_dtype or 'off'})"
    )
    quiet_libraries(device.type, spec.resolved_optimizer, interactive=sys.stderr.isatty())

    # 2. tokenizer and data
    tokenizer = load_tokenizer(source, spec.trust_remote_code)
    train, evals, data_reports = prepare_data(ctx, tokenizer, leader=device.local_rank == 0)
    # classification: label names in id order, from the training rows (None: causal LM)
    labels = data_reports[0]["labels"] if spec.task == "classification" else None

    # 3. batching
    if labels:
        batching = classification.resolve_batching(spec.batching)
    else:
        batching = resolve_batching(spec.batching, attention)
    if batching == "packed" and attention != "flash_attention_2":
        log("batching=packed without flash-attention: every forward builds a (rows, length, length) "
            "block-diagonal mask; length_grouped is usually faster")
    if batching == "packed":
        train = pack_samples(train, spec.max_length)
        evals = pack_samples(evals, spec.max_length) if evals else evals
    log(f"batching={batching}: {len(train)} training rows, {len(evals)} evaluation rows")
    if spec.eval_steps > 0 and not evals:
        log(f"eval_steps={spec.eval_steps} has nothing to evaluate (no validation rows): "
            "no periodic eval_loss lines; give a validation channel or validation_split > 0")

    # 4. model and technique
    model = load_model(source, spec, device, plan, attention, labels=labels, pad_token_id=tokenizer.pad_token_id)
    attention = model.config._attn_implementation  # what really runs (a fallback may have happened)
    log(f"attention={attention}")
    trainable, total = count_parameters(model)
    log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)")

    # 5. trainer
    paths.ensure()
    callback = _callback_class()(stop=stop, checkpoint_dir=paths.checkpoint_dir, keep=spec.save_total_limit)
    trainer = Trainer(
        model=model,
        args=training_arguments(ctx, device, plan, batching, has_eval=bool(evals)),
        train_dataset=train,
        eval_dataset=evals or None,
        data_collator=(classification.Collator(tokenizer.pad_token_id) if labels
                       else make_collator(batching, attention, tokenizer.pad_token_id, device.type)),
        processing_class=tokenizer,
        callbacks=[callback],
        # classification: class-weighted / focal loss and accuracy, macro-F1, per-class recall
        **(classification.trainer_kwargs(spec, labels, data_reports[0]["class_counts"]) if labels else {}),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # metric lines replace its raw dict prints

    # 6. resume from the newest checkpoint whose files match its manifest and open (each host checks
    #    its own copy, which SageMaker restored from S3 file by file; all hosts agree on the step)
    if device.local_rank == 0:
        for note in checkpoints.sort_out(paths.checkpoint_dir):
            log(note)
    _barrier()
    resume = checkpoints.agreed_latest(paths.checkpoint_dir)
    if resume is not None:
        log(f"resuming from {resume.name}")
    if stop.agreed():  # all ranks together: one that trained on alone would wait in a collective
        log("SIGTERM received before training started: nothing to checkpoint")
        return EXIT_STOPPED
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except Exception as exc:
        # It opened but did not load (e.g. optimizer state that does not fit the model): set it aside
        # so no retry trips on it again, then start over, which resumes from the previous one.
        bad = checkpoints.set_aside_if_unloadable(resume, exc) if device.local_rank == 0 else None
        if bad is None:
            raise  # a training failure, not a checkpoint one
        log(f"{resume.name} failed to load ({type(exc).__name__}: {str(exc)[:300]}); set aside as {bad.name}")
        if device.world_size > 1:
            raise  # ranks may sit in different collectives: the next start resumes from the previous one
        _start_over()
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
        "peak_gpu_memory_bytes": _peak_gpu_memory_bytes(device),  # the training peak, before evaluation
        "data": data_reports,
    }
    if evals:
        emit_progress("evaluating")
        evaluation = trainer.evaluate()
        eval_loss = evaluation["eval_loss"]
        metrics.update(eval_loss=eval_loss, eval_perplexity=_perplexity(eval_loss))
        metrics.update({key: evaluation[key] for key in classification.metric_keys(evaluation)})
    if device.is_main:
        emit_progress("saving")
        save_artifacts(ctx, trainer, tokenizer, source, plan, batching, metrics, callback.history, started)
    _barrier()
    return 0


def _start_over() -> None:
    """Run the entrypoint again in this process (same pid): a fresh model, optimizer and Trainer,
    with none of the state a half-finished load left behind."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "ftcloud_train", *sys.argv[1:]])


def _peak_gpu_memory_bytes(device: Device) -> int | None:
    """This process's peak allocated GPU memory (what bench/gpu_check.py reports); None off-GPU."""
    if device.type != "cuda":
        return None
    import torch

    return int(torch.cuda.max_memory_allocated())


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_artifacts(ctx, trainer, tokenizer, source, plan, batching, metrics, history, started) -> None:
    spec, model_dir = ctx.spec, ctx.paths.model_dir
    trainer.save_model(str(model_dir))  # adapter for lora/qlora/dora, full weights for full
    tokenizer.save_pretrained(str(model_dir))
    generation = trainer.model.generation_config if hasattr(trainer.model, "generation_config") else None
    if generation is not None:
        # Keep every EOS id the model stops on (Llama 3: end of text and end of turn), add the tokenizer's.
        generation.eos_token_id = merge_eos_token_ids(generation.eos_token_id, tokenizer.eos_token_id)
        generation.pad_token_id = tokenizer.pad_token_id
        generation.save_pretrained(str(model_dir))
    labels = metrics["data"][0]["labels"] if spec.task == "classification" else None
    if labels:
        classification.save_labels(model_dir, labels)  # what each output id means, next to the weights
    if spec.merge_adapter:
        save_merged(source, model_dir, model_dir / "merged", plan.load_dtype, spec.trust_remote_code,
                    labels=labels, pad_token_id=tokenizer.pad_token_id)
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
            "precision": plan.precision,
            "precision_plan": dataclasses.asdict(plan),
            "attention": trainer.model.config._attn_implementation,
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
