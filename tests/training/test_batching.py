"""Batching strategies: packing keeps documents apart; padding is masked out of the loss."""

from __future__ import annotations

import itertools

import pytest
import torch

from ftcloud_train.batching import FlattenCollator, PadCollator, make_collator, pack_samples, resolve_batching
from ftcloud_train.data import IGNORE_INDEX
from ftcloud_train.modeling import attention_implementation


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


@pytest.mark.parametrize(
    "capability, flash_installed, compute_dtype, kernel, auto_batching",
    [
        (None, False, "fp32", "sdpa", "length_grouped"),  # CPU
        (None, True, "bf16", "sdpa", "length_grouped"),
        ((9, 0), True, "bf16", "flash_attention_2", "packed"),  # H100 with flash-attn
        ((8, 0), True, "fp16", "flash_attention_2", "packed"),
        ((8, 6), False, "bf16", "sdpa", "length_grouped"),  # A10G, the image as shipped (no flash-attn)
        ((8, 0), True, "fp32", "sdpa", "length_grouped"),  # flash-attention runs 16-bit only
        ((7, 5), True, "fp16", "sdpa", "length_grouped"),  # T4: FlashAttention-2 needs Ampere
    ],
)
def test_attention_kernel_and_auto_batching(capability, flash_installed, compute_dtype, kernel, auto_batching):
    assert attention_implementation(capability, flash_installed, compute_dtype) == kernel
    assert resolve_batching("auto", kernel) == auto_batching
    for explicit in ("padded", "length_grouped", "packed"):
        assert resolve_batching(explicit, kernel) == explicit


def test_collator_by_batching_and_kernel():
    assert isinstance(make_collator("packed", "flash_attention_2", 0, "cuda"), FlattenCollator)
    padded = make_collator("packed", "sdpa", 0, "cuda")
    assert isinstance(padded, PadCollator) and padded.multiple_of == 8
    assert make_collator("length_grouped", "flash_attention_2", 0, "cpu") == PadCollator(0, multiple_of=1)


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


def test_flattened_batch_is_variable_length_attention_for_flash():
    """transformers runs flash-attention per document only for ONE row with restarting positions."""
    from transformers.modeling_flash_attention_utils import (
        _is_packed_sequence,
        prepare_fa_kwargs_from_position_ids,
    )

    docs = [_sample(n) for n in (7, 5, 4, 3, 3)]
    rows = pack_samples(docs, max_length=10)
    flat = FlattenCollator()(rows)
    total = sum(d["length"] for d in docs)
    assert flat["input_ids"].shape == flat["labels"].shape == flat["position_ids"].shape == (1, total)
    assert _is_packed_sequence(flat["position_ids"], batch_size=1)
    (cu_seqlens, _), (max_len, _) = prepare_fa_kwargs_from_position_ids(flat["position_ids"])
    lengths = [n for row in rows for n in _doc_lengths(row["position_ids"])]
    assert cu_seqlens.tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert int(max_len) == max(d["length"] for d in docs)
    # Rows padded side by side are NOT seen as packed: flash-attention would attend across documents.
    padded = PadCollator(pad_token_id=0)(rows)
    assert padded["position_ids"].shape[0] > 1
    assert not _is_packed_sequence(padded["position_ids"], batch_size=padded["position_ids"].shape[0])


def _doc_lengths(position_ids):
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return [b - a for a, b in itertools.pairwise(starts)]


def test_flattened_rows_attend_per_document(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    docs = [_sample(6, start=20), _sample(9, start=40), _sample(4, start=60)]
    rows = pack_samples(docs, max_length=16)
    assert len(rows) == 2
    flat = FlattenCollator()(rows)
    with torch.no_grad():
        together = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits[0]
        offset = 0
        for row in rows:
            for n in _doc_lengths(row["position_ids"]):
                ids = flat["input_ids"][:, offset : offset + n]
                torch.testing.assert_close(together[offset : offset + n], model(input_ids=ids).logits[0], atol=1e-4, rtol=1e-4)
                offset += n
    assert offset == flat["input_ids"].shape[1]


def test_load_model_uses_the_chosen_attention_kernel(tiny_model_dir):
    from ftcloud.spec import TrainingSpec
    from ftcloud_train.modeling import Device, load_model

    spec = TrainingSpec(technique="full", model=str(tiny_model_dir))
    device = Device("cpu", False, 0, 1)
    assert load_model(str(tiny_model_dir), spec, device, "fp32", "eager").config._attn_implementation == "eager"
    # flash-attn missing (or built for another torch): train with SDPA instead of failing
    model = load_model(str(tiny_model_dir), spec, device, "fp32", "flash_attention_2")
    assert model.config._attn_implementation == "sdpa"
