"""Periodic evaluation (``eval_steps``): the objective appears in the job log while training runs,
at steps N, 2N, ..., so a tuner's pruner or hyperband has something to act on before the end."""

from __future__ import annotations

import pytest

from ftcloud.contract import parse_metric_line

from .jobtree import make_job, metrics, run_module


def _eval_lines(stdout: str) -> list[dict[str, float]]:
    parsed = [parse_metric_line(line) for line in stdout.splitlines()]
    return [m for m in parsed if m and "eval_loss" in m]


@pytest.mark.slow
def test_eval_steps_prints_eval_loss_every_n_steps(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, rows=40, max_steps=12, eval_steps=4, logging_steps=4,
                     validation_split=0.2)
    proc = run_module(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    evals = _eval_lines(proc.stdout)
    # Steps 4, 8 and 12 during training, then the final evaluation (step 12 again).
    assert [int(m["step"]) for m in evals] == [4, 8, 12, 12]
    for m in evals:
        assert m["eval_loss"] > 0 and m["eval_perplexity"] > 1 and "epoch" in m
    # The model learns: the periodic objective moves, and the final one is what metrics.json keeps.
    assert evals[0]["eval_loss"] != evals[1]["eval_loss"]
    assert abs(evals[-1]["eval_loss"] - metrics(paths)["eval_loss"]) < 1e-4 * max(1.0, metrics(paths)["eval_loss"])


@pytest.mark.parametrize(
    "eval_steps,has_eval,strategy",
    [(0, True, "no"), (4, True, "steps"), (4, False, "no"), (0, False, "no")],
)
def test_evaluation_strategy_follows_eval_steps_and_the_data(eval_steps, has_eval, strategy, tiny_model_dir, tmp_path):
    """The Trainer evaluates periodically only when asked to and when there is something to evaluate
    (the final evaluation runs either way, in the recipe)."""
    from ftcloud_train.job import load_job
    from ftcloud_train.modeling import Device, precision_plan
    from ftcloud_train.recipe import training_arguments

    ctx = load_job(make_job(tmp_path, tiny_model_dir, eval_steps=eval_steps))
    args = training_arguments(ctx, Device("cpu", False, 0, 1), precision_plan(None, "lora", "auto"), "padded",
                              has_eval=has_eval)
    assert args.eval_strategy == strategy
    if strategy == "steps":
        assert args.eval_steps == eval_steps


@pytest.mark.slow
def test_eval_steps_without_validation_rows_says_so(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, rows=16, max_steps=2, eval_steps=1, validation_split=0.0)
    proc = run_module(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _eval_lines(proc.stdout) == []
    assert "eval_steps=1 has nothing to evaluate (no validation rows)" in proc.stdout
