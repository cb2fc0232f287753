"""The planner: catalog facts, memory estimates against published figures, recommendation, alternatives.

The estimate against real measured tensors of training on CPU is tests/training/test_memory_estimate.py.
"""

from __future__ import annotations

import json

import pytest

from ftcloud.errors import UsageError
from ftcloud.job import build_job_spec
from ftcloud.planning.catalog import CATALOG, ModelArch, from_config, lookup, resolve_model
from ftcloud.planning.instances import GIB, INSTANCES, PRICE_DATE, PRICE_REGION
from ftcloud.planning.memory import MemoryInputs, dtypes, estimate_memory, optimizer_bytes
from ftcloud.planning.plan import HEADROOM, PlanError, guard_launch, make_plan
from ftcloud.planning.throughput import flops_per_token
from ftcloud.spec import TrainingSpec

LLAMA8 = "meta-llama/Llama-3.1-8B"
LLAMA70 = "meta-llama/Llama-3.1-70B"
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"
#: LLaMA-65B (config.json of huggyllama/llama-65b), the model of the QLoRA paper's 48 GB claim.
LLAMA65 = {"hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64, "intermediate_size": 22016,
           "vocab_size": 32000, "max_position_embeddings": 2048, "model_type": "llama"}


# ---------------------------------------------------------------------- catalog
@pytest.mark.parametrize("name, billions", [
    (LLAMA8, 8.03), (LLAMA70, 70.55), ("mistralai/Mistral-7B-v0.1", 7.24), (MIXTRAL, 46.70),
    ("Qwen/Qwen2.5-0.5B", 0.49), ("Qwen/Qwen2.5-7B", 7.62), ("Qwen/Qwen2.5-72B", 72.71),
    ("google/gemma-2-9b", 9.24), ("google/gemma-2-27b", 27.23), ("microsoft/Phi-3-mini-4k-instruct", 3.82),
])  # fmt: skip
def test_parameter_counts_match_the_published_sizes(name, billions):
    assert CATALOG[name].parameter_counts()["total"] / 1e9 == pytest.approx(billions, abs=0.01)


def test_catalog_public_architecture_facts():
    l8, l70, mistral = CATALOG[LLAMA8], CATALOG[LLAMA70], CATALOG["mistralai/Mistral-7B-v0.1"]
    assert (l8.layers, l8.hidden, l8.heads, l8.kv_heads, l8.vocab) == (32, 4096, 32, 8, 128256)
    assert (l70.layers, l70.hidden, l70.heads, l70.kv_heads) == (80, 8192, 64, 8)
    assert (mistral.layers, mistral.hidden, mistral.heads, mistral.kv_heads, mistral.vocab) == (32, 4096, 32, 8, 32000)
    assert l8.gated and "Llama" in l8.license and not mistral.gated
    assert lookup("llama-3.1-8b") is l8 and lookup("meta-llama/Llama-3.1-8B-Instruct") is l8


def test_moe_total_and_active_parameters():
    counts = CATALOG[MIXTRAL].parameter_counts()
    assert counts["total"] / 1e9 == pytest.approx(46.7, abs=0.05)
    assert counts["active"] / 1e9 == pytest.approx(12.9, abs=0.05)
    # memory holds every expert; compute per token uses the active two
    spec = TrainingSpec(technique="lora", max_length=512, per_device_train_batch_size=1)
    est = estimate_memory(CATALOG[MIXTRAL], MemoryInputs.from_spec(spec))
    assert est.components["weights"] > 2 * 46.7e9  # bf16 base, all 8 experts
    dense_like = ModelArch("dense-46.7b", 32, 4096, 14336 * 8, 32, 8, vocab=32000, context=32768)
    ratio = flops_per_token(dense_like, "lora", 512, False) / flops_per_token(CATALOG[MIXTRAL], "lora", 512, False)
    assert 3.0 < ratio < 4.0  # 46.7B / 12.9B, less the shared attention and head
    plan = make_plan(build_job_spec(overrides={"technique": "qlora", "model": MIXTRAL, "max_steps": 10}))
    assert any("12.9B active" in note for note in plan.notes)


