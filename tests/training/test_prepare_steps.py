"""The pure steps of `data prepare`: cleaning, PII, glossary, stopwords, dedup, splits, folds, augmentation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ftcloud_train.prepare import clean
from ftcloud_train.prepare.augment import eda_swap_delete, load_synonyms, replace_synonyms
from ftcloud_train.prepare.dedup import ExactDedup, NearDedup
from ftcloud_train.prepare.fields import map_texts
from ftcloud_train.prepare.glossary import Glossary
from ftcloud_train.prepare.options import OptionsError, PrepareOptions
from ftcloud_train.prepare.pipeline import oversample_target
from ftcloud_train.prepare.split import FoldAssigner, StratifiedSplitter


# ---------------------------------------------------------------------- glossary
@pytest.fixture(scope="module")
def medical() -> Glossary:
    return Glossary.load(["medical"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient with MI.", "Patient with Myocardial Infarction."),
        ("MI, then CHF", "Myocardial Infarction, then Congestive Heart Failure"),
        ("post-MI care", "post-Myocardial Infarction care"),
        ("(MI)", "(Myocardial Infarction)"),
        # Must not change: inside other words, other case, digits attached, already explained.
        ("MIT and MIND", "MIT and MIND"),
        ("the admin panel", "the admin panel"),
        ("mi casa", "mi casa"),
        ("Mi amigo", "Mi amigo"),
        ("MI5 agent", "MI5 agent"),
        ("MI_2 variable", "MI_2 variable"),
        ("Myocardial Infarction (MI) confirmed", "Myocardial Infarction (MI) confirmed"),
        ("SMILE and MIMIC", "SMILE and MIMIC"),
        # ignore_case entry, and keys with dots
        ("take prn or PRN", "take as needed or as needed"),
        ("aspirin b.i.d.", "aspirin twice a day"),
        # longest key first: AMI is not "A" + MI
        ("AMI confirmed", "Acute Myocardial Infarction confirmed"),
    ],
)
def test_glossary_expands_whole_words_with_case(medical: Glossary, text: str, expected: str) -> None:
    assert medical.expand(text) == expected


def test_glossary_counts_what_it_replaced_and_later_files_win(tmp_path) -> None:
    mine = tmp_path / "cardio.yaml"
    mine.write_text("abbreviations:\n  MI: mitral insufficiency\n  LV: left ventricle\n")
    g = Glossary.load(["medical", str(mine)])
    assert g.expand("MI of the LV; MI again; MIT") == "mitral insufficiency of the left ventricle; mitral insufficiency again; MIT"
    assert g.replaced == Counter({"MI": 2, "LV": 1})
    assert g.sources == ["medical", str(mine)]


def test_glossary_applies_to_inputs_only_unless_all() -> None:
    g = Glossary.from_mapping({"MI": "Myocardial Infarction"})
    row = {"messages": [{"role": "system", "content": "MI clinic"}, {"role": "user", "content": "Was it an MI?"},
                        {"role": "assistant", "content": "Yes, an MI."}]}
    inputs = map_texts(row, "chat", g.expand, "inputs")
    assert [m["content"] for m in inputs["messages"]] == ["Myocardial Infarction clinic", "Was it an Myocardial Infarction?",
                                                         "Yes, an MI."]
    everything = map_texts(row, "chat", g.expand, "all")
    assert everything["messages"][2]["content"] == "Yes, an Myocardial Infarction."
    alpaca = map_texts({"instruction": "MI?", "input": "MI", "output": "MI"}, "alpaca", g.expand, "inputs")
    assert alpaca == {"instruction": "Myocardial Infarction?", "input": "Myocardial Infarction", "output": "MI"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("abbreviations: [a, b]\n", "non-empty 'abbreviations:' mapping"),
        ("abbreviations:\n  MI: 3\n", "abbreviations.MI must be a non-empty string"),
        ("abbreviations:\n  MI: x\n  BP: y: z\n", r"g\.yaml:3: invalid YAML"),
    ],
)
def test_bad_glossary_names_file_and_key(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(content)
    with pytest.raises(OptionsError, match=message) as exc:
        Glossary.load([str(path)])
    assert str(path) in str(exc.value)


# ---------------------------------------------------------------------- cleaning
def test_normalize_unicode_forms() -> None:
    decomposed = "cafe\u0301 \ufb01le \uff21"  # e + combining acute, "fi" ligature, full-width A
    assert clean.normalize_unicode(decomposed, "NFC") == "caf\u00e9 \ufb01le \uff21"
    assert clean.normalize_unicode(decomposed, "NFKC") == "caf\u00e9 file A"
    assert clean.normalize_unicode(decomposed, "none") == decomposed


def test_clean_whitespace_and_control_characters() -> None:
    text = "  Hello\u200b\x07  world\t\t!\r\n\r\n\r\n\r\nNext  line \n  indented\ufeff "
    assert clean.clean_whitespace(text) == "Hello world !\n\nNext line\nindented"


def test_strip_html_keeps_text_and_lone_angle_brackets() -> None:
    html = "<div><p>Dose &lt;5 mg &amp; rest</p><script>alert(1)</script><br/>a < b and c > d<!-- x --></div>"
    # Block ends become newlines; the whitespace step (which runs next) trims them.
    assert clean.clean_whitespace(clean.strip_html(html)) == "Dose <5 mg & rest\n\na < b and c > d"
    assert clean.strip_html("no markup, 3 > 2") == "no markup, 3 > 2"


def test_redact_pii_counts_emails_and_phones_but_not_dates_or_numbers() -> None:
    counts: Counter = Counter()
    text = ("Mail jane.doe+tag@example.co.uk or call +1 (555) 123-4567 / 030 1234 5678; "
            "order 123456 on 2024-01-02, pi 3.14159265358, 10 mg")
    out = clean.redact_pii(text, counts)
    assert out == ("Mail [EMAIL] or call [PHONE] / [PHONE]; "
                   "order 123456 on 2024-01-02, pi 3.14159265358, 10 mg")
    assert counts == Counter({"email": 1, "phone": 2})
    assert clean.redact_pii("ID12 555-123-4567, ref A1234567890", counts) == "ID12 [PHONE], ref A1234567890"


def test_remove_stopwords_keeps_content_words() -> None:
    assert clean.remove_stopwords("This is the best movie and I loved it!") == "best movie loved!"


# ---------------------------------------------------------------------- dedup
def test_exact_dedup_first_wins() -> None:
    d = ExactDedup()
    assert [d.is_duplicate(r) for r in ({"text": "a"}, {"text": "b"}, {"text": "a"})] == [False, False, True]


def test_near_dedup_catches_small_edits_not_different_texts() -> None:
    base = ("the patient was admitted with chest pain radiating to the left arm and was treated with "
            "aspirin nitroglycerin and heparin before the catheterisation on the second day")
    d = NearDedup(threshold=0.8)
    assert d.is_duplicate(base) is False
    assert d.is_duplicate(base.replace("second day", "second morning")) is True  # one word changed
    assert d.is_duplicate("a completely different note about a broken wrist set in plaster for six weeks") is False


# ---------------------------------------------------------------------- split / folds / oversampling
def test_split_is_exactly_stratified_and_seeded() -> None:
    labels = ["a"] * 900 + ["b"] * 100
    random.Random(1).shuffle(labels)
    s = StratifiedSplitter(0.2, seed=3)
    held = Counter(label for label in labels if s.is_validation(label))
    assert held == Counter({"a": 180, "b": 20})

    def assignment(seed: int) -> list[bool]:
        splitter = StratifiedSplitter(0.2, seed=seed)
        return [splitter.is_validation(label) for label in labels]

    assert assignment(3) == assignment(3)
    assert assignment(3) != assignment(4)


def test_kfold_balances_each_class_over_folds() -> None:
    f = FoldAssigner(5, seed=0)
    labels = ["x"] * 53 + ["y"] * 12
    per = Counter((label, f.fold(label)) for label in labels)
    assert {per[("x", k)] for k in range(5)} <= {10, 11}
    assert {per[("y", k)] for k in range(5)} <= {2, 3}
    assert sum(per[("y", k)] for k in range(5)) == 12


def test_oversample_target_repeats_rows_evenly_to_exact_count() -> None:
    times = [oversample_target(3, 10, i) for i in range(3)]
    assert sum(times) == 10 and max(times) - min(times) <= 1
    assert [oversample_target(5, 5, i) for i in range(5)] == [1] * 5


# ---------------------------------------------------------------------- augmentation
def test_synonyms_keep_case_and_punctuation(tmp_path) -> None:
    path = tmp_path / "syn.yaml"
    path.write_text("good: [great]\nmovie: film\n")
    table = load_synonyms(str(path))
    text, n = replace_synonyms("Good movie, really good.", table, random.Random(0), p=1.0)
    assert text == "Great film, really great." and n == 3
    assert replace_synonyms("nothing to swap", table, random.Random(0)) == ("nothing to swap", 0)


def test_eda_swap_delete_reorders_and_drops_words_but_never_all() -> None:
    rng = random.Random(0)
    words = "one two three four five six seven eight nine ten".split()
    out = eda_swap_delete(" ".join(words), rng, alpha=0.3).split()
    assert out != words and set(out) <= set(words) and out
    assert eda_swap_delete("single", rng) == "single"


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "fmt", "message"),
    [
        (PrepareOptions(remove_stopwords=True), "chat", "--remove-stopwords applies to classification"),
        (PrepareOptions(oversample=True), "text", "--oversample applies to classification"),
        (PrepareOptions(kfold=1), None, "--kfold 1"),
        (PrepareOptions(augment_copies=2), None, "needs an augmentation"),
        (PrepareOptions(eda=True), None, "--augment-copies is 0"),
        (PrepareOptions(validation_fraction=1.0), None, "--validation-fraction"),
    ],
)
def test_options_refuse_with_the_flag_named(options: PrepareOptions, fmt: str | None, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        options.validate(fmt)


def test_options_round_trip_through_container_arguments() -> None:
    from ftcloud_train.prepare.command import parser
    from ftcloud_train.prepare.options import options_from_namespace

    opts = PrepareOptions(normalize="NFKC", clean_whitespace=False, glossary=["medical", "x.yaml"], near_dedup=True,
                          near_dedup_threshold=0.7, kfold=3, seed=9, synonyms="s.yaml", augment_copies=1)
    ns = parser().parse_args(["in.jsonl", "--out", "o", *opts.to_args()])
    assert options_from_namespace(ns) == opts
