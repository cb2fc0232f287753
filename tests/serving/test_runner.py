"""The model runner without a socket: what it loads, and that batching never changes an answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ftcloud.contract import BASE_ADAPTER
from ftcloud_train.serving.protocol import GenerationTask, RequestError, sampling
from ftcloud_train.serving.runner import Artifact, ModelLoadError, ModelRunner, cpu_threads, serving_dtype

PROMPTS = [
    "What colour is grass?",
    "What colour is the sky? please answer briefly and precisely because the customer is waiting",
    "a",
    "Low-rank adaptation trains two small matrices",
    "What colour is snow?",
]


def task(text, adapter=None, max_new_tokens=12, stop=()):
    s = sampling(max_new_tokens, False, None, None, None, None, stop, None)
    return GenerationTask(text=text, messages=None, sampling=s, adapter=adapter)


def one_by_one(runner, tasks):
    return [runner.generate([runner.prepare(t)])[0] for t in tasks]


def batched(runner, tasks):
    return runner.generate([runner.prepare(t) for t in tasks])


@pytest.mark.parametrize(
    ("capability", "load_in", "dtype"),
    [(None, "none", "fp32"), (None, "4bit", "fp32"), ((7, 5), "none", "fp16"), ((7, 0), "8bit", "fp16"),
     ((8, 0), "none", "bf16"), ((9, 0), "4bit", "bf16")],
)
def test_serving_dtype_by_device(capability, load_in, dtype):
    assert serving_dtype(capability, load_in) == dtype


@pytest.mark.parametrize(("cpus", "omp", "threads"), [(2, None, 1), (1, None, 1), (16, None, 15), (16, "4", None)])
def test_cpu_serving_leaves_a_core_to_the_event_loop_unless_omp_is_set(cpus, omp, threads):
    assert cpu_threads(cpus, omp) == threads


def test_loaded_runner_uses_those_threads(adapter_ml_root):
    import os

    # A fresh load: the session runner may have been loaded by an earlier module, whose threads were restored.
    ModelRunner.load(adapter_ml_root / "model", adapter_ml_root)
    if not os.environ.get("OMP_NUM_THREADS"):
        assert torch.get_num_threads() == cpu_threads(len(os.sched_getaffinity(0)), None)


def _touch(path: Path, payload: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload or {}))
    return path


def test_artifact_finds_the_base_of_an_adapter_without_the_hub(tmp_path, monkeypatch):
    model = tmp_path / "model"
    with pytest.raises(ModelLoadError, match="no model in"):
        Artifact.inspect(model, tmp_path)
    _touch(model / "adapter_config.json", {"base_model_name_or_path": "/gone/llama"})
    _touch(model / "adapters" / "fr" / "adapter_config.json")
    with pytest.raises(ModelLoadError, match="FTCLOUD_BASE_MODEL"):
        Artifact.inspect(model, tmp_path)
    _touch(model / "merged" / "config.json")  # merged weights are self-contained: served alone
    merged = Artifact.inspect(model, tmp_path)
    assert merged.weights == str(model / "merged") and not merged.is_adapter
    _touch(tmp_path / "additional-model-data-sources" / "base" / "config.json")  # SageMaker's mount
    extra = Artifact.inspect(model, tmp_path)
    assert extra.weights == str(tmp_path / "additional-model-data-sources" / "base")
    assert list(extra.adapters) == ["default", "fr"]
    _touch(model / "base" / "config.json")  # shipped inside the artifact: preferred
    assert Artifact.inspect(model, tmp_path).weights == str(model / "base")
    assert Artifact.inspect(model, tmp_path, base_model="/models/b").weights == "/models/b"  # env wins


def test_artifact_with_full_weights(tmp_path):
    _touch(tmp_path / "model" / "config.json")
    art = Artifact.inspect(tmp_path / "model")
    assert art.weights == str(tmp_path / "model") and not art.is_adapter
    (tmp_path / "other").mkdir()
    _touch(tmp_path / "other" / "notes.json")
    with pytest.raises(ModelLoadError, match="neither adapter_config.json"):
        Artifact.inspect(tmp_path / "other")


def test_batched_greedy_equals_one_by_one(adapter_runner):
    # Different prompt lengths (left padding), lengths and a stop sequence in one batch.
    tasks = [task(p, max_new_tokens=n) for p, n in zip(PROMPTS, [12, 5, 12, 9, 12], strict=True)]
    single = one_by_one(adapter_runner, tasks)
    stop_at = single[0].text[3:5]  # a stop sequence that really occurs in the first answer
    tasks[0] = task(PROMPTS[0], stop=(stop_at,))
    single[0] = one_by_one(adapter_runner, [tasks[0]])[0]
    calls = adapter_runner.generate_calls
    together = batched(adapter_runner, tasks)
    assert adapter_runner.generate_calls == calls + 1
    assert [g.text for g in together] == [g.text for g in single]
    assert [g.finish_reason for g in together] == [g.finish_reason for g in single]
    assert stop_at not in together[0].text and together[0].finish_reason == "stop"
    assert together[1].completion_tokens == 5 and together[1].finish_reason == "length"


def test_each_request_gets_its_adapter_even_when_mixed_in_one_batch(adapter_runner):
    adapters = ["default", "second", BASE_ADAPTER, "second", None]
    tasks = [task(p, a) for p, a in zip(PROMPTS, adapters, strict=True)]
    single = one_by_one(adapter_runner, tasks)
    same_prompt = [one_by_one(adapter_runner, [task(PROMPTS[0], a)])[0].text for a in ("default", "second", BASE_ADAPTER)]
    assert len(set(same_prompt)) == 3  # the adapters really change the answer
    prepared = [adapter_runner.prepare(t) for t in tasks]
    assert len({adapter_runner.batch_key(p) for p in prepared}) == 1  # LoRA adapters mix in one batch
    assert [g.text for g in adapter_runner.generate(prepared)] == [g.text for g in single]


def test_dora_adapters_are_batched_per_adapter(adapter_runner):
    dora = adapter_runner.prepare(task(PROMPTS[0], "dora"))
    lora = adapter_runner.prepare(task(PROMPTS[0], "second"))
    assert adapter_runner.batch_key(dora) != adapter_runner.batch_key(lora)
    tasks = [task(p, "dora") for p in PROMPTS[:3]]
    assert [g.text for g in batched(adapter_runner, tasks)] == [g.text for g in one_by_one(adapter_runner, tasks)]
    assert batched(adapter_runner, [task(PROMPTS[0], "dora")])[0].text != batched(adapter_runner, [task(PROMPTS[0], "second")])[0].text


def test_requests_the_model_cannot_take_are_refused(adapter_runner):
    with pytest.raises(RequestError) as unknown:
        adapter_runner.prepare(task("x", "missing"))
    assert unknown.value.status == 422 and "second" in unknown.value.message
    long_prompt = "colour " * (adapter_runner.context_length + 10)
    with pytest.raises(RequestError) as too_long:
        adapter_runner.prepare(task(long_prompt))
    assert too_long.value.status == 413 and f"context of {adapter_runner.context_length}" in too_long.value.message


def test_chat_messages_go_through_the_saved_chat_template(adapter_runner):
    chat = GenerationTask(text=None, messages=(("user", "What colour is grass?"),), sampling=task("x").sampling)
    prompt = adapter_runner.render(chat)
    assert prompt.endswith("<|im_start|>assistant\n") and "What colour is grass?" in prompt
    assert adapter_runner.generate([adapter_runner.prepare(chat)])[0].completion_tokens > 0


def test_answers_stop_at_every_eos_id_of_generation_config(tiny_model_dir, tmp_path):
    """generation_config.json may list several EOS ids (end of text, end of turn): each one stops."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    first = ModelRunner.load(model)
    free = first.generate([first.prepare(task(PROMPTS[0], max_new_tokens=8))])[0]
    prompt_ids = first.prepare(task(PROMPTS[0])).input_ids
    out = first.model.generate(torch.tensor([prompt_ids]), max_new_tokens=8, do_sample=False)
    tokens = out[0, len(prompt_ids):].tolist()
    cut = next(i for i in range(2, len(tokens)) if tokens[i] not in tokens[:i])  # first emitted at step >= 2
    config = json.loads((model / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], tokens[cut]]
    (model / "generation_config.json").write_text(json.dumps(config))
    runner = ModelRunner.load(model)
    assert runner.eos_ids == config["eos_token_id"]
    stopped = runner.generate([runner.prepare(task(PROMPTS[0], max_new_tokens=8))])[0]
    assert stopped.finish_reason == "stop" and free.finish_reason == "length"
    assert stopped.completion_tokens == cut < free.completion_tokens  # cut right before that id