def test_any_model_through_its_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA65, "num_key_value_heads": 64}))
    arch = resolve_model(str(tmp_path))
    assert arch.parameter_counts()["total"] / 1e9 == pytest.approx(65.29, abs=0.01)
    from_llama8 = from_config({"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                               "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256})
    assert from_llama8.parameter_counts() == CATALOG[LLAMA8].parameter_counts()


def test_unknown_model_and_bad_config_say_what_to_do(tmp_path):
    with pytest.raises(UsageError, match="not in the catalog") as err:
        resolve_model("meta-llama/Llama-3.1-8")
    assert "Did you mean meta-llama/Llama-3.1-8B" in err.value.hint and "ftcloud models" in err.value.hint
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(UsageError, match=r"config.json: cannot read the model architecture .*num_hidden_layers"):
        resolve_model(str(tmp_path))


# ---------------------------------------------------------------------- memory
@pytest.mark.parametrize("technique, precision, quantization, gpu_bf16, expected", [
    ("lora", "auto", "none", None, ("fp32", "fp32", "fp32", None)),  # CPU
    ("lora", "auto", "none", True, ("bf16", "bf16", "fp32", "bf16")),  # Ampere+: frozen base in bf16
    ("full", "auto", "none", True, ("bf16", "fp32", "fp32", "bf16")),  # full: fp32 master weights
    ("lora", "auto", "none", False, ("fp16", "fp16", "fp32", "fp16")),  # T4 / V100
    ("qlora", "auto", "4bit", True, ("bf16", "bf16", "fp32", "bf16")),
    ("full", "bf16_pure", "none", True, ("bf16_pure", "bf16", "bf16", None)),
])  # fmt: skip
def test_dtype_decision_table(technique, precision, quantization, gpu_bf16, expected):
    dt = dtypes(technique, precision, quantization, gpu_bf16)
    assert (dt["precision"], dt["load"], dt["trainable"], dt["autocast"]) == expected


def test_full_fine_tuning_costs_16_bytes_per_parameter_before_activations():
    arch = CATALOG[LLAMA8]
    est = estimate_memory(arch, MemoryInputs.from_spec(TrainingSpec(technique="full")))
    p = arch.parameter_counts()["total"]
    # fp32 master weights 4 + fp32 grads 4 + AdamW 8 (mixed-precision recipe, ZeRO paper), + bf16 copies 2
    assert est.components["weights"] + est.components["gradients"] + est.components["optimizer"] == 16 * p
    assert est.components["autocast_copies"] == 2 * p


def test_nf4_double_quantization_saves_what_the_qlora_paper_says():
    arch = CATALOG[LLAMA70]
    dq = estimate_memory(arch, MemoryInputs(technique="qlora", quantization="4bit", double_quant=True))
    plain = estimate_memory(arch, MemoryInputs(technique="qlora", quantization="4bit", double_quant=False))
    blocks = arch.parameter_counts()["block_linear"]
    saved_bits = 8 * (plain.components["weights"] - dq.components["weights"]) / blocks
    assert saved_bits == pytest.approx(0.373, abs=0.002)  # paper: 0.5 -> 0.127 bits per parameter


@pytest.mark.parametrize("optimizer, sizes, expected", [
    ("adamw_torch", [10_000], 80_000),
    ("paged_adamw_32bit", [10_000], 80_000),
    ("paged_adamw_8bit", [10_000], 2 * 10_000 + 2 * 4 * 40),  # 8-bit states + fp32 absmax per 256
    ("paged_adamw_8bit", [1_000], 8_000),  # bitsandbytes keeps tensors < 4096 elements in 32-bit
])  # fmt: skip
def test_optimizer_state_bytes(optimizer, sizes, expected):
    assert optimizer_bytes(sizes, optimizer, 4) == expected


def test_fsdp_shards_weights_gradients_and_optimizer_but_not_activations():
    spec = TrainingSpec(technique="full", max_length=2048, per_device_train_batch_size=1)
    ddp = estimate_memory(CATALOG[LLAMA8], MemoryInputs.from_spec(spec, gpus=8, sharding="ddp"))
    fsdp = estimate_memory(CATALOG[LLAMA8], MemoryInputs.from_spec(spec, gpus=8, sharding="fsdp"))
    for part in ("weights", "gradients", "optimizer"):
        assert fsdp.components[part] == ddp.components[part] // 8
    assert fsdp.components["activations"] == ddp.components["activations"]


