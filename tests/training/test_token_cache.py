"""The token cache: written once, loaded without tokenizing, never used when anything that decides
the samples changed, never used when torn; followers wait for the leader's entry."""

from __future__ import annotations

import threading
import time

import pytest

from ftcloud_train import token_cache
from ftcloud_train.job import load_job
from ftcloud_train.recipe import prepare_data

from .jobtree import make_job


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from ftcloud_train.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir), False)


@pytest.fixture()
def calls(tokenizer, monkeypatch):
    """Counts every tokenizer call (encode and chat-template rendering) made through the class."""
    counter = {"n": 0}
    cls = type(tokenizer)
    for name in ("__call__", "apply_chat_template"):
        original = getattr(cls, name)

        def counted(self, *args, _original=original, **kwargs):
            counter["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)
    return counter


def _job(tmp_path, tiny_model_dir, **hp):
    return load_job(make_job(tmp_path, tiny_model_dir, rows=24, **hp))


def _entries(ctx):
    return sorted((ctx.paths.checkpoint_dir / token_cache.CACHE_DIRNAME).glob("*.npz"))


def test_second_run_loads_the_samples_without_tokenizing(tmp_path, tiny_model_dir, tokenizer, calls):
    ctx = _job(tmp_path, tiny_model_dir)
    train, evals, reports = prepare_data(ctx, tokenizer)
    assert calls["n"] > len(train) and evals  # tokenized: every row at least once
    assert len(_entries(ctx)) == 2  # train and its held-out split

    calls["n"] = 0
    again = prepare_data(ctx, tokenizer)
    assert calls["n"] == 0
    assert again == (train, evals, reports)  # the same samples (ids, labels, lengths) and reports


def test_changed_data_max_length_or_tokenizer_is_a_miss_and_other_keys_are_not(
    tmp_path, tiny_model_dir, tokenizer, calls
):
    ctx = _job(tmp_path, tiny_model_dir)
    prepare_data(ctx, tokenizer)

    def rebuilt(ctx, tok=tokenizer) -> bool:
        calls["n"] = 0
        prepare_data(ctx, tok)
        return calls["n"] > 0

    # A learning rate does not change a token: same entries.
    assert not rebuilt(_job(tmp_path, tiny_model_dir, learning_rate=1e-4))
    # One character of the data file (same size): a new key.
    data = ctx.paths.channel("train") / "data.jsonl"
    text = data.read_text()
    data.write_text(text.replace("apple", "appla", 1))
    assert rebuilt(ctx)
    # max_length decides truncation.
    assert rebuilt(_job(tmp_path, tiny_model_dir, max_length=40))
    # Another tokenizer (a different chat template renders different tokens).
    other = tokenizer.__class__.from_pretrained(str(tiny_model_dir))
    other.chat_template = tokenizer.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert token_cache.tokenizer_fingerprint(other) != token_cache.tokenizer_fingerprint(tokenizer)
    assert rebuilt(ctx, other)


def test_prepared_entry_in_the_channel_is_used_and_cache_files_do_not_change_the_key(
    tmp_path, tiny_model_dir, tokenizer, calls
):
    """What `ftcloud data prepare --tokenizer` leaves next to the data is picked up by the container."""
    ctx = _job(tmp_path, tiny_model_dir, validation_split=0)
    train_dir = ctx.paths.channel("train")
    key = token_cache.key(root=train_dir, spec=ctx.spec, tokenizer=tokenizer, split="train")
    fake = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7], "length": 3}]
    token_cache.save(train_dir / token_cache.CACHE_DIRNAME, key, fake, {"report": {"split": "train"}, "summary": "s"})
    # The entry sits under the channel, but the key covers only the data files the loader reads.
    assert token_cache.key(root=train_dir, spec=ctx.spec, tokenizer=tokenizer, split="train") == key

    train, evals, reports = prepare_data(ctx, tokenizer)
    assert calls["n"] == 0 and train == fake and evals == [] and reports == [{"split": "train"}]

    # An entry for other settings is never used.
    changed = _job(tmp_path, tiny_model_dir, validation_split=0, max_length=48)
    train, _, _ = prepare_data(changed, tokenizer)
    assert calls["n"] > 0 and train != fake


def test_roundtrip_keeps_ragged_and_scalar_fields(tmp_path):
    samples = [
        {"input_ids": [1, 2, 3], "labels": 1, "length": 3},
        {"input_ids": [], "labels": 0, "length": 0},
        {"input_ids": [9] * 5, "labels": 2, "length": 5},
    ]
    path = token_cache.save(tmp_path, "k1", samples, {"labels": ["a", "b", "c"]})
    entry = token_cache.load(tmp_path, "k1")
    assert entry.samples == samples and entry.meta == {"labels": ["a", "b", "c"]} and entry.path == path
    assert token_cache.load(tmp_path, "k2") is None
    assert [p.name for p in tmp_path.iterdir()] == ["k1.npz"]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["truncated", "changed_value", "empty", "renamed"])
