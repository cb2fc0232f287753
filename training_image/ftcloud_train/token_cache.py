"""Token cache: a split's tokenized samples, written once, found again by every rank and restart.

Without it every process of a job (8 per GPU host) and every restart (a spot interruption)
tokenizes the whole data set again. With it, the first local process of each host tokenizes and
writes one file atomically; the other processes wait for that file and load it; a restarted job
finds it in the checkpoint directory, which SageMaker syncs to S3 and restores.

An entry is used only when its key matches, and the key covers everything that decides the
samples, so a stale entry is never used:

* the data: every data file's path (relative to its channel) and full contents;
* the spec values that change tokenization (:data:`TOKENIZATION_KEYS`) and which rows the split
  holds (split name; held-out fraction and seed when the split is carved out of ``train``);
* the tokenizer as loaded (its serialized vocabulary, merges, normalizer and post-processor,
  chat template and special tokens), wherever it came from;
* the code that tokenizes (:data:`CODE_MODULES`' source files) and this file format's version.

``ftcloud data prepare --tokenizer MODEL --token-cache`` writes the same entries in each prepared
split's channel directory (``<out>/train/ftcloud-token-cache/``, ``<out>/validation/...``); the
container uses them from the ``train`` / ``validation`` channel when the keys match. Public API: :func:`key`, :func:`save`, :func:`load`,
:func:`load_or_build`.

File format: one ``<key>.npz`` per entry (numpy's zip, read with ``allow_pickle=False``: a cache
from a channel can never run code). A ragged field (``input_ids``) is stored as its concatenated
values plus offsets, a scalar field (``length``, a class label) as one array; a JSON ``meta``
(key, digest of every array, caller data such as the data report) rides along. A file whose key
or digest does not match, or that does not open (a torn copy), is a miss and is never used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Directory of cache entries: under the checkpoint directory, or next to prepared data.
CACHE_DIRNAME = "ftcloud-token-cache"
#: Bumped when the file layout changes.
FORMAT_VERSION = 1
#: TrainingSpec fields whose values change the samples. Anything else (learning rate, LoRA rank)
#: leaves the samples as they are and must not invalidate the cache.
TOKENIZATION_KEYS = (
    "task",
    "data_format",
    "max_length",
    "overlength",
    "completion_only_loss",
)
#: Modules whose source decides the samples: a code change invalidates every entry.
CODE_MODULES = (
    "ftcloud_train.data",
    "ftcloud_train.datasource",
    "ftcloud_train.classification",
    "ftcloud_train.token_cache",
)
_SUFFIX = ".npz"
_CHUNK = 1 << 20


class CacheTimeout(RuntimeError):
    """Another process was to write the entry, and it did not appear in time."""


@dataclass
class Entry:
    """What :func:`load` returns: the samples as they were saved, the caller's meta, the file."""

    samples: list[dict[str, Any]]
    meta: dict[str, Any]
    path: Path


