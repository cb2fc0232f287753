"""Progress lines survive a reader that went away (the local runner killed while training runs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_log_survives_a_closed_pipe_so_training_can_still_checkpoint(tmp_path):
    done = tmp_path / "checkpoint-written"
    child = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from ftcloud_train.report import emit_metrics, log
        sys.stdin.read()                       # wait until the reader has gone
        log("SIGTERM received: saving a checkpoint")   # the pipe is broken now
        emit_metrics(3, {{"train_loss": 1.0}})
        Path({str(done)!r}).write_text("ok")   # what a stop handler must still reach
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader dies
    _, err = proc.communicate(b"", timeout=60)
    assert proc.returncode == 0, err.decode()
    assert done.read_text() == "ok"
