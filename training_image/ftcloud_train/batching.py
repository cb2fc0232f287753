"""How tokenized samples become batches.

Padding waste is the main cost of variable-length data. Three strategies:

* ``padded``: random order, each micro-batch padded to its longest sample (what TRL and the
  Trainer do by default).
* ``length_grouped``: samples of similar length share a micro-batch (the Trainer's
  LengthGroupedSampler: random mega-batches, sorted inside), so there is little padding and
  no special attention kernel is needed. Best measured choice on CPU (``bench/bench_training_throughput.py``).
* ``packed``: samples are bin-packed (first-fit decreasing) into rows of at most
  ``max_length`` tokens; ``position_ids`` restart at every document and no attention mask is
  passed. What transformers 5 does with that depends on the attention kernel:

  - ``flash_attention_2``: variable-length flash-attention (``flash_attn_varlen_func``, with
    ``cu_seqlens`` found from the restarting positions), no mask at all - but only for a batch of
    ONE row (``_is_packed_sequence``); with more rows it silently attends across documents. So the
    micro-batch is flattened into one row (:class:`FlattenCollator`, padding-free).
  - ``sdpa`` / ``eager``: ``masking_utils.find_packed_sequence_indices`` turns the positions into
    a block-diagonal causal mask, materialised as a boolean (batch, 1, length, length) tensor per
    forward: correct, but attention over a packed row stays quadratic in its length.

  So packing is the ``auto`` choice only with flash-attention; measured on CPU, length-grouped
  batches are faster without it (``bench/bench_training_throughput.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftcloud_train.data import IGNORE_INDEX


def resolve_batching(requested: str, attention: str) -> str:
    """``auto``: packed where the attention kernel runs packed rows as variable-length attention."""
    if requested != "auto":
        return requested
    return "packed" if attention == "flash_attention_2" else "length_grouped"


def make_collator(batching: str, attention: str, pad_token_id: int, device_type: str):
    """Packed rows under flash-attention are flattened into one row; everything else is padded."""
    if batching == "packed" and attention == "flash_attention_2":
        return FlattenCollator()
    # Tensor cores like sequence lengths that are multiples of 8.
    return PadCollator(pad_token_id, multiple_of=8 if device_type == "cuda" else 1)


def pack_samples(samples: list[dict], max_length: int) -> list[dict]:
    """First-fit-decreasing bin packing into rows of <= ``max_length`` tokens."""
    order = sorted(range(len(samples)), key=lambda i: -samples[i]["length"])
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = samples[i]["length"]
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_length - n)
    packed = []
    for members in bins:
        ids, labels, pos = [], [], []
        for i in members:
            s = samples[i]
            ids += s["input_ids"]
            # The first token of each document must not be predicted from the previous one.
            labels += [IGNORE_INDEX] + s["labels"][1:]
            pos += list(range(s["length"]))
        packed.append({"input_ids": ids, "labels": labels, "position_ids": pos, "length": len(ids)})
    return packed


@dataclass
class PadCollator:
    """Pads a micro-batch to its longest member (rounded up to ``multiple_of``)."""

    pad_token_id: int
    multiple_of: int = 1

    def __call__(self, features: list[dict]):
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple_of > 1:
            longest = -(-longest // self.multiple_of) * self.multiple_of
        packed = "position_ids" in features[0]
        batch = {"input_ids": [], "labels": [], ("position_ids" if packed else "attention_mask"): []}
        for f in features:
            n = len(f["input_ids"])
            pad = longest - n
            batch["input_ids"].append(f["input_ids"] + [self.pad_token_id] * pad)
            batch["labels"].append(f["labels"] + [IGNORE_INDEX] * pad)
            if packed:
                # Padding forms its own "document" so no real token attends to it.
                batch["position_ids"].append(f["position_ids"] + list(range(pad)))
            else:
                batch["attention_mask"].append([1] * n + [0] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


@dataclass
class FlattenCollator:
    """Concatenates a micro-batch of packed rows into a single row of shape (1, total tokens).

    No padding: ``position_ids`` restart at every document, which is what transformers' flash-attention
    path needs (batch size 1) to find the document boundaries and run variable-length attention.
    """

    def __call__(self, features: list[dict]):
        import torch

        batch = {key: [t for f in features for t in f[key]] for key in ("input_ids", "labels", "position_ids")}
        return {k: torch.tensor([v], dtype=torch.long) for k, v in batch.items()}