# ---------------------------------------------------------------------------- key
def key(
    *,
    root: Path,
    files: Iterable[Path] | None = None,
    spec: Any,
    tokenizer: Any,
    split: str,
    holdout: tuple[float, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of one split.

    ``root``: the channel or prepared directory; ``files``: the data files under it (default: those
    the loader reads, :func:`data_files`). Names are taken relative to ``root``, so the same data
    keys the same on a laptop and in the container. ``spec``: a TrainingSpec, or a mapping of
    spec keys (hyperparameter strings or typed values; missing keys take their defaults).
    ``tokenizer``: the loaded tokenizer (see :func:`tokenizer_fingerprint`). ``holdout``:
    ``(validation_split, seed)`` when the split is cut out of the train channel's rows.
    ``extra``: anything else the samples depend on (the validation split's label names, which
    come from the training rows).
    """
    digest = hashlib.sha256()

    def part(name: str, value: Any) -> None:
        digest.update(json.dumps([name, value], sort_keys=True, default=str).encode())

    part("format", FORMAT_VERSION)
    part("code", code_fingerprint())
    part("split", split)
    part("holdout", list(holdout) if holdout else None)
    part("spec", spec_values(spec))
    part("tokenizer", tokenizer_fingerprint(tokenizer))
    part("data", data_fingerprint(data_files(root) if files is None else files, root))
    part("extra", dict(extra or {}))
    return digest.hexdigest()[:32]


def spec_values(spec: Any) -> dict[str, Any]:
    """The tokenization-relevant values of a spec, typed as the container's TrainingSpec has them
    (so ``{"max_length": "512"}`` and ``TrainingSpec(max_length=512)`` key the same)."""
    if isinstance(spec, Mapping):
        from ftcloud.spec import TrainingSpec

        spec = TrainingSpec.from_mapping({k: v for k, v in spec.items() if k in TOKENIZATION_KEYS})
    return {k: getattr(spec, k) for k in TOKENIZATION_KEYS}


def data_files(directory: Path) -> list[Path]:
    """The data files the loader reads under ``directory`` (never the cache's own files)."""
    from ftcloud_train.datasource import expand_sources

    directory = Path(directory)
    return [
        src.local_path for src in expand_sources([directory])
        if src.local_path is not None and CACHE_DIRNAME not in src.local_path.relative_to(directory).parts
    ]


def data_fingerprint(files: Iterable[Path], root: Path) -> list[list[Any]]:
    """Relative name, size and blake2b of the whole contents of every file (sorted by name).

    Whole contents, not samples of them: an edit in the middle of a file must change the key.
    Hashing reads at disk speed, far faster than tokenizing.
    """
    root = Path(root)
    return [[path.relative_to(root).as_posix(), path.stat().st_size, _file_digest(path)]
            for path in sorted(Path(p) for p in files)]


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything in a loaded tokenizer that changes token ids.

    Taken from the object rather than its files: the same tokenizer loaded from a hub cache,
    a ``model`` channel or a local directory hashes the same, and what the loader changed after
    reading the files (a pad token set to EOS) is included.
    """
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())  # vocab, merges, normalizer, pre/post-processing
    else:  # a slow (Python) tokenizer: its vocabulary and configuration
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        digest.update(json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str).encode())
    special = {
        name: getattr(tokenizer, name, None)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "padding_side")
    }
    digest.update(json.dumps([type(tokenizer).__name__, special, getattr(tokenizer, "chat_template", None)],
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()


def code_fingerprint() -> str:
    """A hash of the source files of :data:`CODE_MODULES` that exist in this installation."""
    digest = hashlib.sha256()
    for name in CODE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            digest.update(name.encode())
            digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- save / load
def entry_path(directory: Path, cache_key: str) -> Path:
    return Path(directory) / f"{cache_key}{_SUFFIX}"


def save(directory: Path, cache_key: str, samples: Sequence[Mapping[str, Any]], meta: Mapping | None = None) -> Path:
    """Write ``samples`` (dicts of ints, floats or lists of ints, all with the same keys) atomically.

    The entry appears under its final name only once it is complete and on disk: a reader (another
    rank, a restart, S3 sync) sees it whole or not at all.
    """
    import numpy as np

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = _to_arrays(samples)
    record = {
        "format": FORMAT_VERSION,
        "key": cache_key,
        "count": len(samples),
        "digest": _digest(arrays),
        "meta": dict(meta or {}),
    }
    arrays["__meta__"] = np.array(json.dumps(record, default=str))
    final = entry_path(directory, cache_key)
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)
    return final


def load(directory: Path, cache_key: str) -> Entry | None:
    """The entry for ``cache_key`` in ``directory``, or ``None`` when there is none or it is not
    exactly what was written for this key (missing, torn, another key, another format)."""
    import numpy as np

    path = entry_path(directory, cache_key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            record = json.loads(str(data["__meta__"]))
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
    except Exception:  # a torn or foreign file is a miss: never a crash, never used
        return None
    if (
        record.get("format") != FORMAT_VERSION
        or record.get("key") != cache_key
        or record.get("digest") != _digest(arrays)
    ):
        return None
    samples = _from_arrays(arrays, record["count"])
    return Entry(samples=samples, meta=record.get("meta", {}), path=path)


def load_or_build(
    cache_key: str,
    build: Callable[[], tuple[Sequence[Mapping[str, Any]], Mapping]],
    *,
    write_dir: Path,
    read_dirs: Sequence[Path] = (),
    leader: bool = True,
    timeout_s: float = 6 * 3600,
    poll_s: float = 0.5,
) -> tuple[Entry, str]:
    """Load the entry from ``read_dirs`` or ``write_dir``; else the leader builds and saves it, and
    every other process waits for the leader's file.

    ``build()`` returns ``(samples, meta)``. Returns the entry and where it came from: the
    directory it was found in, or ``"built"``. Followers give up after ``timeout_s`` (a leader
    that fails ends the job anyway: torchrun stops every worker when one exits with an error).
    """
    for directory in (*read_dirs, write_dir):
        entry = load(directory, cache_key)
        if entry is not None:
            return entry, str(directory)
    if leader:
        samples, meta = build()
        path = save(write_dir, cache_key, samples, meta)
        entry = load(write_dir, cache_key)
        if entry is None:  # what was just written does not read back: a broken disk, say so
            raise OSError(f"token cache {path} does not read back after writing it")
        return entry, "built"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        entry = load(write_dir, cache_key)
        if entry is not None:
            return entry, str(write_dir)
    raise CacheTimeout(
        f"waited {timeout_s:.0f} s for the first process of this host to write the token cache "
        f"{entry_path(write_dir, cache_key)}; it never appeared."
    )


# ---------------------------------------------------------------------------- arrays
def _to_arrays(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    import numpy as np

    if not samples:
        return {}
    names = list(samples[0])
    arrays: dict[str, Any] = {}
    for name in names:
        values = [s[name] for s in samples]
        if isinstance(values[0], list | tuple):
            lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
            offsets = np.zeros(len(values) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            flat = [x for v in values for x in v]
            arrays[f"{name}.values"] = np.asarray(flat, dtype=_dtype(flat))
            arrays[f"{name}.offsets"] = offsets
        else:
            arrays[name] = np.asarray(values, dtype=_dtype(values))
    return arrays


def _dtype(values: list) -> str:
    return "float64" if any(isinstance(v, float) for v in values) else "int64"


def _from_arrays(arrays: dict[str, Any], count: int) -> list[dict[str, Any]]:
    columns: dict[str, list] = {}
    for name, array in arrays.items():
        if name.endswith(".offsets"):
            continue
        if name.endswith(".values"):
            field = name[: -len(".values")]
            flat = array.tolist()
            offsets = arrays[f"{field}.offsets"].tolist()
            columns[field] = [flat[offsets[i]: offsets[i + 1]] for i in range(count)]
        else:
            columns[name] = array.tolist()
    return [{name: values[i] for name, values in columns.items()} for i in range(count)]


def _digest(arrays: Mapping[str, Any]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