def test_published_figure_qlora_65b_fits_one_48_gb_gpu():
    """QLoRA paper (Dettmers et al. 2023): LLaMA-65B fine-tuned on a single 48 GB GPU."""
    arch = from_config(LLAMA65)
    usable = 48e9 * (1 - HEADROOM)
    ours = TrainingSpec(technique="qlora", max_length=512, per_device_train_batch_size=1)  # our defaults: r=16
    assert estimate_memory(arch, MemoryInputs.from_spec(ours)).total <= usable
    # the paper's own setup: r=64 on every linear layer, adapters in bf16 (their --bf16)
    paper = TrainingSpec(technique="qlora", lora_r=64, max_length=512, per_device_train_batch_size=1,
                         precision="bf16_pure")
    est = estimate_memory(arch, MemoryInputs.from_spec(paper))
    assert 35e9 < est.total <= usable
    # and without 4-bit it is nowhere near
    assert estimate_memory(arch, MemoryInputs.from_spec(TrainingSpec(technique="lora"))).total > 2 * 48e9


@pytest.mark.parametrize("model", [LLAMA8, "mistralai/Mistral-7B-v0.1"])
def test_published_figure_7_8b_qlora_needs_6_to_10_gb(model):
    spec = TrainingSpec(technique="qlora", max_length=512, per_device_train_batch_size=1)
    total = estimate_memory(CATALOG[model], MemoryInputs.from_spec(spec)).total
    assert 6e9 <= total <= 10e9, total / 1e9


# ---------------------------------------------------------------------- recommendation and alternatives
def test_recommends_a_24_gb_gpu_for_8b_qlora_at_2k_context(tmp_path):
    job = build_job_spec(overrides={"technique": "qlora", "model": LLAMA8, "max_length": 2048,
                                    "per_device_train_batch_size": 2, "max_steps": 200})
    plan = make_plan(job)
    assert plan.chosen is None and plan.fits
    rec = plan.recommended.instance
    assert rec.gpus == 1 and 20 <= rec.gpu_memory_gib <= 24  # A10G (g5) or L4 (g6) class
    # cheapest per hour among those that fit, spot price since spot is on by default
    assert all(plan.recommended.hourly(True) <= f.hourly(True) for f in plan.options)
    assert all(f.fits for f in plan.options)
    too_small = [i for i in INSTANCES.values() if i.gpu_memory_gib < 16]
    assert not {f.instance.type for f in plan.options} & {i.type for i in too_small}
    t = plan.recommended.time
    assert t.tokens == 200 * 2 * 8 * 2048 and t.hours > 0 and t.spot_usd < t.on_demand_usd
    d = plan.to_dict()
    assert d["prices"] == {"region": PRICE_REGION, "date": PRICE_DATE, "estimate": True}


def test_refuses_70b_full_fine_tuning_on_one_24_gb_gpu_with_useful_options():
    job = build_job_spec(overrides={"technique": "full", "model": LLAMA70, "instance_type": "ml.g5.2xlarge",
                                    "max_length": 2048, "per_device_train_batch_size": 1, "max_steps": 10})
    plan = make_plan(job)
    assert not plan.fits and plan.chosen.instance.type == "ml.g5.2xlarge"
    message = plan.problem()
    assert "meta-llama/Llama-3.1-70B with full needs about" in message
    assert "ml.g5.2xlarge has 1x A10G" in message and "run out of memory" in message
    qlora = [a for a in plan.alternatives if a.settings == {"technique": "qlora"}]
    assert qlora and qlora[0].fit.fits and "--technique qlora --instance-type" in qlora[0].change
    assert "--technique qlora --instance-type" in message
    with pytest.raises(PlanError, match="run out of memory") as err:
        guard_launch(job)
    assert "--force" in err.value.hint and job.compute.instance_type == "ml.g5.2xlarge"
    notes = guard_launch(job, force=True)
    assert notes and notes[0].startswith("--force")


