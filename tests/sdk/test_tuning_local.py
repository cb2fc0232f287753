"""The local tuner: Optuna over the local backend, every trial a normal local job.

The pure decisions (how many trials at once, which GPU, how a range is sampled, which sampler and
pruner a strategy gets) are table-tested; the end-to-end runs train the tiny model for real.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ftcloud.backends.local import LocalBackend
from ftcloud.contract import parse_metric_line
from ftcloud.errors import UsageError
from ftcloud.job import build_job_spec
from ftcloud.tuning.base import Objective, ParameterRange, TuningNotFoundError, TuningSpec
from ftcloud.tuning.local import LocalTuner, trial_slots, tuning_from_dict, visible_gpu_ids

SMI_TWO = "GPU 0: NVIDIA H200 (UUID: GPU-aaa)\nGPU 1: NVIDIA H200 (UUID: GPU-bbb)\n"
SMI_MIG = ("GPU 0: NVIDIA H200 (UUID: GPU-aaa)\n"
           "  MIG 1g.18gb     Device  0: (UUID: MIG-111)\n"
           "  MIG 1g.18gb     Device  1: (UUID: MIG-222)\n"
           "GPU 1: NVIDIA H200 (UUID: GPU-bbb)\n")


# ---------------------------------------------------------------------- pure decisions
@pytest.mark.parametrize(
    "requested,cpus,gpus,expected",
    [
        (1, 2, [], [{"OMP_NUM_THREADS": "2"}]),
        (4, 2, [], [{"OMP_NUM_THREADS": "1"}] * 2),  # at least one core per trial
        (3, 16, [], [{"OMP_NUM_THREADS": "5"}] * 3),  # cores split evenly
        (0, 8, [], [{"OMP_NUM_THREADS": "8"}]),
        (2, 0, [], [{"OMP_NUM_THREADS": "1"}]),  # unknown core count: one trial
        (4, 16, ["0", "1"], [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]),  # one per GPU
        (1, 16, ["0", "1", "2"], [{"CUDA_VISIBLE_DEVICES": "0"}]),
        (2, 4, ["MIG-111", "MIG-222"], [{"CUDA_VISIBLE_DEVICES": "MIG-111"}, {"CUDA_VISIBLE_DEVICES": "MIG-222"}]),
    ],
)
def test_parallel_trials_are_bounded_by_the_machine(requested, cpus, gpus, expected):
    assert trial_slots(requested, cpus, gpus) == expected


@pytest.mark.parametrize(
    "env,smi,expected",
    [
        (None, None, []),
        (None, SMI_TWO, ["0", "1"]),
        ("2,3", SMI_TWO, ["2", "3"]),  # the variable wins over what nvidia-smi lists
        ("", SMI_TWO, []),
        ("-1", SMI_TWO, []),
        ("0,-1,1", None, ["0"]),  # CUDA stops at the first invalid entry
        (None, SMI_MIG, ["MIG-111", "MIG-222", "1"]),  # a MIG instance is a GPU of its own
        (None, "No devices were found\n", []),
    ],
)
def test_visible_gpu_ids(env, smi, expected):
    assert visible_gpu_ids(env, smi) == expected


def test_ranges_map_onto_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from ftcloud.tuning.local_driver import distributions, values_from_params

    tuning = TuningSpec(parameters=[
        ParameterRange("learning_rate", "continuous", low=1e-6, high=1e-1),  # auto over 5 decades: log
        ParameterRange("warmup_ratio", "continuous", low=0.0, high=0.2),  # auto from 0: linear
        ParameterRange("lora_r", "integer", low=4, high=64),  # auto, 16x: linear
        ParameterRange("lora_alpha", "integer", low=8, high=64, scaling="logarithmic"),
        ParameterRange("lora_dropout", "continuous", low=0.5, high=0.99, scaling="reverse_logarithmic"),
        ParameterRange("technique", "categorical", values=["lora", "dora"]),
    ])
    dists = distributions(tuning)
    assert dists["learning_rate"] == FloatDistribution(1e-6, 1e-1, log=True)
    assert dists["warmup_ratio"] == FloatDistribution(0.0, 0.2, log=False)
    assert dists["lora_r"] == IntDistribution(4, 64, log=False)
    assert dists["lora_alpha"] == IntDistribution(8, 64, log=True)
    assert dists["technique"] == CategoricalDistribution(("lora", "dora"))
    reverse = dists["lora_dropout"]  # 1 - x on a log scale: dense close to 0.99
    assert reverse.log and reverse.low == pytest.approx(0.01) and reverse.high == pytest.approx(0.5)
    values = values_from_params({"learning_rate": 3e-4, "warmup_ratio": 0.1, "lora_r": 8, "lora_alpha": 16,
                                 "lora_dropout": 0.02, "technique": "dora"}, tuning)
    assert values == {"learning_rate": 3e-4, "warmup_ratio": 0.1, "lora_r": 8, "lora_alpha": 16,
                      "lora_dropout": pytest.approx(0.98), "technique": "dora"}


@pytest.mark.parametrize(
    "strategy,early_stopping,sampler,pruner",
    [
        ("bayesian", "off", "TPESampler", "NopPruner"),
        ("bayesian", "auto", "TPESampler", "MedianPruner"),
        ("random", "auto", "RandomSampler", "MedianPruner"),
        ("grid", "off", "GridSampler", "NopPruner"),
        ("hyperband", "off", "TPESampler", "HyperbandPruner"),
    ],
)
def test_strategies_map_onto_samplers_and_pruners(strategy, early_stopping, sampler, pruner, tiny_model_dir,
                                                  make_data):
    job = _job("map", tiny_model_dir, make_data(rows=8), max_steps=40, eval_steps=5)
    values = [1e-4, 1e-3] if strategy == "grid" else []
    rng = ParameterRange("learning_rate", "categorical" if values else "continuous", low=None if values else 1e-5,
                         high=None if values else 1e-3, values=values)
    tuning = TuningSpec(parameters=[rng], strategy=strategy, early_stopping=early_stopping, max_trials=8, seed=1)
    result = LocalTuner().launch(job, tuning, dry_run=True)
    assert (result.request["sampler"], result.request["pruner"]) == (sampler, pruner)
    if strategy == "hyperband":
        from ftcloud.tuning.local_driver import make_pruner

        hyperband = make_pruner(tuning_from_dict(result.request["tuning"]), job)
        assert hyperband._min_resource == 5 and hyperband._max_resource == 40  # steps of the periodic eval


def test_dry_run_plans_without_writing(tiny_model_dir, make_data, ftcloud_home):
    job = _job("plan", tiny_model_dir, make_data(rows=8))  # eval_steps 0
    tuning = TuningSpec(parameters=[ParameterRange("learning_rate", "continuous", low=1e-5, high=1e-2)],
                        early_stopping="auto", max_trials=4, max_parallel=2, seed=0)
    result = LocalTuner().launch(job, tuning, dry_run=True)
    assert result.dry_run and result.name == "plan"
    assert result.request["study"] == f"sqlite:///{ftcloud_home / 'tunings' / 'plan' / 'study.db'}"
    assert result.request["search_space"]["learning_rate"].startswith("FloatDistribution(")
    assert "log=True" in result.request["search_space"]["learning_rate"]
    # Early stopping needs the objective during training: eval_steps is set, and the user is told.
    assert result.request["job"]["training"]["eval_steps"] == job.training.logging_steps
    assert any("eval_steps set to" in note for note in result.notes)
    assert not (ftcloud_home / "tunings").exists() and not (ftcloud_home / "jobs").exists()
    assert tuning_from_dict(result.request["tuning"]).to_dict() == tuning.to_dict()


def test_a_bad_job_is_refused_before_anything_is_written(tiny_model_dir, tmp_path, ftcloud_home):
    job = _job("nodata", tiny_model_dir, tmp_path / "missing.jsonl")
    tuning = TuningSpec(parameters=[ParameterRange("learning_rate", "continuous", low=1e-5, high=1e-2)])
    with pytest.raises(Exception, match="data.train: no such file"):
        LocalTuner().launch(job, tuning)
    assert not (ftcloud_home / "tunings").exists()


def test_unknown_tuning_is_not_found():
    with pytest.raises(TuningNotFoundError, match="No local tuning named 'nope'"):
        LocalTuner().status("nope")
    assert LocalTuner().list_tunings() == []


def test_target_and_max_runtime_end_the_search_and_a_driverless_tuning_can_be_stopped(
        tiny_model_dir, make_data, ftcloud_home, monkeypatch):
    """The driver's completion criteria on a real study (no trial trains: the launch spawns nothing)."""
    import optuna

    from ftcloud.tuning.local_driver import Driver, distributions

    monkeypatch.setattr(LocalTuner, "_spawn", lambda self, directory, fd: os.close(fd))
    job = _job("crit", tiny_model_dir, make_data(rows=8))
    tuning = TuningSpec(parameters=[ParameterRange("learning_rate", "continuous", low=1e-5, high=1e-2)],
                        max_trials=5, target=1.0, max_runtime=600, seed=0)
    tuner = LocalTuner()
    tuner.launch(job, tuning)
    directory = ftcloud_home / "tunings" / "crit"
    driver = Driver(directory)
    dists = distributions(driver.tuning)

    def finish(value):
        driver.study.add_trial(optuna.trial.create_trial(params={"learning_rate": 1e-4}, distributions=dists,
                                                         value=value))
        driver.check_completion_criteria()

    finish(1.5)
    assert driver.ending is None
    finish(0.9)  # minimize: at or below the target ends the search
    assert driver.ending == "trial 1 reached the target eval_loss=0.9"
    driver.ending, driver.tuning.target, driver.prior_runtime = None, None, 600.0
    driver.check_completion_criteria()
    assert driver.ending == "max_runtime of 600 s reached"

    # No driver runs (it never started here): status says so, and stop ends the tuning itself.
    assert tuner.status("crit").status == "Failed"
    stopped = tuner.stop("crit")
    assert stopped.status == "Stopped" and [t.status for t in stopped.trials] == ["Completed", "Completed"]
    assert stopped.best.objective == 0.9


