"""The ``data prepare`` pipeline: read once, clean, de-duplicate, split, augment, balance, describe.

Order of the steps, each optional and each counted in the data card::

    read (the one loader) -> normalize -> whitespace/control -> HTML -> PII -> glossary
    -> stopwords (classification) -> empty / too short -> exact dedup -> near dedup
    -> split or k folds -> [training part only] augmentation -> oversampling (+ SMOTE features)

Memory stays bounded: rows stream from the loader to the output files; de-duplication keeps
digests and MinHash band hashes, the splitter per-class counters. Augmentation and oversampling
re-read the written training file (oversampling needs the class counts, which are known only at
the end). Only ``--smote`` holds the training features in memory (sparse).

Output (``out``)::

    train.jsonl, validation.jsonl            # or folds/<k>/{train,validation}.jsonl with --kfold
    train/train.jsonl, train/ftcloud-token-cache/<key>.npz,              # --token-cache: one channel
    validation/validation.jsonl, validation/ftcloud-token-cache/<key>.npz  # directory per split
    features/train.npz, train.labels.json    # --smote
    data_card.json, data_card.md             # sources, counts per step, lengths, class balance, hashes

A *part* name (``part="algo-2"``, set by the Processing job) writes ``train/<part>.jsonl``,
``validation/<part>.jsonl`` and ``cards/<part>.json`` instead, so the shards of all instances
land side by side in one S3 prefix, and ``train/`` / ``validation/`` are ready-made channels.

Caching: the card records a key made of the inputs' bytes, the options, the format choices, the
tokenizer and :data:`PIPELINE_VERSION`. Same key and untouched output -> nothing is recomputed or
rewritten (``cached``). Any change -> recomputed. Inputs that are not local files (S3, HTTP, SQL)
cannot be hashed before reading: they are always recomputed, and the result replaces the old one
only if its content differs. Output is written to a temporary sibling directory and renamed into
place: a failing run leaves the previous good output untouched and nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

from ftcloud_train.prepare import clean
from ftcloud_train.prepare.fields import label_of, map_texts, required_empty, texts
from ftcloud_train.prepare.options import OptionsError, PrepareOptions

#: Bump when a step's behaviour changes: it invalidates every cached preparation.
PIPELINE_VERSION = "1"
CARD_JSON = "data_card.json"
CARD_MD = "data_card.md"
#: Rows read to decide the format before streaming the rest.
DETECT_ROWS = 1000
#: Length percentiles come from a uniform sample of at most this many rows per split.
LENGTH_SAMPLE = 10_000
BATCH = 64


@dataclass
class PrepareResult:
    out: Path
    cached: bool
    card: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "cached": self.cached, "card": self.card}


# ====================================================================== hashing / cache
def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inputs_fingerprint(expanded: list[Any]) -> str | None:
    """sha256 over every input file's label and bytes; ``None`` if a source is not a local file."""
    digest = hashlib.sha256()
    for src in expanded:
        if src.local_path is None:
            return None
        digest.update(f"{src.label}\0{src.file_format}\0{_file_sha256(src.local_path)}\n".encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: str | None) -> str | None:
    """A local tokenizer directory: the hash of its tokenizer files; a model id: the id itself."""
    if not tokenizer:
        return None
    path = Path(tokenizer).expanduser()
    if not path.is_dir():
        return f"id:{tokenizer}"
    digest = hashlib.sha256()
    wanted = ("tokenizer", "vocab", "merges", "special_tokens", "added_tokens", "spiece", "chat_template")
    for p in sorted(path.iterdir()):
        if p.is_file() and p.name.startswith(wanted):
            digest.update(p.name.encode() + b"\0" + _file_sha256(p).encode())
    return digest.hexdigest()


def content_hash(out: Path, part: str | None = None) -> str:
    """sha256 over the relative path and bytes of every prepared file (data cards excluded); with
    ``part``, of that part's files only."""
    digest = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if not p.is_file() or rel.startswith("cards/") or p.name in (CARD_JSON, CARD_MD) or ".tmp-" in rel:
            continue
        if part is None or p.name.split(".", 1)[0] == part:
            digest.update(rel.encode() + b"\0" + _file_sha256(p).encode() + b"\n")
    return digest.hexdigest()


