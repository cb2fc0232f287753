"""The live progress view, from the recorded log of a real tiny run.

``data/tiny_qlora_job`` is a local job directory (job.json, state.json, logs/algo-1.log) recorded from a real
run on CPU, with the tiny model and data of ``ftcloud_train.tiny``::

    python -c "from pathlib import Path; from ftcloud_train.tiny import *; build_model(Path('/tmp/w12/model'));
               write_jsonl(Path('/tmp/w12/data/train.jsonl'), make_rows(24, 'chat', 0, (0, 2)))"
    FTCLOUD_HOME=/tmp/w12/home ftcloud launch --technique qlora --model /tmp/w12/model \\
        --data /tmp/w12/data/train.jsonl --name tiny-qlora --set max_steps=8 --set per_device_train_batch_size=2 \\
        --set gradient_accumulation_steps=1 --set max_length=128 --set logging_steps=1 --wait
    cp -r /tmp/w12/home/jobs/tiny-qlora/{job.json,state.json,logs} tests/sdk/data/tiny_qlora_job/

Re-record it when the container's output changes.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from ftcloud.backends.base import JobStatus, LogEvent
from ftcloud.cli import main
from ftcloud.watch import WatchState, phase_of, render, summary_table, use_live_view

RECORDED = Path(__file__).parent / "data" / "tiny_qlora_job"
JOB = "tiny-qlora"


def recorded_events() -> list[LogEvent]:
    lines = (RECORDED / "logs" / "algo-1.log").read_text().splitlines()
    return [LogEvent(item["t"], "algo-1", item["m"]) for item in map(json.loads, lines)]


def terminal(width: int = 100) -> Console:
    """A fake terminal: rich believes it is a TTY and records what it draws."""
    return Console(record=True, force_terminal=True, width=width, file=io.StringIO(), highlight=False)


def drawn(renderable, width: int = 100) -> str:
    console = terminal(width)
    console.print(renderable)
    return console.export_text()


def row(text: str, label: str, value: str) -> bool:
    """``label`` and ``value`` on one line of a rendered table, whatever the column width."""
    return re.search(rf"{re.escape(label)}\s+{re.escape(value)}", text) is not None


def status(state: str, secondary: str, **kw) -> JobStatus:
    return JobStatus(name=JOB, backend=kw.pop("backend", "local"), status=state, secondary_status=secondary, **kw)


@pytest.fixture()
def recorded_job(ftcloud_home) -> Path:
    """The recorded run as a job of this test's local job store."""
    target = ftcloud_home / "jobs" / JOB
    shutil.copytree(RECORDED, target)
    return target


# ---------------------------------------------------------------------- the view, frame by frame
def test_mid_run_frame_shows_step_of_total_eta_epoch_and_loss_trend():
    events = recorded_events()
    state = WatchState(JOB)
    state.on_status(status("InProgress", "Training", started=events[0].timestamp / 1000, instance_type="local"))
    shown = []  # what the caller prints above the view
    assert state.phase == "starting"  # Training by the runner, but the container is still loading
    for event in events:  # the log up to the metric line of step 4
        if not state.on_log(event):
            shown.append(event)
        if event.message.startswith("ftcloud-progress phase=training"):
            assert state.phase == "training"
        if event.message.startswith("ftcloud-metric step=4 "):
            step4 = event
            break
    progress = next(e for e in events if e.message.startswith("ftcloud-progress phase=training"))
    assert "total_steps=8" in progress.message

    text = drawn(render(state, now=step4.timestamp / 1000))
    assert "4/8" in text and "50%" in text
    # The rate since training began, times the 4 steps left.
    eta = round((step4.timestamp - progress.timestamp) / 1000 / 4 * 4)
    assert row(text, "ETA", f"0m{eta:02d}s")
    assert row(text, "epoch", "0.36 of 1")
    assert row(text, "train loss", "7.9566") and any(ch in text for ch in "▁▂▃▄▅▆▇█")
    assert "training" in text.splitlines()[0]
    # Non-metric lines are the caller's to print: the data summary, notes, the checkpoint line.
    assert any("[ftcloud] attention=sdpa" in e.message for e in shown)
    assert not any(e.message.startswith(("ftcloud-metric", "ftcloud-progress")) for e in shown)