# ---------------------------------------------------------------------- end to end (tiny model)
MAX_STEPS = 16
EVAL_STEPS = 4


def _job(name, model, data, **training):
    overrides = dict(name=name, technique="lora", model=str(model), data=str(data), max_steps=MAX_STEPS,
                     logging_steps=EVAL_STEPS, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                     max_length=96, save_steps=0, warmup_ratio=0.0, lr_scheduler_type="constant",
                     validation_split=0.25)
    return build_job_spec(overrides={**overrides, **training})


def _metric_lines(backend: LocalBackend, job: str) -> list[dict[str, float]]:
    from ftcloud.backends.base import LogCursor

    parsed = [parse_metric_line(e.message) for e in backend.read_logs(job, LogCursor())]
    return [m for m in parsed if m]


@pytest.fixture()
def fast_poll(monkeypatch):
    monkeypatch.setenv("FTCLOUD_TUNING_POLL_S", "0.3")  # the driver inherits it


@pytest.mark.slow
def test_learning_rate_search_prunes_the_bad_rate_and_keeps_the_good_one(tiny_model_dir, make_data, ftcloud_home,
                                                                           fast_poll):
    job = _job("lr-search", tiny_model_dir, make_data(rows=48), eval_steps=EVAL_STEPS)
    tuning = TuningSpec(parameters=[ParameterRange("learning_rate", "categorical", values=[3e-3, 1e-6])],
                        strategy="grid", max_trials=2, early_stopping="auto", seed=1)
    tuner = LocalTuner()
    tuner.launch(job, tuning)
    final = tuner.wait("lr-search", poll=0.5, timeout=600)
    assert final.status == "Completed", final.failure_reason
    good, bad = final.trials
    assert (good.parameters, bad.parameters) == ({"learning_rate": 3e-3}, {"learning_rate": 1e-6}), \
        "seed 1 orders the grid good rate first, so the median pruner has a finished trial to compare with"
    backend = LocalBackend()
    # Every trial is a normal local job of the same store.
    assert {j.name for j in backend.list_jobs()} == {"lr-search-t000", "lr-search-t001"}
    good_lines, bad_lines = _metric_lines(backend, good.name), _metric_lines(backend, bad.name)

    assert good.status == "Completed" and good.steps == MAX_STEPS
    assert good.objective == pytest.approx([m for m in good_lines if "eval_loss" in m][-1]["eval_loss"])
    assert [int(m["step"]) for m in good_lines if "eval_loss" in m][:4] == [4, 8, 12, 16]  # periodic evaluation

    # The bad rate was stopped early by the pruner: fewer steps in its own log, its job Stopped.
    bad_steps = max(int(m["step"]) for m in bad_lines)
    assert bad.status == "Pruned" and bad.steps == bad_steps < MAX_STEPS
    assert backend.status(bad.name).status == "Stopped"
    # Its objective is the value the pruner judged: one of its logged evaluations (the job may log one
    # more between the decision and the stop reaching it).
    assert any(bad.objective == pytest.approx(m["eval_loss"]) for m in bad_lines if "eval_loss" in m)
    # A clear margin between the best and the worst, and the best is the good rate.
    assert final.best.name == good.name
    assert bad.objective > good.objective + 1.0, (good.objective, bad.objective)


