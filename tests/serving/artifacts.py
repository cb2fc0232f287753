"""Serving artifacts laid out the way training writes them, built offline from the tiny model.

Adapters are random (``init_lora_weights=False``): no training is needed to compare batched with
one-by-one outputs, and two adapters with different seeds answer differently.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def save_adapter(base_dir: Path, out_dir: Path, seed: int, dora: bool = False) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False, use_dora=dora, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def make_adapter_artifact(ml_root: Path, base_dir: Path, extra: dict[str, dict] | None = None) -> Path:
    """``ml_root/model``: root adapter "default", extra adapters in adapters/<name>/, tokenizer and
    generation_config.json (as training saves them) and the base in model/base/."""
    model_dir = Path(ml_root) / "model"
    save_adapter(base_dir, model_dir, seed=1)
    for name, kwargs in (extra or {}).items():
        save_adapter(base_dir, model_dir / "adapters" / name, **kwargs)
    for f in Path(base_dir).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "generation_config", "chat_template")):
            shutil.copy(f, model_dir / f.name)
    shutil.copytree(base_dir, model_dir / "base")
    return model_dir


def make_full_artifact(ml_root: Path, base_dir: Path) -> Path:
    model_dir = Path(ml_root) / "model"
    shutil.copytree(base_dir, model_dir)
    return model_dir
