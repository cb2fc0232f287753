"""The job log is for people: no deprecation warnings from our calls, no progress bars, each unavoidable
library notice once in words, and the exact number of optimizer steps announced before the first one."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest

from ftcloud.contract import ROOT_ENV, parse_metric_line, parse_progress_line
from ftcloud_train.report import PEFT_READS_DEPRECATED_ALIAS, library_notices

from .jobtree import make_job, metrics

# Runs the entrypoint with warnings.warn wrapped, so every FutureWarning / DeprecationWarning is
# recorded with the stack that raised it, before any filter (ours included) can hide it.
DRIVER = textwrap.dedent(
    """
    import json, sys, traceback, warnings

    records = []
    original = warnings.warn

    def recording_warn(message, category=None, stacklevel=1, source=None, **kwargs):
        category = category or (type(message) if isinstance(message, Warning) else UserWarning)
        if issubclass(category, (FutureWarning, DeprecationWarning)):
            stack = [frame.filename for frame in traceback.extract_stack()[:-1]]
            records.append({"category": category.__name__, "message": str(message)[:200], "stack": stack})
        return original(message, category, stacklevel + 1, source, **kwargs)

    warnings.warn = recording_warn
    from ftcloud_train.entrypoint import main

    try:
        code = main(["train"])
    finally:
        with open(sys.argv[1], "w") as fh:
            json.dump(records, fh)
    sys.exit(code)
    """
)

#: FutureWarnings raised inside third-party code by third-party calls, which we cannot change: (package that
#: made the call, start of the message). None of them reaches the log (asserted below).
KNOWN_THIRD_PARTY = {
    # peft 0.21 reads transformers 5's deprecated alias; silenced by name in report.library_notices
    ("peft", "`is_gradient_checkpointing` is deprecated"),
    # torch's own import (an isinstance check on a deprecated class); torch filters it out itself
    ("torch", "`isinstance(treespec, LeafSpec)` is deprecated"),
}


def package_of(filename: str) -> str:
    """``.../site-packages/transformers/x.py`` -> ``transformers``; our two packages by their folder."""
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for ours in ("ftcloud_train", "ftcloud"):
        if ours in parts:
            return ours
    return "python:" + filename  # the standard library, a script


def call_site(stack: list[str]) -> str:
    """The package that called the deprecated API: the innermost frame outside the package that warned."""
    warner = package_of(stack[-1])
    for filename in reversed(stack):
        package = package_of(filename)
        if package != warner and not package.startswith("python:"):
            return package
    return warner


@pytest.mark.parametrize(
    "device,optimizer,explained",
    [
        ("cpu", "paged_adamw_8bit", True),
        ("cpu", "paged_adamw_32bit", True),
        ("mps", "paged_adamw_8bit", True),
        ("cuda", "paged_adamw_8bit", False),  # paging works on GPUs: nothing to explain
        ("cpu", "adamw_torch", False),
        ("cuda", "adamw_torch", False),
    ],
)
def test_library_notices_table(device, optimizer, explained):
    found = library_notices(device, optimizer)
    assert found[0] == PEFT_READS_DEPRECATED_ALIAS and found[0].note is None
    paged = [n for n in found if n.category is UserWarning]
    assert len(paged) == int(explained) and len(found) == 1 + int(explained)
    if explained:  # the filter matches bitsandbytes' exact text, and the note names what happens instead
        assert re.match(paged[0].message, "Paged optimizers are not supported on CPU. Falling back to non-paged "
                                          "optimizer behavior.")
        assert optimizer in paged[0].note and f"non-paged on {device}" in paged[0].note


def test_call_site_attribution():
    site = "/x/lib/python3.11/site-packages"
    ours = "/work/main/training_image/ftcloud_train/modeling.py"
    assert call_site([ours, f"{site}/transformers/modeling_utils.py"]) == "ftcloud_train"
    assert call_site([ours, f"{site}/peft/peft_model.py", f"{site}/transformers/modeling_utils.py"]) == "peft"
    assert call_site([ours, "/usr/lib/python3.11/functools.py", f"{site}/transformers/x.py"]) == "ftcloud_train"


@pytest.mark.slow
def test_tiny_qlora_log_is_clean_and_announces_exact_total_steps(tiny_model_dir, tmp_path):
    # Epoch-based (no max_steps), batch 2, accumulation 3: ceil(ceil(rows / 2) / 3) steps, the last one
    # shorter than the others.
    paths = make_job(tmp_path / "ml", tiny_model_dir, rows=22, technique="qlora", max_steps=-1, num_train_epochs=1,
                     per_device_train_batch_size=2, gradient_accumulation_steps=3, logging_steps=1,
                     validation_split=0, max_length=64)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    record = tmp_path / "warnings.json"
    done = subprocess.run([sys.executable, str(driver), str(record)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, ROOT_ENV: str(paths.root), "PYTHONUNBUFFERED": "1"})
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]

    # No deprecation (Future- or DeprecationWarning) from our own calls; FutureWarnings (Python shows them
    # to users, unlike DeprecationWarnings raised in libraries) from third-party calls only from the list.
    records = json.loads(record.read_text())
    ours = [r for r in records if call_site(r["stack"]) in ("ftcloud", "ftcloud_train")]
    assert ours == [], json.dumps(ours, indent=1)[:3000]
    theirs = {(call_site(r["stack"]), r["message"]) for r in records if r["category"] == "FutureWarning"}
    assert {(site, message) for site, message in theirs
            if not any(site == known_site and message.startswith(known) for known_site, known in KNOWN_THIRD_PARTY)
            } == set()
    assert theirs, "the recorder saw no FutureWarning at all: is it still wired in?"
    # ... and none of them reaches the log; neither do progress bars or bitsandbytes' raw notice.
    for noise in ("FutureWarning", "DeprecationWarning", "Loading weights", "it/s]", "Paged optimizers are not"):
        assert noise not in log, noise
    notes = [line for line in log.splitlines() if "runs non-paged on cpu" in line]
    assert len(notes) == 1 and "paged_adamw_8bit" in notes[0]

    # The total is announced once, before the first step, and is what the Trainer ran.
    progress = [parse_progress_line(line) for line in log.splitlines() if parse_progress_line(line)]
    training = [p for p in progress if p["phase"] == "training"]
    rows = int(re.search(r"batching=\w+: (\d+) training rows", log).group(1))
    expected = math.ceil(math.ceil(rows / 2) / 3)
    assert math.ceil(rows / 2) % 3  # the last step is a partial one, the case a rough estimate gets wrong
    assert len(training) == 1 and training[0]["total_steps"] == expected and training[0]["step"] == 0
    assert [p["phase"] for p in progress] == ["training", "saving"]  # no validation rows: no evaluating
    steps = [int(m["step"]) for m in map(parse_metric_line, log.splitlines()) if m and "train_loss" in m]
    assert steps == list(range(1, expected + 1)) and metrics(paths)["global_step"] == expected
    first_metric = next(i for i, line in enumerate(log.splitlines()) if line.startswith("ftcloud-metric"))
    assert log.splitlines()[first_metric - 1].startswith("ftcloud-progress phase=training")
