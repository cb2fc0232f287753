"""Every knob of ``data prepare``, defined once: the SDK's flags, the container's arguments, the cache key.

:class:`PrepareOptions` is a dataclass whose field metadata (flag help) drives both the click
command (``ftcloud data prepare``) and the container's argparse (``python -m ftcloud_train
prepare``); :meth:`PrepareOptions.to_args` turns it back into those arguments for a Processing
job. Import-light: the CLI imports it at start-up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from ftcloud.errors import UsageError

NORMALIZATION_FORMS = ("NFC", "NFKC", "none")
GLOSSARY_TARGETS = ("inputs", "all")
#: Built-in glossaries by name (files under ftcloud_train/assets/).
BUILTIN_GLOSSARIES = {"medical": "medical_glossary.yaml"}


class OptionsError(UsageError, ValueError):
    """A bad option value; the message names the flag and how to fix it (CLI exit code 2)."""


def _opt(default: Any, help: str, **extra: Any) -> Any:
    meta = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PrepareOptions:
    """What ``data prepare`` does to the rows, in pipeline order. Each step is optional."""

    normalize: str = _opt("NFC", "Unicode normalization form (NFC, NFKC or none).", choices=NORMALIZATION_FORMS)
    clean_whitespace: bool = _opt(True, "Remove control characters, collapse runs of spaces and blank lines.")
    strip_html: bool = _opt(False, "Strip HTML tags and decode entities (&amp; -> &).")
    redact_pii: bool = _opt(False, "Replace e-mail addresses and phone numbers with [EMAIL] / [PHONE].")
    glossary: list[str] = _opt([], "Expand abbreviations from a YAML glossary: 'medical' (built in) or a path. "
                                   "Repeatable.")
    glossary_targets: str = _opt("inputs", "Expand in inputs only (user/system/prompt/instruction/text) or all "
                                           "fields (also answers).", choices=GLOSSARY_TARGETS)
    remove_stopwords: bool = _opt(False, "Drop English stopwords from the text (classification data only).")
    min_chars: int = _opt(1, "Drop rows whose text (all fields together) is shorter than this many characters.")
    dedup: bool = _opt(True, "Drop exact duplicate rows (after cleaning).")
    near_dedup: bool = _opt(False, "Drop near-duplicate rows (MinHash/LSH over word 3-grams).")
    near_dedup_threshold: float = _opt(0.85, "Estimated Jaccard similarity above which a row is a near duplicate.")
    validation_fraction: float = _opt(0.1, "Fraction held out as validation (stratified by label for "
                                           "classification); 0 for none.")
    kfold: int = _opt(0, "Write K folds (folds/K/train.jsonl + validation.jsonl) instead of one split; 0 = off.")
    synonyms: str | None = _opt(None, "Synonym dictionary (YAML: word -> [synonyms]) for augmentation.")
    augment_copies: int = _opt(0, "Augmented copies per training row (synonyms, --eda, --back-translate).")
    eda: bool = _opt(False, "EDA-style random word swap and deletion for augmented copies (classification only).")
    back_translate: str | None = _opt(None, "Seq2seq model id or path that translates inputs to a pivot language.")
    back_translate_return: str | None = _opt(None, "Seq2seq model id or path that translates back "
                                                   "(default: the --back-translate model).")
    oversample: bool = _opt(False, "Random oversampling of minority classes in the training split "
                                   "(classification only).")
    smote: bool = _opt(False, "Also write SMOTE-balanced hashed TF-IDF features (features/train.npz; "
                              "classification only).")
    seed: int = _opt(0, "Seed for splits, folds, augmentation and oversampling.")
    tokenizer: str | None = _opt(None, "Tokenizer (path or id) for token-length statistics; part of the cache key.")
    token_cache: bool = _opt(False, "Also write the training container's token cache for each split (needs "
                                    "--tokenizer: the model the job trains). Output: train/ and validation/ "
                                    "channel directories.")
    set: list[str] = _opt([], "Training setting that changes tokenization, KEY=VALUE (task, data_format, "
                              "max_length, overlength, completion_only_loss), for --token-cache. Repeatable.")

    # ------------------------------------------------------------------ checks
    def validate(self, fmt: str | None = None) -> PrepareOptions:
        """Raise :class:`OptionsError` naming the flag; ``fmt`` (the data's format) enables format rules."""
        if self.normalize not in NORMALIZATION_FORMS:
            raise OptionsError(f"--normalize {self.normalize!r}: choose one of {', '.join(NORMALIZATION_FORMS)}.")
        if self.glossary_targets not in GLOSSARY_TARGETS:
            raise OptionsError(f"--glossary-targets {self.glossary_targets!r}: choose inputs or all.")
        if not 0 <= self.validation_fraction < 1:
            raise OptionsError(f"--validation-fraction {self.validation_fraction}: must be >= 0 and < 1.")
        if self.kfold == 1 or self.kfold < 0:
            raise OptionsError(f"--kfold {self.kfold}: use 0 (off) or at least 2 folds.")
        if not 0 < self.near_dedup_threshold <= 1:
            raise OptionsError(f"--near-dedup-threshold {self.near_dedup_threshold}: must be in (0, 1].")
        if self.min_chars < 0 or self.augment_copies < 0:
            raise OptionsError("--min-chars and --augment-copies must be >= 0.")
        if self.augment_copies and not (self.synonyms or self.eda or self.back_translate):
            raise OptionsError("--augment-copies needs an augmentation: --synonyms FILE, --eda or --back-translate MODEL.")
        if (self.synonyms or self.eda or self.back_translate) and not self.augment_copies:
            raise OptionsError("an augmentation was chosen but --augment-copies is 0; set --augment-copies N (e.g. 1).")
        if self.back_translate_return and not self.back_translate:
            raise OptionsError("--back-translate-return needs --back-translate MODEL.")
        if self.token_cache and not self.tokenizer:
            raise OptionsError("--token-cache needs --tokenizer MODEL: the model (path or id) the job will train, "
                               "whose tokenizer the cache is for.")
        if self.set and not self.token_cache:
            raise OptionsError("--set applies to --token-cache only (the settings the cache is tokenized for); "
                               "add --token-cache or drop --set.")
        if self.token_cache and self.kfold:
            raise OptionsError("--token-cache writes one train/ and one validation/ channel; it does not combine "
                               "with --kfold. Drop one of them.")
        if self.token_cache:
            self.training_values()  # a bad --set fails before any row is read
        if fmt is not None and fmt != "classification":
            for flag, on in (("--remove-stopwords", self.remove_stopwords), ("--eda", self.eda),
                             ("--oversample", self.oversample), ("--smote", self.smote)):
                if on:
                    why = (" Removing words teaches a generative model to write broken sentences."
                           if flag == "--remove-stopwords" else "")
                    raise OptionsError(
                        f"{flag} applies to classification data (text + label) only; this data is {fmt}.{why} "
                        f"Drop {flag}, or prepare classification data."
                    )
        return self

    def training_values(self) -> dict[str, Any]:
        """The ``--set KEY=VALUE`` settings, checked by the one training-spec parser
        (:meth:`ftcloud.spec.TrainingSpec.from_mapping`); only keys that change tokenization."""
        from ftcloud.spec import SpecError, TrainingSpec
        from ftcloud_train.token_cache import TOKENIZATION_KEYS

        values: dict[str, str] = {}
        for item in self.set:
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or not name:
                raise OptionsError(f"--set {item!r}: write KEY=VALUE, e.g. --set max_length=2048.")
            if name not in TOKENIZATION_KEYS:
                raise OptionsError(f"--set {name}: only settings that change tokenization belong here "
                                   f"({', '.join(TOKENIZATION_KEYS)}); others do not change the token cache.")
            values[name] = value.strip()
        try:
            spec = TrainingSpec.from_mapping(values, source="--set")
        except SpecError as exc:
            raise OptionsError(str(exc)) from None
        return {name: getattr(spec, name) for name in values}

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PrepareOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionsError(f"unknown prepare option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**values)

    def to_args(self) -> list[str]:
        """Command-line arguments that reproduce these options (only the non-defaults)."""
        args: list[str] = []
        default = PrepareOptions()
        for f in fields(self):
            value, flag = getattr(self, f.name), flag_name(f.name)
            if value == getattr(default, f.name):
                continue
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, list):
                for item in value:
                    args += [flag, str(item)]
            else:
                args += [flag, str(value)]
        return args


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def option_specs() -> list[dict[str, Any]]:
    """One entry per option (name, flag, type, default, help, choices) for building parsers."""
    out = []
    default = PrepareOptions()
    hints = {"bool": bool, "int": int, "float": float, "str": str, "str | None": str, "list[str]": list}
    for f in fields(PrepareOptions):
        out.append({
            "name": f.name,
            "flag": flag_name(f.name),
            "type": hints[str(f.type)],
            "default": getattr(default, f.name),
            "help": f.metadata["help"],
            "choices": f.metadata.get("choices"),
        })
    return out


def add_argparse_options(parser: Any) -> None:
    """Add every option to an argparse parser (the container's ``prepare`` command)."""
    import argparse

    for spec in option_specs():
        kind = spec["type"]
        if kind is bool:
            parser.add_argument(spec["flag"], dest=spec["name"], action=argparse.BooleanOptionalAction,
                                default=spec["default"], help=spec["help"])
        elif kind is list:
            parser.add_argument(spec["flag"], dest=spec["name"], action="append", default=[], help=spec["help"])
        else:
            parser.add_argument(spec["flag"], dest=spec["name"], type=kind, default=spec["default"],
                                choices=spec["choices"], help=spec["help"])


def options_from_namespace(ns: Any) -> PrepareOptions:
    return PrepareOptions(**{spec["name"]: getattr(ns, spec["name"]) for spec in option_specs()})