def test_final_summary_of_recorded_run():
    state = WatchState(JOB)
    for event in recorded_events():
        state.on_log(event)
    state.on_status(status("Completed", "Completed", started=1796137118.3, ended=1796137165.0,
                           artifacts="/jobs/tiny-qlora/ml/model", instance_type="local"))
    assert state.phase == "done" and state.eta_seconds(now=1796137165.0) == 0.0
    text = drawn(summary_table(state, now=1796137170.0, loss_png="/jobs/tiny-qlora/ml/model/loss.png"))
    assert "tiny-qlora: summary" in text
    assert row(text, "status", "Completed") and row(text, "steps", "8 of 8")
    assert "7.5305 -> 7.6777" in text  # first and last train loss of the log
    assert row(text, "eval loss", "8.2258  (perplexity 3736.04)")
    assert row(text, "duration", "0m47s")
    assert "loss.png" in text and "instance" not in text  # a local job has no instance to bill


def test_sagemaker_frames_show_phase_instance_spot_and_billable_time_so_far():
    state = WatchState("sm-job")
    started = 1_800_000_000.0
    state.on_status(status("InProgress", "Downloading", backend="sagemaker", started=started,
                           instance_type="ml.g5.2xlarge", instance_count=2, spot=True))
    text = drawn(render(state, now=started + 125))
    assert "downloading" in text.splitlines()[0]
    assert "2 x ml.g5.2xlarge | spot | billable so far ~2m05s" in text
    state.on_status(status("InProgress", "Training", backend="sagemaker", started=started,
                           instance_type="ml.g5.2xlarge", instance_count=2, spot=True))
    state.on_log(LogEvent(int((started + 200) * 1000), "algo-1", "ftcloud-progress phase=evaluating"))
    assert state.phase == "evaluating"
    state.on_status(status("Completed", "Completed", backend="sagemaker", started=started, ended=started + 900,
                           instance_type="ml.g5.2xlarge", instance_count=2, spot=True,
                           training_seconds=900, billable_seconds=300))
    text = drawn(summary_table(state, now=started + 1000))
    assert "billable 5m00s" in text and row(text, "spot savings", "66.7%")


def test_a_resumed_run_measures_its_eta_from_its_own_start():
    state = WatchState(JOB)
    state.on_status(status("InProgress", "Training"))
    t0 = 1_800_000_000_000
    state.on_log(LogEvent(t0, "algo-1", "ftcloud-progress phase=training step=0 total_steps=100 num_epochs=1"))
    state.on_log(LogEvent(t0 + 10_000, "algo-1", "ftcloud-metric step=10 train_loss=2.0"))
    # Stopped and resumed an hour later from checkpoint 10: the pause must not count as training time.
    state.on_log(LogEvent(t0 + 3_600_000, "algo-1", "ftcloud-progress phase=training step=10 total_steps=100"))
    state.on_log(LogEvent(t0 + 3_620_000, "algo-1", "ftcloud-metric step=20 train_loss=1.5"))
    assert state.seconds_per_step() == pytest.approx(2.0)
    assert state.eta_seconds(now=(t0 + 3_620_000) / 1000) == pytest.approx(160.0)
    assert "20/100" in drawn(render(state, now=(t0 + 3_620_000) / 1000))


@pytest.mark.parametrize(
    "state,secondary,container,phase",
    [
        ("InProgress", "Starting", None, "starting"),
        ("InProgress", "LaunchingMLInstances", None, "starting"),
        ("InProgress", "Downloading", None, "downloading"),
        ("InProgress", "DownloadingTrainingImage", None, "downloading"),
        ("InProgress", "Training", None, "starting"),  # the container is loading the model and data
        ("InProgress", "Training", "training", "training"),
        ("InProgress", "Training", "evaluating", "evaluating"),
        ("InProgress", "Training", "saving", "saving"),
        ("InProgress", "Uploading", "saving", "uploading"),
        ("InProgress", "Interrupted", None, "interrupted"),  # spot interruption: shown as it is
        ("Stopping", "Stopping", "training", "stopping"),
        ("Completed", "Completed", "saving", "done"),
        ("Failed", "Failed", "training", "done"),
    ],
)
def test_phase_table(state, secondary, container, phase):
    assert phase_of(state, secondary, container) == phase


@pytest.mark.parametrize(
    "is_terminal,as_json,plain,live",
    [(True, False, False, True), (False, False, False, False), (True, True, False, False), (True, False, True, False)],
)
def test_live_view_only_for_a_person_at_a_terminal(is_terminal, as_json, plain, live):
    assert use_live_view(is_terminal, as_json, plain) is live