def test_bf16_is_never_planned_on_a_gpu_without_it():
    """The planner asks the container's own precision decision: bf16 on a T4 would be refused at start."""
    job = build_job_spec(overrides={"technique": "qlora", "model": "Qwen/Qwen2.5-0.5B", "precision": "bf16",
                                    "instance_type": "ml.g4dn.xlarge", "max_length": 512, "max_steps": 10})
    plan = make_plan(job)
    assert not plan.fits and "ml.g4dn.xlarge (T4) cannot run this job: precision=bf16 needs a GPU" in plan.problem()
    assert plan.recommended.instance.gpu_spec.bf16  # the recommendation is one where it runs
    assert all(f.instance.gpu_spec.bf16 for f in plan.options)
    with pytest.raises(PlanError, match="cannot run this job"):
        guard_launch(job)
    auto = make_plan(build_job_spec(overrides={"technique": "qlora", "model": "Qwen/Qwen2.5-0.5B",
                                               "instance_type": "ml.g4dn.xlarge", "max_length": 512}))
    assert auto.fits and auto.memory.dtypes["autocast"] == "fp16"  # precision=auto: fp16 on a T4


def test_shorter_sequences_and_smaller_micro_batches_are_offered_when_they_fit():
    job = build_job_spec(overrides={"technique": "qlora", "model": LLAMA8, "instance_type": "ml.g5.2xlarge",
                                    "max_length": 8192, "per_device_train_batch_size": 2, "max_steps": 10})
    plan = make_plan(job)
    assert not plan.fits
    changes = {tuple(a.settings): a for a in plan.alternatives}
    shorter = changes[("max_length",)]
    assert shorter.fit.fits and shorter.fit.instance.type == "ml.g5.2xlarge" and shorter.settings["max_length"] < 8192
    smaller = changes[("per_device_train_batch_size", "gradient_accumulation_steps")]
    assert smaller.settings == {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 16}


def test_auto_instance_type_resolves_to_the_recommendation():
    job = build_job_spec(overrides={"technique": "qlora", "model": "Qwen/Qwen2.5-0.5B", "max_steps": 10})
    assert job.compute.instance_type == "auto"
    expected = make_plan(job).recommended.instance.type
    notes = guard_launch(job)
    assert job.compute.instance_type == expected and expected in notes[0]


def test_time_and_cost_from_local_data(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": "x" * 399}) + "\n" for _ in range(1000)))
    job = build_job_spec(overrides={"technique": "lora", "model": "Qwen/Qwen2.5-0.5B", "data": str(data),
                                    "num_train_epochs": 2, "validation_split": 0.0})
    plan = make_plan(job)
    line_tokens = int(len(json.dumps({"text": "x" * 399}) + "\n") / 4) + 1
    assert plan.recommended.time.tokens == 1000 * line_tokens * 2
    assert "1000 rows" in plan.tokens_note
    s3 = make_plan(build_job_spec(overrides={"technique": "lora", "model": "Qwen/Qwen2.5-0.5B",
                                             "data": "s3://b/train.jsonl"}))
    assert s3.recommended.time.hours is None and "--dataset-tokens" in s3.tokens_note
    given = make_plan(build_job_spec(overrides={"technique": "lora", "model": "Qwen/Qwen2.5-0.5B",
                                                "data": "s3://b/train.jsonl"}), dataset_tokens_override=10_000_000)
    assert given.recommended.time.tokens == 30_000_000  # x 3 epochs (default)


def test_gib_figures_in_json_add_up():
    plan = make_plan(build_job_spec(overrides={"technique": "lora", "model": LLAMA8, "max_steps": 5}))
    mem = plan.to_dict()["memory"]
    assert sum(mem["components_gib"].values()) == pytest.approx(mem["total_gib"], abs=0.01)
    assert plan.memory.total / GIB == pytest.approx(mem["total_gib"], abs=0.001)


def test_docs_tables_are_the_codes():
    from pathlib import Path

    from ftcloud.planning import catalog, instances

    page = (Path(__file__).resolve().parents[2] / "docs" / "plan.md").read_text(encoding="utf-8")
    assert instances.markdown_table() in page, "docs/plan.md's instance table is stale: paste instances.markdown_table()"
    assert catalog.markdown_table() in page, "docs/plan.md's catalog table is stale: paste catalog.markdown_table()"
    assert f"{PRICE_REGION} as of {PRICE_DATE}" in page