@pytest.mark.slow
def test_a_killed_tuning_resumes_without_rerunning_finished_trials(tiny_model_dir, make_data, ftcloud_home,
                                                                     fast_poll):
    # Long enough (a few seconds of training per trial) that the stop below lands while one trains.
    job = _job("resume", tiny_model_dir, make_data(rows=32), max_steps=60)
    tuning = TuningSpec(parameters=[ParameterRange("learning_rate", "continuous", low=1e-3, high=1e-2,
                                                   scaling="logarithmic")],
                        strategy="random", max_trials=3, max_parallel=2, seed=3,
                        objective=Objective("eval_loss", "minimize"))
    tuner = LocalTuner()
    tuner.launch(job, tuning)
    directory = ftcloud_home / "tunings" / "resume"
    deadline = time.time() + 400
    while not any(t.status == "Completed" for t in tuner.status("resume").trials):
        assert time.time() < deadline and not tuner.status("resume").terminal, tuner.status("resume")
        time.sleep(0.5)

    pid = int((directory / "driver.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # our child: reap it
    killed = tuner.status("resume")
    assert killed.status == "Failed" and "Run the same 'ftcloud tune' again" in killed.failure_reason
    finished = {t.name: _snapshot(ftcloud_home / "jobs" / t.name) for t in killed.trials if t.status == "Completed"}
    before = {t.number: t for t in killed.trials}

    resumed = tuner.launch(job, tuning)
    assert any("resumed" in note for note in resumed.notes)
    with pytest.raises(UsageError, match="already running"):
        tuner.launch(job, tuning)
    # Trials the killed driver left running were taken up again, not started over.
    for line in [f"trial {t.number} ({t.name}): taken up again" for t in killed.trials if t.status == "InProgress"]:
        _wait_for(lambda line=line: line in _driver_log(directory))

    # Stop while a trial trains: it checkpoints, the tuning ends Stopped; running tune again continues it.
    training = _wait_for(lambda: next((t for t in tuner.status("resume").trials
                                       if t.status == "InProgress" and t.steps), None))
    assert tuner.stop("resume").status == "Stopping"
    stopped = tuner.wait("resume", poll=0.5, timeout=300)
    assert stopped.status == "Stopped"
    interrupted = [t for t in stopped.trials if t.status == "Stopped"]
    assert training.name in {t.name for t in interrupted}
    for trial in interrupted:
        assert list((ftcloud_home / "jobs" / trial.name / "ml" / "checkpoints").glob("checkpoint-*"))
    tuner.launch(job, tuning)
    final = tuner.wait("resume", poll=0.5, timeout=600)
    assert final.status == "Completed", final.failure_reason

    assert [t.status for t in final.trials] == ["Completed"] * 3
    assert sorted(p.name for p in (ftcloud_home / "jobs").iterdir()) == [f"resume-t00{i}" for i in range(3)]
    for name, snapshot in finished.items():  # finished trials were not run again, nor touched
        assert _snapshot(ftcloud_home / "jobs" / name) == snapshot
    for number, trial in before.items():  # the same trials, with the same parameters
        assert final.trials[number].name == trial.name and final.trials[number].parameters == trial.parameters
    assert len({t.parameters["learning_rate"] for t in final.trials}) == 3
    for trial in interrupted:  # continued from the checkpoint it wrote when stopped
        assert "resuming from checkpoint-" in "\n".join(e.message for e in LocalBackend().logs(trial.name))
    for trial in final.trials:
        assert 1e-3 <= trial.parameters["learning_rate"] <= 1e-2
        lines = _metric_lines(LocalBackend(), trial.name)
        assert trial.objective == pytest.approx([m for m in lines if "eval_loss" in m][-1]["eval_loss"])
    assert final.best.objective == min(t.objective for t in final.trials)

    # The same name with other settings is refused, naming what changed; nothing is touched.
    record = (directory / "tuning.json").read_text()
    with pytest.raises(UsageError, match=r"different spec \(changed: tuning.max_trials\)"):
        tuner.launch(job, TuningSpec(**{**tuning.__dict__, "max_trials": 4}))
    assert (directory / "tuning.json").read_text() == record
    assert json.loads((directory / "state.json").read_text())["status"] == "Completed"


def _wait_for(probe, timeout: float = 400):
    deadline = time.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


def _driver_log(directory: Path) -> str:
    return (directory / "logs" / "driver.log").read_text()


def _snapshot(job_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(job_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(job_dir.rglob("*")) if p.is_file()}
