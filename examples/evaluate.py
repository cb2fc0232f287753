"""Score a deployed endpoint on held-out questions, through the SDK.

    python examples/evaluate.py ENDPOINT HELDOUT.jsonl --train TRAIN.jsonl

HELDOUT.jsonl holds chat rows (user question, expected assistant answer), e.g. from
``python -m ftcloud_train.tiny heldout``. With ``--train`` a held-out question that appears in the
training data (as a whole question or the start of one) is refused, so "held out" stays true.
All questions go to the endpoint at once, as chat (the served chat template applies) with greedy
decoding, so the server batches them. Prints each question and answer, then ``accuracy: N/M``
(exact match of the answer text). Exit status 0 when every request was answered, whatever the score.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def read_chat_rows(path: Path) -> list[tuple[str, str]]:
    """(question, answer) of each chat row: the first user and the first assistant message."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        messages = json.loads(line).get("messages") or []
        user = next((m["content"] for m in messages if m.get("role") == "user"), None)
        assistant = next((m["content"] for m in messages if m.get("role") == "assistant"), None)
        if user is None or assistant is None:
            raise SystemExit(f"{path}:{number}: expected a chat row with a user and an assistant message.")
        pairs.append((user, assistant))
    return pairs


def seen_in_training(question: str, train_questions: set[str]) -> bool:
    # Training prompts are a question plus optional filler words, so "seen" covers prefixes too.
    return any(q == question or q.startswith(question + " ") for q in train_questions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("endpoint")
    parser.add_argument("heldout", type=Path, help="chat JSONL of held-out questions and expected answers")
    parser.add_argument("--train", type=Path, help="the training JSONL: refuse questions it contains")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args(argv)

    import ftcloud
    from ftcloud.endpoints import generated_text

    pairs = read_chat_rows(args.heldout)
    if args.train:
        train_questions = {q for q, _ in read_chat_rows(args.train)}
        leaked = [q for q, _ in pairs if seen_in_training(q, train_questions)]
        if leaked:
            raise SystemExit(f"{args.heldout}: {len(leaked)} question(s) also in {args.train}, e.g. {leaked[0]!r}.")

    def ask(question: str) -> str:
        response = ftcloud.invoke(
            args.endpoint,
            messages=[{"role": "user", "content": question}],
            parameters={"temperature": 0, "max_tokens": args.max_tokens},  # greedy
        )
        return generated_text(response).strip()

    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:  # one burst: the server batches it
        answers = list(pool.map(ask, [q for q, _ in pairs]))

    correct = 0
    for (question, expected), answer in zip(pairs, answers, strict=True):
        ok = answer == expected
        correct += ok
        print(f"Q: {question}\nA: {answer}" + ("" if ok else f"   (expected: {expected})"))
    print(f"accuracy: {correct}/{len(pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