def test_a_torn_or_foreign_entry_is_never_used(tmp_path, damage):
    samples = [{"input_ids": list(range(200)), "labels": list(range(200)), "length": 200}] * 20
    path = token_cache.save(tmp_path, "k", samples)
    raw = path.read_bytes()
    if damage == "truncated":  # a copy that stopped half-way (a sync interrupted by a spot stop)
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "changed_value":  # one token id inside the input_ids array: 100 -> 7
        run = b"".join(i.to_bytes(8, "little") for i in (99, 100, 101))
        at = raw.index(run) + 8
        path.write_bytes(raw[:at] + (7).to_bytes(8, "little") + raw[at + 8:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # another key's entry under this key's name
        token_cache.save(tmp_path, "other", samples[:3])
        (tmp_path / "other.npz").replace(path)
    assert token_cache.load(tmp_path, "k") is None
    # and the leader tokenizes again instead of using it
    entry, origin = token_cache.load_or_build("k", lambda: (samples[:1], {}), write_dir=tmp_path)
    assert origin == "built" and entry.samples == samples[:1]


def test_followers_wait_for_the_leaders_entry_and_time_out_when_none_comes(tmp_path):
    samples = [{"input_ids": [1, 2], "labels": [1, 2], "length": 2}]

    def never_called():
        raise AssertionError("a follower must not tokenize")

    writer = threading.Timer(0.3, lambda: token_cache.save(tmp_path, "k", samples, {"by": "leader"}))
    writer.start()
    started = time.monotonic()
    entry, origin = token_cache.load_or_build("k", never_called, write_dir=tmp_path, leader=False, poll_s=0.05)
    writer.join()
    assert entry.samples == samples and entry.meta == {"by": "leader"} and origin == str(tmp_path)
    assert time.monotonic() - started >= 0.25

    with pytest.raises(token_cache.CacheTimeout, match="never appeared"):
        token_cache.load_or_build("missing", never_called, write_dir=tmp_path, leader=False,
                                  timeout_s=0.2, poll_s=0.05)


def test_key_covers_tokenization_settings_only():
    from ftcloud.spec import TrainingSpec

    base = token_cache.spec_values(TrainingSpec())
    assert token_cache.spec_values(TrainingSpec(learning_rate=1e-3, lora_r=4)) == base
    for change in ({"max_length": 64}, {"overlength": "drop"}, {"completion_only_loss": False},
                   {"task": "classification"}):
        assert token_cache.spec_values(TrainingSpec(**change)) != base, change
    # SageMaker's strings (or a partial mapping, as a preparation step may hold) key like the typed spec.
    assert token_cache.spec_values({"max_length": "64", "learning_rate": "0.1"}) == \
        token_cache.spec_values(TrainingSpec(max_length=64))


_RANK_SCRIPT = """
import json, os, sys
from ftcloud.contract import ContainerPaths
from ftcloud_train.job import load_job
from ftcloud_train.modeling import load_tokenizer
from ftcloud_train.recipe import prepare_data

ctx = load_job(ContainerPaths.from_env(sys.argv[1]))
tokenizer = load_tokenizer(ctx.spec.model, False)
calls = {"n": 0}
cls = type(tokenizer)
for name in ("__call__", "apply_chat_template"):
    def counted(self, *a, _o=getattr(cls, name), **k):
        calls["n"] += 1
        return _o(self, *a, **k)
    setattr(cls, name, counted)
train, evals, _ = prepare_data(ctx, tokenizer, leader=os.environ["LOCAL_RANK"] == "0")
print(json.dumps({"calls": calls["n"], "train": train, "evals": evals}))
"""


@pytest.mark.slow
def test_two_processes_one_tokenizes_the_other_loads_its_entry(tmp_path, tiny_model_dir):
    """Ranks of one host: the follower starts first and waits; the leader tokenizes and writes."""
    import json
    import os
    import subprocess
    import sys

    paths = make_job(tmp_path, tiny_model_dir, rows=24)
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1"}
    follower = subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(paths.root)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the follower is waiting before the leader even starts
    leader = subprocess.run([sys.executable, "-c", _RANK_SCRIPT, str(paths.root)], capture_output=True, text=True,
                            env={**os.environ, "RANK": "0", "LOCAL_RANK": "0"}, timeout=300)
    out, err = follower.communicate(timeout=300)
    assert leader.returncode == 0 and follower.returncode == 0, leader.stderr + err
    lead, follow = json.loads(leader.stdout.splitlines()[-1]), json.loads(out.splitlines()[-1])
    assert lead["calls"] > 0 and follow["calls"] == 0
    assert follow["train"] == lead["train"] and follow["evals"] == lead["evals"]