# ---------------------------------------------------------------------- through the CLI
def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_logs_follow_on_a_terminal_draws_the_view_and_the_summary(capsys, monkeypatch, recorded_job):
    from ftcloud import cli_output

    screen = terminal(width=200)
    monkeypatch.setattr(cli_output, "out", screen)
    code, _, err = run_cli(capsys, "logs", JOB, "--follow")
    assert code == 0, err
    text = screen.export_text()
    assert "8/8" in text and "100%" in text
    assert "tiny-qlora: summary" in text and "8.2258" in text
    assert str(recorded_job / "ml" / "model") in text  # the artifacts of the completed job
    assert "[algo-1] [ftcloud] batching=length_grouped" in text  # plain lines still print above the view
    assert "ftcloud-metric" not in text and "ftcloud-progress" not in text


def test_logs_follow_plain_on_a_terminal_keeps_the_line_stream(capsys, monkeypatch, recorded_job):
    from ftcloud import cli_output

    screen = terminal(width=400)
    monkeypatch.setattr(cli_output, "out", screen)
    assert run_cli(capsys, "logs", JOB, "--follow", "--plain")[0] == 0
    lines = screen.export_text().splitlines()
    assert lines == [f"[algo-1] {e.message}" for e in recorded_events()]


def test_logs_follow_off_a_terminal_is_unchanged(capsys, recorded_job):
    code, out, _ = run_cli(capsys, "logs", JOB, "--follow")
    assert code == 0
    assert out.splitlines() == [f"[algo-1] {e.message}" for e in recorded_events()]
    code, out, _ = run_cli(capsys, "logs", JOB, "--follow", "--json")
    assert [json.loads(line)["message"] for line in out.splitlines()] == [e.message for e in recorded_events()]


# ---------------------------------------------------------------------- the progress line (contract)
def test_progress_line_round_trip_and_bad_items():
    from ftcloud.contract import format_progress_line, parse_progress_line

    line = format_progress_line("training", step=10, total_steps=120, num_epochs=3.0)
    assert line == "ftcloud-progress phase=training step=10 total_steps=120 num_epochs=3"
    assert parse_progress_line(line) == {"phase": "training", "step": 10.0, "total_steps": 120.0, "num_epochs": 3.0}
    assert parse_progress_line("[algo-1] ftcloud-progress phase=training") is None  # whole lines only
    assert parse_progress_line("ftcloud-metric step=1 train_loss=2") is None
    with pytest.raises(ValueError, match="phase 'warming'"):
        format_progress_line("warming")
    with pytest.raises(ValueError, match="no spaces"):
        format_progress_line("saving", where="a b")


def test_sagemaker_job_in_the_live_view_from_cloudwatch_lines(capsys, monkeypatch, platform_stack, train_file):
    """The same view for a SageMaker job: the recorded lines as CloudWatch events, instance facts from Describe."""
    import time

    import boto3

    from ftcloud import cli_output
    from ftcloud import platform_outputs as po

    from .conftest import REGION, moto_training_job

    assert run_cli(capsys, "platform", "use", po.DEFAULT_STACK_NAME)[0] == 0
    assert run_cli(capsys, "launch", "--model", "m/x", "--data", str(train_file), "--name", "sm-watch",
                   "--no-wait", "--json")[0] == 0
    job = moto_training_job("sm-watch")
    job.training_time_in_seconds, job.billable_time_in_seconds = 600, 200
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    stream = "sm-watch/algo-1-1700000000"
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
    now = int(time.time() * 1000)
    events = recorded_events()
    logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream,
                        logEvents=[{"timestamp": now - events[-1].timestamp + e.timestamp, "message": e.message}
                                   for e in events])
    screen = terminal(width=200)
    monkeypatch.setattr(cli_output, "out", screen)
    code, _, err = run_cli(capsys, "logs", "sm-watch", "--follow")
    assert code == 0, err
    text = screen.export_text()
    assert "8/8" in text and "sm-watch: summary" in text
    assert "ml.g5.2xlarge | spot | billable 3m20s" in text and row(text, "spot savings", "66.7%")
    assert "[algo-1] [ftcloud] attention=sdpa" in text and "ftcloud-metric" not in text
