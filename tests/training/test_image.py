"""The container image: same pins as CI, non-root, no secrets, train/serve dispatch."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from .jobtree import make_job

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "training_image" / "Dockerfile").read_text()


def test_image_installs_ci_pins_and_runs_as_non_root():
    assert re.search(r"pip install -c constraints\.txt \"\.\[train\]\"", DOCKERFILE)
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert not re.search(r"\b(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|\w*SECRET\w*|\w*PASSWORD\w*|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY)\s*=", DOCKERFILE, re.I)
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    import peft
    import transformers

    assert transformers.__version__ == pins["transformers"] and peft.__version__ == pins["peft"]


def test_container_entrypoint_script_dispatches_train(tiny_model_dir, tmp_path):
    paths = make_job(tmp_path, tiny_model_dir, lora_rank=4)  # fails fast in hyperparameter parsing
    env = {**os.environ, "FTCLOUD_ML_ROOT": str(paths.root)}
    script = ROOT / "training_image" / "docker-entrypoint.sh"
    proc = subprocess.run(["sh", str(script), "train"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "lora_rank" in paths.failure_file.read_text()
    bad = subprocess.run(["sh", str(script), "bogus"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "usage" in bad.stderr
