"""Files ``ftcloud init`` writes."""

from __future__ import annotations

from pathlib import Path

STARTER_JOB = Path(__file__).with_name("job.yaml")


def starter_job_yaml() -> str:
    """The commented starter job file (valid as is, apart from the data path you fill in)."""
    return STARTER_JOB.read_text(encoding="utf-8")
