"""Loss curves from metric lines: the text chart, the sparkline, the PNG; ``status`` and ``compare``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from ftcloud.cli import main
from ftcloud.curves import Curve, sparkline, text_chart, write_png
from ftcloud.errors import UsageError

RECORDED = Path(__file__).parent / "data" / "tiny_qlora_job"  # how it was recorded: test_watch.py
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def recorded_lines() -> list[str]:
    return [json.loads(line)["m"] for line in (RECORDED / "logs" / "algo-1.log").read_text().splitlines()]


def add_job(home: Path, name: str, scale: float = 1.0) -> Path:
    """The recorded run as job ``name``; ``scale`` multiplies its losses (a second, different run)."""
    target = home / "jobs" / name
    shutil.copytree(RECORDED, target)
    if scale != 1.0:
        log = target / "logs" / "algo-1.log"
        out = []
        for line in log.read_text().splitlines():
            item = json.loads(line)
            words = [
                f"{k}={float(v) * scale:.6g}" if k in ("train_loss", "eval_loss") and v else w
                for w in item["m"].split() for k, _, v in [w.partition("=")]
            ]
            out.append(json.dumps({**item, "m": " ".join(words)}))
        log.write_text("\n".join(out) + "\n")
    return target


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------- the curve itself
def test_curve_from_recorded_log_and_a_resume_keeps_the_latest_value_per_step():
    curve = Curve.from_lines("tiny", recorded_lines())
    assert sorted(curve.train) == list(range(1, 9)) and sorted(curve.eval) == [8]
    final = curve.final()
    assert final["steps"] == 8 and final["train_loss"] == pytest.approx(7.67768, abs=1e-4)
    assert final["eval_loss"] == pytest.approx(8.22578) and final["eval_perplexity"] == pytest.approx(3736.04)
    assert final["tokens_per_second"] == pytest.approx(sum(curve.throughput) / 8)
    # A resumed run logs steps after its checkpoint again: the newer value wins, nothing is doubled.
    curve.add_line("ftcloud-metric step=8 train_loss=1.5")
    assert curve.train[8] == 1.5 and len(curve.train) == 8
    assert not curve.add_line("[ftcloud] done: step 8") and not curve.add_line("ftcloud-progress phase=saving")


def test_sparkline():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5.0, 1.0]) == "█▁"
    assert sparkline([2.0, 2.0, 2.0]) == "▄▄▄"  # flat: mid height, not a cliff
    assert sparkline(list(range(100)), width=4) == "▁▃▆█"  # the latest values only
    assert sparkline([float("nan"), 1.0, float("inf"), 2.0]) == "▁█"
    assert sparkline([]) == ""


def test_text_chart_of_recorded_run():
    curve = Curve.from_lines("tiny", recorded_lines())
    chart = text_chart(curve, width=40, height=8)
    lines = chart.splitlines()
    grid = [line.split("|", 1)[1] for line in lines[:8]]
    assert all(len(row) == 40 for row in grid)
    assert sum(row.count("*") for row in grid) == 8 and sum(row.count("o") for row in grid) == 1
    # eval loss 8.2258 is the highest value: top row, last column; the lowest train loss (7.1113, step 7)
    # is on the bottom row.
    assert grid[0].rstrip().endswith("o") and lines[0].lstrip().startswith("8.226")
    assert "*" in grid[7] and lines[7].lstrip().startswith("7.111")
    assert "step 1" in lines[9] and lines[9].rstrip().endswith("8")
    assert "o eval loss" in lines[10]
    assert text_chart(Curve("empty")) == "(no loss values logged yet)"
    assert all(len(line) <= 80 for line in text_chart(curve, width=60).splitlines())


def test_png_of_several_curves(tmp_path):
    a = Curve.from_lines("a", recorded_lines())
    b = Curve.from_lines("b", [line.replace("train_loss=7", "train_loss=6") for line in recorded_lines()])
    path = write_png([a, b], tmp_path / "sub" / "cmp.png")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000
    assert [p.name for p in path.parent.iterdir()] == ["cmp.png"]  # no temporary file left


def test_png_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError) as info:
        write_png([Curve.from_lines("a", recorded_lines())], tmp_path / "x.png")
    assert "matplotlib" in info.value.message and "pip install" in info.value.hint
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------- status and compare
def test_status_shows_the_text_chart_and_names_the_png(capsys, ftcloud_home):
    add_job(ftcloud_home, "tiny-qlora")
    code, out, err = run(capsys, "status", "tiny-qlora")
    assert code == 0, err
    assert "loss curve" in out and "* train loss   o eval loss" in out
    png = Path(out.split("loss curve PNG: ", 1)[1].split()[0])
    # The recorded job has no artifacts on this machine: the PNG is drawn from its log lines.
    assert png == ftcloud_home / "curves" / "tiny-qlora.png" and png.read_bytes().startswith(PNG_MAGIC)
    # A finished local job's own loss.png (written by the container) is named instead.
    own = ftcloud_home / "jobs" / "tiny-qlora" / "ml" / "model" / "loss.png"
    own.parent.mkdir(parents=True)
    own.write_bytes(PNG_MAGIC)
    assert f"loss curve PNG: {own}" in run(capsys, "status", "tiny-qlora")[1]
    # --json stays the status record.
    assert json.loads(run(capsys, "status", "tiny-qlora", "--json")[1])["status"] == "Completed"


def test_compare_lays_jobs_side_by_side_with_one_png(capsys, ftcloud_home, tmp_path):
    add_job(ftcloud_home, "run-a")
    add_job(ftcloud_home, "run-b", scale=0.5)
    code, out, err = run(capsys, "compare", "run-a", "run-b", "--json", "--png", str(tmp_path / "cmp.png"))
    assert code == 0, err
    data = json.loads(out)
    a, b = data["jobs"]
    assert (a["name"], b["name"]) == ("run-a", "run-b")
    assert a["eval_loss"] == pytest.approx(8.22578) and b["eval_loss"] == pytest.approx(8.22578 * 0.5, rel=1e-5)
    assert a["steps"] == b["steps"] == 8 and a["status"] == "Completed"
    assert data["png"] == str(tmp_path / "cmp.png") and (tmp_path / "cmp.png").read_bytes().startswith(PNG_MAGIC)

    code, out, _ = run(capsys, "compare", "run-a", "run-b")
    assert code == 0
    row_a = next(line for line in out.splitlines() if line.startswith("run-a"))
    assert "8.2258" in row_a and "7.6777" in row_a and "Completed" in row_a
    assert f"curves PNG: {ftcloud_home / 'curves' / 'compare-run-a-run-b.png'}" in out


@pytest.mark.parametrize(
    "args,needle",
    [(["compare", "run-a", "run-a"], "named twice"), (["compare", "run-a", "--png", "/nonexistent/dir/x.png"],
                                                      "does not exist"), (["compare"], "Missing argument")],
)
def test_compare_bad_input(capsys, ftcloud_home, args, needle):
    add_job(ftcloud_home, "run-a")
    code, _, err = run(capsys, *args)
    assert code == 2 and needle in err


def test_compare_unknown_job(capsys, ftcloud_home):
    add_job(ftcloud_home, "run-a")
    code, _, err = run(capsys, "compare", "run-a", "ghost", "--backend", "local")
    assert code == 1 and "ghost" in err