def _card_path(out: Path, part: str | None) -> Path:
    return out / "cards" / f"{part}.json" if part else out / CARD_JSON


def _cached_card(out: Path, key: str, part: str | None) -> dict[str, Any] | None:
    path = _card_path(out, part)
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if card.get("cache_key") != key or card.get("content_hash") != content_hash(out, part):
        return None  # other inputs/options, or someone edited the output: recompute
    return card


# ====================================================================== atomic output
def _check_out(out: Path, part: str | None) -> None:
    if out.exists() and not out.is_dir():
        raise OptionsError(f"--out {out}: a file is in the way; give a directory path.")
    if out.is_dir() and any(out.iterdir()) and not (out / CARD_JSON).exists() and not (out / "cards").is_dir():
        raise OptionsError(
            f"--out {out}: the directory exists and holds files that 'data prepare' did not write "
            f"(no {_card_path(out, part).relative_to(out)}); they would be replaced. Choose a new or empty directory."
        )


def _publish(tmp: Path, out: Path) -> None:
    """Move ``tmp`` into place as ``out``; the previous ``out`` survives any failure."""
    if not out.exists():
        os.replace(tmp, out)
        return
    backup = out.with_name(f".{out.name}.previous-{os.getpid()}")
    os.replace(out, backup)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


# ====================================================================== writing
class _Writers:
    """Lazily opened JSONL outputs, keyed by relative path."""

    def __init__(self, root: Path):
        self.root = root
        self._files: dict[str, Any] = {}
        self.rows: Counter = Counter()

    def write(self, rel: str, row: dict[str, Any]) -> None:
        fh = self._files.get(rel)
        if fh is None:
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = self._files[rel] = open(path, "w", encoding="utf-8")
        fh.write(json.dumps(row, ensure_ascii=False))
        fh.write("\n")
        self.rows[rel] += 1

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(islice(items, size)):
        yield batch


# ====================================================================== the row steps
class RowSteps:
    """The per-row cleaning steps, with the counts the data card reports."""

    def __init__(self, options: PrepareOptions, fmt: str):
        self.options, self.fmt = options, fmt
        self.changed: Counter = Counter()  # step -> rows it changed
        self.dropped: Counter = Counter()  # reason -> rows dropped
        self.pii: Counter = Counter()
        self.glossary = None
        if options.glossary:
            from ftcloud_train.prepare.glossary import Glossary

            self.glossary = Glossary.load(options.glossary)
        self._stopwords = clean.english_stopwords() if options.remove_stopwords else None
        self._steps: list[tuple[str, Callable[[str], str], str]] = []
        o = options
        if o.normalize != "none":
            self._steps.append(("normalize", lambda t: clean.normalize_unicode(t, o.normalize), "all"))
        if o.clean_whitespace:
            self._steps.append(("whitespace", clean.clean_whitespace, "all"))
        if o.strip_html:
            self._steps.append(("strip_html", clean.strip_html, "all"))
        if o.redact_pii:
            self._steps.append(("redact_pii", lambda t: clean.redact_pii(t, self.pii), "all"))
        if self.glossary is not None:
            self._steps.append(("glossary", self.glossary.expand, o.glossary_targets))
        if self._stopwords is not None:
            self._steps.append(("stopwords", lambda t: clean.remove_stopwords(t, self._stopwords), "all"))
        self.exact = None
        self.near = None
        if o.dedup:
            from ftcloud_train.prepare.dedup import ExactDedup

            self.exact = ExactDedup()
        if o.near_dedup:
            from ftcloud_train.prepare.dedup import NearDedup

            self.near = NearDedup(o.near_dedup_threshold, seed=o.seed + 1)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any] | None:
        for name, fn, targets in self._steps:
            new = map_texts(row, self.fmt, fn, targets)
            if new != row:
                self.changed[name] += 1
                row = new
        if required_empty(row, self.fmt):
            self.dropped["empty"] += 1
            return None
        if self.options.min_chars > 1 and sum(len(t) for t in texts(row, self.fmt)) < self.options.min_chars:
            self.dropped["too_short"] += 1
            return None
        if self.exact is not None and self.exact.is_duplicate(row):
            self.dropped["exact_duplicate"] += 1
            return None
        if self.near is not None and self.near.is_duplicate("\n".join(texts(row, self.fmt))):
            self.dropped["near_duplicate"] += 1
            return None
        return row