@pytest.mark.slow
@pytest.mark.parametrize(("load_in", "layer"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_loading_serves_adapters(adapter_ml_root, load_in, layer):
    runner = ModelRunner.load(adapter_ml_root / "model", adapter_ml_root, load_in=load_in)
    kinds = {type(m).__name__ for m in runner.model.modules()}
    assert layer in kinds  # the base really is quantized by bitsandbytes
    tasks = [task(p, a, max_new_tokens=6) for p, a in zip(PROMPTS[:3], ["default", "second", None], strict=True)]
    out = batched(runner, tasks)
    assert all(g.completion_tokens > 0 for g in out)
    assert [g.text for g in out] == [g.text for g in one_by_one(runner, tasks)]


@pytest.mark.parametrize(
    ("requested", "kind", "trained", "expected"),
    [
        ("auto", "adapter", {"resolved": {"quantization": "4bit"}}, "4bit"),  # QLoRA / QDoRA
        ("auto", "adapter", {"resolved": {"quantization": "8bit"}}, "8bit"),
        ("auto", "adapter", {"resolved": {"quantization": "none"}}, "none"),  # LoRA on a 16/32-bit base
        ("auto", "adapter", None, "none"),  # an adapter trained elsewhere: no spec, no guess
        ("auto", "full", {"resolved": {"quantization": "none"}}, "none"),
        ("none", "adapter", {"resolved": {"quantization": "4bit"}}, "none"),  # explicit wins
        ("8bit", "full", None, "8bit"),
    ],
)
def test_auto_load_mode_serves_an_adapter_on_the_base_it_was_trained_against(tmp_path, requested, kind, trained,
                                                                             expected):
    from ftcloud_train.serving.runner import resolve_load_in

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    if trained is not None:
        (model_dir / "ftcloud_spec.json").write_text(json.dumps(trained))
    adapters = {"default": model_dir} if kind == "adapter" else {}
    artifact = Artifact(model_dir, "base-or-weights", adapters)
    assert resolve_load_in(requested, artifact) == expected
