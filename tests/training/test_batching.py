"""Batching strategies: packing keeps documents apart; padding is masked out of the loss."""

from __future__ import annotations

import torch

from ftcloud_train.batching import PadCollator, pack_samples, resolve_batching
from ftcloud_train.data import IGNORE_INDEX


def _sample(n, start=10):
    ids = list(range(start, start + n))
    return {"input_ids": ids, "labels": list(ids), "length": n}


def test_first_fit_decreasing_packing_respects_max_length():
    samples = [_sample(n) for n in (7, 5, 4, 3, 3, 2, 8)]
    packed = pack_samples(samples, max_length=10)
    assert all(row["length"] <= 10 for row in packed)
    assert sum(row["length"] for row in packed) == sum(s["length"] for s in samples)
    assert len(packed) == 4  # 32 tokens in rows of 10
    for row in packed:  # position ids restart at every document; first token of a doc is not a target
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert all(row["labels"][i] == IGNORE_INDEX for i in starts)


def test_auto_batching_by_device():
    assert resolve_batching("auto", "cpu", flash_attention=False) == "length_grouped"
    assert resolve_batching("auto", "cuda", flash_attention=True) == "packed"
    assert resolve_batching("auto", "cuda", flash_attention=False) == "length_grouped"
    assert resolve_batching("padded", "cuda", flash_attention=True) == "padded"


def test_pad_collator_masks_padding():
    batch = PadCollator(pad_token_id=0, multiple_of=8)([_sample(3), _sample(5)])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert (batch["labels"][0, 3:] == IGNORE_INDEX).all()


def test_packed_rows_attend_per_document(tiny_model_dir):
    """The logits of a document are the same alone and packed after another one."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    a, b = _sample(6, start=20), _sample(9, start=40)
    packed = pack_samples([a, b], max_length=32)
    assert len(packed) == 1
    batch = PadCollator(pad_token_id=0)(packed + pack_samples([_sample(3)], 32))  # second row is padded
    assert "attention_mask" not in batch
    with torch.no_grad():
        # use_cache=False as in training: with a cache transformers does not look for packed rows
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone_b = model(input_ids=torch.tensor([b["input_ids"]])).logits[0]
    # b was placed first (longest first), then a
    torch.testing.assert_close(together[: b["length"]], alone_b, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        alone_a = model(input_ids=torch.tensor([a["input_ids"]])).logits[0]
    torch.testing.assert_close(together[b["length"] : b["length"] + a["length"]], alone_a, atol=1e-4, rtol=1e-4)