# ====================================================================== the pipeline
def prepare(
    sources: list[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    *,
    fmt: str = "auto",
    file_format: str = "auto",
    query: str | None = None,
    table: str | None = None,
    part: str | None = None,
    log: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> PrepareResult:
    """Prepare ``sources`` into ``out`` (see the module docstring). Raises ``DataError`` (bad data,
    with its location) or :class:`OptionsError` (bad option); nothing is written then. ``dry_run``
    checks sources and options and reports the cache state without reading rows or writing."""
    from ftcloud_train.datasource import expand_sources

    options = (options or PrepareOptions()).validate()
    log = log or (lambda _msg: None)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out = Path(out).expanduser().resolve()
    _check_out(out, part)
    if options.token_cache and part:
        # The container keys a channel by ALL its files; one instance's part cannot know the others.
        raise OptionsError("--token-cache runs with the local backend only: the parts of a sharded Processing job "
                           "form one channel that no single instance sees whole. Drop --token-cache there; the "
                           "training job then tokenizes once per host and caches it under its checkpoints.")
    expanded = expand_sources(sources, file_format=file_format, query=query, table=table)
    inputs = _inputs_fingerprint(expanded)
    settings = {"options": options.to_dict(), "format": fmt, "file_format": file_format, "query": query,
                "table": table, "part": part, "tokenizer": tokenizer_fingerprint(options.tokenizer),
                "version": PIPELINE_VERSION}
    if options.token_cache:  # new tokenizing code means new entries, so a cached preparation is not enough
        from ftcloud_train.token_cache import code_fingerprint

        settings["token_code"] = code_fingerprint()
    key = hashlib.sha256(json.dumps({"inputs": inputs, **settings}, sort_keys=True).encode()).hexdigest()
    if inputs is not None:
        card = _cached_card(out, key, part)
        if card is not None:
            log(f"cached: {out} already holds this preparation (key {key[:12]}); nothing rewritten.")
            return PrepareResult(out, True, card)
    if dry_run:  # sources and options are valid; say what would happen, write nothing
        return PrepareResult(out, False, {"dry_run": True, "cache_key": key, "inputs_sha256": inputs,
                                          "sources": [s.label for s in expanded], "options": options.to_dict()})

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published output is an ordinary directory
    try:
        if part and out.is_dir():  # other parts already in this output stay
            shutil.copytree(out, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(f"{part}.*"))
        card = _run(expanded, tmp, options, fmt=fmt, part=part, log=log)
        card.update(cache_key=key, inputs_sha256=inputs, pipeline_version=PIPELINE_VERSION,
                    query=query, table=table, file_format=file_format)
        card["content_hash"] = content_hash(tmp, part)
        if inputs is None:  # unhashable inputs: keep the old output if nothing changed
            old = _card_path(out, part)
            if old.exists() and json.loads(old.read_text()).get("content_hash") == card["content_hash"] \
                    and content_hash(out, part) == card["content_hash"]:
                shutil.rmtree(tmp, ignore_errors=True)
                log(f"unchanged: {out} already holds this content; nothing rewritten.")
                return PrepareResult(out, True, json.loads(old.read_text()))
        from ftcloud_train.prepare.card import write_card

        write_card(tmp, card, part)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"prepared {out} ({card['counts']['written']} rows written)")
    return PrepareResult(out, False, card)


def _records(expanded: list[Any], per_source: Counter) -> Iterator[Any]:
    from ftcloud_train.datasource import DataError, Problem, read_source

    for src in expanded:
        for item in read_source(src):
            if isinstance(item, Problem):
                raise DataError(f"{item} (list every problem with: ftcloud data validate)", [item])
            per_source[src.label] += 1
            yield item


def _run(expanded: list[Any], tmp: Path, options: PrepareOptions, *, fmt: str, part: str | None,
         log: Callable[[str], None]) -> dict[str, Any]:
    from ftcloud_train.datasource import detect_format, normalize

    started = time.time()
    per_source: Counter = Counter()
    records = _records(expanded, per_source)
    head = list(islice(records, DETECT_ROWS))
    if not head:
        from ftcloud_train.datasource import DataError

        raise DataError("no rows in the input: " + ", ".join(s.label for s in expanded) + ".")
    fmt = detect_format(head, fmt)
    options.validate(fmt)
    if options.synonyms:  # a bad dictionary fails now, not after the whole pass
        from ftcloud_train.prepare.augment import load_synonyms

        load_synonyms(options.synonyms)
    steps = RowSteps(options, fmt)
    writers = _Writers(tmp)
    suffix = f"/{part}.jsonl" if part else ".jsonl"
    # --token-cache: every split its own channel directory (a channel is read whole, cache excluded).
    split_file = (lambda split: f"{split}/{split}.jsonl") if options.token_cache else (lambda split: split + suffix)
    classes_in: Counter = Counter()
    n_read = 0
    if options.kfold:
        from ftcloud_train.prepare.split import FoldAssigner

        folds = FoldAssigner(options.kfold, options.seed)
    else:
        from ftcloud_train.prepare.split import StratifiedSplitter

        splitter = StratifiedSplitter(options.validation_fraction, options.seed)
    try:
        for record in chain(head, records):
            n_read += 1
            row = steps(normalize(record, fmt))
            if row is None:
                continue
            label = label_of(row, fmt)
            if label is not None:
                classes_in[label] += 1
            if options.kfold:
                k = folds.fold(label)
                for j in range(options.kfold):
                    writers.write(f"folds/{j + 1}/{'validation' if j == k else 'train'}{suffix}", row)
            else:
                writers.write(split_file("validation" if splitter.is_validation(label) else "train"), row)
    finally:
        writers.close()
    log(f"read {n_read} rows ({fmt}); dropped {dict(steps.dropped) or 'none'}")

    train_files = sorted(rel for rel in writers.rows if _is_train(rel))
    post: dict[str, Any] = {}
    for rel in train_files:
        post[rel] = _post_process(tmp / rel, tmp, rel, options, fmt, part)

    kept = n_read - sum(steps.dropped.values())
    counts = {
        "read": n_read,
        "changed": dict(steps.changed),
        "dropped": dict(steps.dropped),
        "kept": kept,
        "written": sum(_count_lines(tmp / rel) for rel in writers.rows),
    }
    if steps.pii:
        counts["pii_redacted"] = dict(steps.pii)
    card: dict[str, Any] = {
        "format": fmt,
        "sources": [{"source": s.label, "file_format": s.file_format, "rows": per_source[s.label],
                     **({"sha256": _file_sha256(s.local_path)} if s.local_path else {})} for s in expanded],
        "options": options.to_dict(),
        "part": part,
        "counts": counts,
        "glossary": ({"sources": steps.glossary.sources, "replaced": dict(steps.glossary.replaced.most_common())}
                     if steps.glossary is not None else None),
        "splits": {rel: _file_stats(tmp / rel, fmt, options.tokenizer) for rel in sorted(writers.rows)},
        "post_processing": post,
        "seconds": round(time.time() - started, 3),
    }
    if fmt == "classification":
        card["class_balance"] = {"after_cleaning": dict(sorted(classes_in.items()))}
    if options.token_cache:
        card["token_cache"] = write_token_cache(tmp, options, log)
    return card


def write_token_cache(root: Path, options: PrepareOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """Tokenize ``root/train`` and ``root/validation`` as the training container does, and store the
    samples where it looks first (``<channel>/ftcloud-token-cache/<key>.npz``).

    Same rows (the container's reader), same tokenizer (its loader), same sample builder, same key
    (channel root, data files, spec values, split; no holdout, as the validation channel is given),
    same meta: the container finds the entry and does not tokenize. Other settings at launch give
    another key: the container then tokenizes again, never uses a stale entry.
    """
    from ftcloud.spec import TrainingSpec
    from ftcloud_train import token_cache
    from ftcloud_train.data import build_split, read_rows
    from ftcloud_train.modeling import load_tokenizer

    values = options.training_values()
    spec = TrainingSpec.from_mapping(values, source="--set")
    tokenizer = load_tokenizer(options.tokenizer, spec.trust_remote_code)
    entries: dict[str, Any] = {}
    extra = None
    for split in ("train", "validation"):
        channel = root / split
        if not channel.is_dir():  # --validation-fraction 0: no validation channel
            continue
        samples, report = build_split(read_rows(channel, split), split, spec, tokenizer,
                                      extra["labels"] if extra else None)
        meta = {"report": report.to_dict(), "summary": report.summary()}
        key = token_cache.key(root=channel, spec=spec, tokenizer=tokenizer, split=split, extra=extra)
        path = token_cache.save(channel / token_cache.CACHE_DIRNAME, key, samples, meta)
        entries[split] = {"key": key, "file": path.relative_to(root).as_posix(), "samples": len(samples)}
        log(f"token cache: {split}: {len(samples)} samples -> {entries[split]['file']}")
        # The validation entry is keyed (and its class ids set) by the training rows' labels, as in the container.
        extra = {"labels": meta["report"].get("labels")}
    return {"tokenizer": options.tokenizer, "training": token_cache.spec_values(spec), "set": values,
            "entries": entries}


def _is_train(rel: str) -> bool:
    parts = rel.split("/")
    return "train" in parts[:-1] or parts[-1] == "train.jsonl"


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


# ====================================================================== the training part only
def _post_process(path: Path, root: Path, rel: str, options: PrepareOptions, fmt: str,
                  part: str | None) -> dict[str, Any]:
    """Augment, then oversample, the training file at ``path`` (rewritten in place); SMOTE features."""
    report: dict[str, Any] = {}
    if options.augment_copies:
        from ftcloud_train.prepare.augment import Augmenter

        augmenter = Augmenter(options, fmt)
        tmp = path.with_suffix(".augmenting")
        with open(tmp, "w", encoding="utf-8") as fh:
            for batch in _batches(_read_jsonl(path), BATCH):
                for row in batch:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                for copy in range(options.augment_copies):
                    for row in augmenter.augment(batch, copy):
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        report["augmentation"] = dict(augmenter.counts)
    if fmt == "classification" and (options.oversample or options.smote):
        before = Counter(str(r["label"]) for r in _read_jsonl(path))
        report["class_balance_before"] = dict(sorted(before.items()))
        if options.smote:
            report["smote"] = _smote_features(path, root, rel, options, part)
        if options.oversample:
            report["class_balance_after"] = oversample_file(path, before, options.seed)
    return report


def oversample_target(count: int, target: int, index: int) -> int:
    """How many times row ``index`` (0-based) of a class with ``count`` rows is written so that the
    class has exactly ``target`` rows, spread evenly: floor((i+1)*T/n) - floor(i*T/n)."""
    return (index + 1) * target // count - index * target // count


def oversample_file(path: Path, counts: Counter, seed: int) -> dict[str, int]:
    """Random oversampling: every class up to the largest class's count (rows repeated evenly, then
    the file shuffled in blocks so copies are not adjacent). Returns the new class counts."""
    target = max(counts.values())
    seen: Counter = Counter()
    after: Counter = Counter()
    rng = random.Random(seed)
    tmp = path.with_suffix(".oversampling")
    with open(tmp, "w", encoding="utf-8") as fh:
        block: list[str] = []
        for row in _read_jsonl(path):
            label = str(row["label"])
            times = oversample_target(counts[label], target, seen[label])
            seen[label] += 1
            after[label] += times
            block += [json.dumps(row, ensure_ascii=False)] * times
            if len(block) >= 4096:  # bounded memory: shuffle within blocks
                rng.shuffle(block)
                fh.write("\n".join(block) + "\n")
                block = []
        rng.shuffle(block)
        if block:
            fh.write("\n".join(block) + "\n")
    os.replace(tmp, path)
    return dict(sorted(after.items()))


def _smote_features(path: Path, root: Path, rel: str, options: PrepareOptions, part: str | None) -> dict[str, Any]:
    """SMOTE where it means something: on vectors. Hashed TF-IDF features of the training texts,
    balanced by imbalanced-learn's SMOTE, for a classifier trained on features (not for the LLM,
    whose input is tokens: an interpolated vector has no text)."""
    from imblearn.over_sampling import SMOTE
    from scipy import sparse
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    rows = list(_read_jsonl(path))
    labels = [str(r["label"]) for r in rows]
    counts = Counter(labels)
    smallest = min(counts.values())
    if smallest < 2 or len(counts) < 2:
        raise OptionsError(
            f"--smote needs at least 2 classes with 2+ training rows each; class counts are {dict(counts)}. "
            "Use --oversample instead, or add rows."
        )
    vectors = HashingVectorizer(n_features=2**18, alternate_sign=False, norm=None).transform(r["text"] for r in rows)
    features = TfidfTransformer().fit_transform(vectors)
    x, y = SMOTE(random_state=options.seed, k_neighbors=min(5, smallest - 1)).fit_resample(features, labels)
    parts = rel.split("/")
    # train/<part>.jsonl | train.jsonl | train/train.jsonl (--token-cache: features stay out of the channel)
    base, name = (parts[:-2], part) if part else (parts[:-2] if parts[-2:] == ["train", "train.jsonl"]
                                                    else parts[:-1], "train")
    target = root.joinpath(*base, "features", f"{name}.npz")
    target.parent.mkdir(parents=True, exist_ok=True)
    sparse.save_npz(target, sparse.csr_matrix(x))
    (target.with_name(f"{name}.labels.json")).write_text(json.dumps(list(y)))
    return {"features": str(target.relative_to(root)), "shape": list(x.shape),
            "class_balance_after": dict(sorted(Counter(y).items()))}


# ====================================================================== statistics
def _file_stats(path: Path, fmt: str, tokenizer: str | None) -> dict[str, Any]:
    """Rows, character lengths (exact min/mean/max, sampled percentiles), token lengths on the same
    sample when a tokenizer is given, and class counts."""
    rng = random.Random(0)
    n = total = 0
    low, high = None, 0
    sample: list[str] = []
    classes: Counter = Counter()
    for row in _read_jsonl(path):
        text = "\n".join(texts(row, fmt))
        length = len(text)
        n += 1
        total += length
        low = length if low is None else min(low, length)
        high = max(high, length)
        if len(sample) < LENGTH_SAMPLE:
            sample.append(text)
        elif (j := rng.randrange(n)) < LENGTH_SAMPLE:
            sample[j] = text
        if fmt == "classification":
            classes[str(row["label"])] += 1
    stats: dict[str, Any] = {"rows": n, "chars": _summary([len(t) for t in sample], low, high, total, n)}
    if tokenizer and sample:
        tok = _load_tokenizer(tokenizer)
        lengths = [len(ids) for ids in tok(sample, add_special_tokens=True)["input_ids"]]
        stats["tokens"] = _summary(lengths, min(lengths), max(lengths), sum(lengths), len(lengths))
        stats["tokens"]["sampled_rows"] = len(sample)
    if classes:
        stats["classes"] = dict(sorted(classes.items()))
    return stats


def _summary(values: list[int], low: int | None, high: int, total: int, n: int) -> dict[str, Any]:
    if not values:
        return {}
    values = sorted(values)
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"min": low, "mean": round(total / n, 1), "p50": round(q[49]), "p90": round(q[89]),
            "p99": round(q[98]), "max": high}


def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise OptionsError(f"--tokenizer {name}: cannot load a tokenizer from it ({exc}).") from None
