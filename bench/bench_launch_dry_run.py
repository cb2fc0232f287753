"""``ftcloud launch --dry-run`` for the SageMaker backend vs creating one boto3 SageMaker client.

Both run as fresh processes. The dry run reads a job YAML, hashes the training file, resolves
the platform from the cached stack outputs (written here into a temporary FTCLOUD_HOME, as
'ftcloud platform use' would) and prints the exact CreateTrainingJob request, without calling
AWS. Runs are interleaved after one warm-up; medians are compared. Target: ratio <= 1.2x.

    python bench/bench_launch_dry_run.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

JOB_YAML = """\
backend: sagemaker
training:
  technique: qlora
  model: Qwen/Qwen2.5-0.5B-Instruct
  lora_r: 16
data:
  train: {train}
compute:
  instance_type: ml.g5.2xlarge
  max_runtime: 24h
tags:
  project: bench
"""


def timed(commands: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per command; runs are interleaved so machine load hits both alike."""
    for cmd in commands.values():  # warm-up
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
            samples[name].append(time.perf_counter() - start)
    return {name: (statistics.median(v), min(v)) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "home"
        home.mkdir()
        (home / "config.json").write_text(json.dumps({
            "backend": "sagemaker", "stack": "FtcloudPlatform", "region": "us-east-1",
            "platform_cache": {"stack": "FtcloudPlatform", "region": "us-east-1", "outputs": {
                "ExecutionRoleArn": "arn:aws:iam::123456789012:role/ftcloud-execution",
                "TrainingImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ftcloud-train:1",
                "DatasetBucketName": "ftcloud-datasets", "ArtifactBucketName": "ftcloud-artifacts",
                "KmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/abc",
                "SubnetIds": "subnet-1,subnet-2", "SecurityGroupIds": "sg-1"}}}))
        train = tmp_path / "train.jsonl"
        row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
        train.write_text((json.dumps(row) + "\n") * 2000)
        job = tmp_path / "job.yaml"
        job.write_text(JOB_YAML.format(train=train))
        env = {**os.environ, "FTCLOUD_HOME": str(home), "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}

        script = os.path.join(sysconfig.get_path("scripts"), "ftcloud")
        cli = [sys.executable, script] if os.path.isfile(script) else [sys.executable, "-m", "ftcloud.cli"]
        dry = [*cli, "launch", "-c", str(job), "--name", "bench-1", "--dry-run"]
        out = subprocess.run(dry, capture_output=True, text=True, check=True, env=env).stdout
        assert json.loads(out)["TrainingJobName"] == "bench-1"
        client = [sys.executable, "-c", "import boto3; boto3.client('sagemaker', region_name='us-east-1')"]

        result = timed({"client": client, "dry": dry}, args.runs, env)
    (base, base_min), (dry_run, dry_min) = result["client"], result["dry"]
    print(f"boto3 SageMaker client   : median {base * 1000:6.1f} ms, min {base_min * 1000:6.1f} ms")
    print(f"ftcloud launch --dry-run : median {dry_run * 1000:6.1f} ms, min {dry_min * 1000:6.1f} ms"
          f"   ratio {dry_run / base:.2f}x (min {dry_min / base_min:.2f}x)")
    print(f"target ratio <= 1.2x: {'met' if dry_run / base <= 1.2 else 'NOT met'}")

if __name__ == "__main__":
    main()
