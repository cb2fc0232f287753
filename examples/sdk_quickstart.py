"""Fine-tune from Python, the way a pipeline step would: launch, wait, read metrics and logs.

Offline demo on this machine (generates a tiny model and data set, runs the local backend):

    python examples/sdk_quickstart.py --tiny

Against your platform (after 'ftcloud platform use STACK'), with a job file:

    python examples/sdk_quickstart.py --config examples/job.yaml
    python examples/sdk_quickstart.py --config examples/job.yaml --dry-run   # print the request only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import ftcloud


def tiny_inputs(workdir: Path) -> dict:
    """A generated tiny Llama and 32 chat rows (no download), and settings that finish in seconds."""
    from ftcloud_train.tiny import build_model, make_rows, write_jsonl

    model = build_model(workdir / "tiny-llama")
    data = write_jsonl(workdir / "train.jsonl", make_rows(32, "chat"))
    return {
        "backend": "local",
        "model": str(model),
        "data": str(data),
        "max_steps": 4,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_length": 128,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="job YAML file")
    parser.add_argument("--tiny", action="store_true", help="offline demo on a generated tiny model")
    parser.add_argument("--dry-run", action="store_true", help="only print the launch request")
    args = parser.parse_args()

    overrides = {"technique": "qlora"}
    if args.tiny:
        overrides.update(tiny_inputs(Path(tempfile.mkdtemp(prefix="ftcloud-quickstart-"))))
    elif not args.config:
        parser.error("pass --config JOB.yaml or --tiny")

    try:
        # Keyword arguments are the same keys as YAML / --set: any training field, compute, networking...
        job = ftcloud.launch(config=args.config, dry_run=args.dry_run, **overrides)
    except (ftcloud.SpecError, ftcloud.FtcloudError) as exc:
        print(f"cannot launch: {exc}", file=sys.stderr)  # messages name the field and how to fix it
        return 2
    if args.dry_run:
        print(json.dumps(job.launch_result.request, indent=2))
        return 0

    print(f"launched {job.name} on {job.backend.name}")
    final = job.wait(on_update=lambda st: print(f"  {st.status} / {st.secondary_status}"))
    if final.status != "Completed":
        print(f"{job.name} {final.status}: {final.failure_reason}", file=sys.stderr)
        return 1

    metric_lines = [e.message for e in job.logs() if e.message.startswith("ftcloud-metric")]
    print(f"last metric line: {metric_lines[-1] if metric_lines else '-'}")
    print(f"latest metrics:   {json.dumps(final.metrics, sort_keys=True)}")
    print(f"artifacts:        {final.artifacts}")
    if final.spot_savings_percent is not None:
        print(f"spot savings:     {final.spot_savings_percent}%")
    # Later, from anywhere: ftcloud.status(name), ftcloud.jobs(), ftcloud.stop(name), ftcloud.get_job(name).logs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
