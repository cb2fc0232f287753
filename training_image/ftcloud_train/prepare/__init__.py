"""``data prepare``: clean, normalise, de-duplicate, expand glossaries, split, augment and balance a
data set, and describe it in a data card. Torch-free (back-translation imports transformers only
when asked), so the same code runs in the CLI, in tests and in a SageMaker Processing job.

    from ftcloud_train.prepare import PrepareOptions, prepare
    result = prepare(["raw.jsonl"], "prepared/", PrepareOptions(glossary=["medical"], near_dedup=True))
    result.card["counts"]

Modules: :mod:`.options` (every knob), :mod:`.fields` (input vs output text per format),
:mod:`.clean`, :mod:`.glossary`, :mod:`.dedup`, :mod:`.split`, :mod:`.augment` (the steps),
:mod:`.pipeline` (the streaming pass, cache and atomic output), :mod:`.card`, :mod:`.shards`
(merging the parts of a sharded run), :mod:`.command` (``python -m ftcloud_train prepare``).
"""

from __future__ import annotations

from typing import Any

from ftcloud_train.prepare.options import OptionsError, PrepareOptions

__all__ = ["OptionsError", "PrepareOptions", "PrepareResult", "merge_parts", "prepare"]


def __getattr__(name: str) -> Any:  # the pipeline loads the loader and yaml: only when used
    if name in ("prepare", "PrepareResult"):
        from ftcloud_train.prepare import pipeline

        return getattr(pipeline, name)
    if name == "merge_parts":
        from ftcloud_train.prepare.shards import merge_parts

        return merge_parts
    raise AttributeError(name)
