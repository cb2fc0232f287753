"""Tiny models and data sets, generated offline and deterministically.

Tests, benchmarks and the demo never download anything. This module builds:

* a tokenizer trained locally with the ``tokenizers`` library (byte-level BPE, so any
  text encodes), with a ChatML chat template and EOS / pad tokens set;
* a tiny Llama-architecture causal LM (and a tiny Mixtral for MoE work) from a random
  initialisation of a transformers config;
* small learnable data sets in every supported row format.

Everything is saved with ``save_pretrained`` so the normal ``from_pretrained`` path loads it.

    python -m ftcloud_train.tiny model ./tiny-llama
    python -m ftcloud_train.tiny data ./train.jsonl --rows 200 --format chat
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"]

# A small, fixed "world" the data sets talk about: easy for a tiny model to learn.
_THINGS = {
    "apple": "red", "banana": "yellow", "sky": "blue", "grass": "green", "snow": "white",
    "coal": "black", "orange": "orange", "plum": "purple", "cherry": "red", "lemon": "yellow",
    "ocean": "blue", "leaf": "green", "cloud": "white", "night": "black", "carrot": "orange",
    "grape": "purple", "tomato": "red", "corn": "yellow", "jeans": "blue", "mint": "green",
}
# Ways to ask the same question. Rows use only the first unless ``phrasings`` asks for more; with
# ``hold_out`` thing i is never asked in phrasing i % phrasings, so held_out_rows() are question
# strings the model never saw, about facts it did see (in its other phrasings).
PHRASINGS = (
    "What colour is {thing}?",
    "Which colour is {thing}?",
    "Tell me the colour of {thing}.",
    "What is the colour of {thing}?",
)
_FILLER = (
    "please answer briefly and precisely because the customer is waiting for a short reply "
    "about the catalogue of colours used in our product descriptions and labels"
).split()

_CORPUS = """
Fine-tuning adapts a pretrained language model to a domain with a small amount of data.
Low-rank adaptation trains two small matrices per layer while the base weights stay frozen.
Quantized low-rank adaptation keeps the frozen base in four-bit normal float with double quantization.
Weight-decomposed adaptation splits each weight into a magnitude and a direction.
A mixture of experts routes every token to a few expert feed-forward blocks.
The endpoint merges requests into batches and answers within two seconds.
Checkpoints are written atomically so that a stopped job resumes where it stopped.
What colour is it? The answer is short. Instruction, input and output. Prompt and completion.
"""


def _corpus_lines() -> list[str]:
    lines = [line for line in _CORPUS.strip().splitlines()]
    for thing, colour in _THINGS.items():
        lines.append(f"What colour is {thing}? The colour of {thing} is {colour}.")
    lines.append(" ".join(_FILLER))
    lines.append("0123456789 .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`")
    return lines


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on the bundled corpus, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def build_model(
    output_dir: str | Path,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    vocab_size: int = 512,
) -> Path:
    """Create a randomly initialised tiny causal LM + tokenizer in ``output_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, MixtralConfig

    output_dir = Path(output_dir)
    tokenizer = build_tokenizer(vocab_size)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # A wider init than the 0.02 default: with frozen norms and lm_head (adapters), logits
        # must be able to grow large enough for a LoRA to fit the data.
        initializer_range=0.2,
    )
    if arch == "llama":
        config = LlamaConfig(**common)
    elif arch == "mixtral":
        config = MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2)
    else:
        raise ValueError(f"arch must be 'llama' or 'mixtral', got {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        max_new_tokens=32,
        do_sample=False,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def make_rows(n: int, fmt: str = "chat", seed: int = 0, filler: tuple[int, int] = (0, 6), *,
              phrasings: int = 1, hold_out: bool = False) -> list[dict]:
    """``n`` learnable rows in ``fmt``: a question about a thing's colour and a fixed answer.

    ``filler`` adds a random number of filler words (in whole sentences' worth) to the prompt,
    which makes lengths vary: that is what batching strategies are measured on. ``phrasings``:
    how many of :data:`PHRASINGS` the questions use; ``hold_out``: never ask a thing in its
    held-out phrasing (those questions are :func:`held_out_rows`).
    """
    if not 1 <= phrasings <= len(PHRASINGS) or (hold_out and phrasings < 2):
        raise ValueError(f"phrasings must be 1..{len(PHRASINGS)} (at least 2 with hold_out), got {phrasings}")
    rng = random.Random(seed)
    items = list(_THINGS.items())
    rows = []
    for _ in range(n):
        thing, colour = rng.choice(items)
        extra = " ".join(" ".join(_FILLER[: rng.randint(1, len(_FILLER))]) for _ in range(rng.randint(*filler)))
        template = PHRASINGS[0]
        if phrasings > 1:  # draw only here, so phrasings=1 rows stay exactly what they always were
            held = _held_out_phrasing(thing, phrasings) if hold_out else None
            template = PHRASINGS[rng.choice([i for i in range(phrasings) if i != held])]
        question = f"{template.format(thing=thing)} {extra}".strip()
        rows.append(_format_row(question, f"The colour of {thing} is {colour}.", fmt))
    return rows


def held_out_rows(phrasings: int, fmt: str = "chat") -> list[dict]:
    """One row per thing, asked in the phrasing ``make_rows(..., phrasings=phrasings, hold_out=True)``
    never uses for it."""
    if not 2 <= phrasings <= len(PHRASINGS):
        raise ValueError(f"phrasings must be 2..{len(PHRASINGS)} to hold one out, got {phrasings}")
    return [
        _format_row(PHRASINGS[_held_out_phrasing(thing, phrasings)].format(thing=thing),
                    f"The colour of {thing} is {colour}.", fmt)
        for thing, colour in _THINGS.items()
    ]


def _held_out_phrasing(thing: str, phrasings: int) -> int:
    return list(_THINGS).index(thing) % phrasings


def _format_row(question: str, answer: str, fmt: str) -> dict:
    if fmt == "chat":
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    if fmt == "alpaca":
        return {"instruction": "Name the colour.", "input": question, "output": answer}
    if fmt == "prompt_completion":
        return {"prompt": question, "completion": answer}
    if fmt == "text":
        return {"text": f"{question} {answer}"}
    raise ValueError(f"unknown format {fmt!r}")


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ftcloud_train.tiny", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model", help="write a tiny model + tokenizer")
    m.add_argument("output_dir")
    m.add_argument("--arch", choices=["llama", "mixtral"], default="llama")
    m.add_argument("--hidden-size", type=int, default=64)
    m.add_argument("--layers", type=int, default=2)
    d = sub.add_parser("data", help="write a learnable JSONL data set")
    d.add_argument("path")
    d.add_argument("--rows", type=int, default=200)
    d.add_argument("--format", choices=["chat", "alpaca", "prompt_completion", "text"], default="chat")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--max-filler", type=int, default=6, help="most filler phrases per prompt (length variety)")
    d.add_argument("--phrasings", type=int, default=1, help=f"ask in the first N of {len(PHRASINGS)} phrasings")
    d.add_argument("--hold-out", action="store_true", help="never ask a thing in its held-out phrasing")
    h = sub.add_parser("heldout", help="write the questions `data --phrasings N --hold-out` never asks")
    h.add_argument("path")
    h.add_argument("--phrasings", type=int, required=True)
    h.add_argument("--format", choices=["chat", "alpaca", "prompt_completion", "text"], default="chat")
    args = parser.parse_args(argv)
    if args.cmd == "model":
        print(build_model(args.output_dir, args.arch, args.hidden_size, args.layers))
    elif args.cmd == "heldout":
        print(write_jsonl(args.path, held_out_rows(args.phrasings, args.format)))
    else:
        rows = make_rows(args.rows, args.format, args.seed, filler=(0, args.max_filler),
                         phrasings=args.phrasings, hold_out=args.hold_out)
        print(write_jsonl(args.path, rows))


if __name__ == "__main__":
    main()
