"""The one loader: every source, every row format, every error class with its exact location, streaming,
and arbitrary bytes never escaping as a traceback."""

from __future__ import annotations

import codecs
import http.server
import json
import threading
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftcloud_train.datasource import (
    DataError,
    Record,
    detect_format,
    iter_records,
    normalize,
    validate,
)

CHAT = {"messages": [{"role": "user", "content": "apple?"}, {"role": "assistant", "content": "red"}]}


def jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def problems(report):
    return [str(p) for p in report.problems]


# ====================================================================== sources
def test_local_formats_and_directories_stream_with_locations(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    jsonl(d / "a.jsonl", [CHAT, CHAT])
    (d / "b.csv").write_text('text,label\n"hello, ""you""",pos\n"two\nlines",neg\n')
    (d / "sub" / "c.tsv").write_text("prompt\tcompletion\nhi\tthere\n")
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(5)]}), d / "d.parquet")
    (d / "notes.txt").write_text("ignored: not a data suffix")
    records = list(iter_records(d, batch_size=2))
    assert [r.source for r in records] == [
        f"{d}/a.jsonl:1", f"{d}/a.jsonl:2", f"{d}/b.csv:2", f"{d}/b.csv:3",
        *(f"{d}/d.parquet[{i}]" for i in range(5)), f"{d}/sub/c.tsv:2",
    ]
    assert records[2].data == {"text": 'hello, "you"', "label": "pos"}
    assert records[3].data["text"] == "two\nlines"
    assert records[-1].data == {"prompt": "hi", "completion": "there"}
    # the container names rows by channel
    assert next(iter_records(d, label="train")).source == "train/a.jsonl:1"


def test_sqlite_through_sqlalchemy_query_and_table(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'rows.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE qa (id INTEGER, prompt TEXT, completion TEXT)"))
        for i in range(7):
            conn.execute(sa.text("INSERT INTO qa VALUES (:i, :p, :c)"), {"i": i, "p": f"q{i}", "c": f"a{i}"})
        conn.execute(sa.text("INSERT INTO qa VALUES (7, 'q7', '')"))
    engine.dispose()
    rows = list(iter_records(url, table="qa", batch_size=3))
    assert [r.data["prompt"] for r in rows] == [f"q{i}" for i in range(8)]
    assert rows[0].source == f"{url} table qa row 1"
    picked = list(iter_records(url, query="SELECT prompt, completion FROM qa WHERE id >= 5"))
    assert [r.data for r in picked][0] == {"prompt": "q5", "completion": "a5"}
    report = validate(url, table="qa")
    assert report.format == "prompt_completion" and report.rows == 8
    assert problems(report) == [f"{url} table qa row 8: field 'completion' is empty. Fill it in, or drop the row"]
    with pytest.raises(DataError, match="exactly one of --query or --table"):
        list(iter_records(url))
    assert "no table named 'nope'" in problems(validate(url, table="nope"))[0]


class _Server:
    """A local HTTP server; ``/slow.jsonl`` sends one row, then waits for ``release`` before the rest."""

    def __init__(self, routes):
        self.release = threading.Event()
        self.released_in_time: list[bool] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/slow.jsonl":
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write((json.dumps(CHAT) + "\n").encode())
                    self.wfile.flush()
                    outer.released_in_time.append(outer.release.wait(10))
                    self.wfile.write(((json.dumps(CHAT) + "\n") * 3).encode())
                    return
                body, ctype = routes.get(self.path, (None, None))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()


def test_http_sources_stream_and_name_the_url():
    rows = "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3)).encode()
    server = _Server({"/data.jsonl": (rows, "text/plain"),
                      "/export": (json.dumps([CHAT, CHAT]).encode(), "application/json; charset=utf-8"),
                      "/bad.jsonl": (b'{"text": "ok"}\n{"text": \n', "text/plain")})
    try:
        assert [r.source for r in iter_records(f"{server.url}/data.jsonl")] == [
            f"{server.url}/data.jsonl:{i}" for i in (1, 2, 3)]
        assert [r.source for r in iter_records(f"{server.url}/export")] == [  # no suffix: the Content-Type
            f"{server.url}/export[0]", f"{server.url}/export[1]"]
        assert problems(validate(f"{server.url}/bad.jsonl"))[0].startswith(
            f"{server.url}/bad.jsonl:2: invalid JSON (Expecting value at column 10)")
        assert "cannot download it" in problems(validate(f"{server.url}/missing.jsonl"))[0]
        # streamed: the first row arrives while the server still holds back the rest of the body
        it = iter_records(f"{server.url}/slow.jsonl")
        first = next(it)
        server.release.set()
        assert first.source.endswith("slow.jsonl:1") and len(list(it)) == 3
        assert server.released_in_time == [True]
    finally:
        server.close()


def test_s3_objects_and_prefixes(monkeypatch, tmp_path):
    import boto3
    from moto import mock_aws

    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="data")
        s3.put_object(Bucket="data", Key="sets/a/train.jsonl", Body=b"\n".join(json.dumps(CHAT).encode() for _ in range(3)))
        s3.put_object(Bucket="data", Key="sets/a/more.json", Body=json.dumps({"rows": [CHAT]}).encode())
        s3.put_object(Bucket="data", Key="sets/a/README.md", Body=b"not data")
        s3.put_object(Bucket="data", Key="sets/b/bad.jsonl", Body=b'{"messages": []}\n')
        assert [r.source for r in iter_records("s3://data/sets/a/")] == [
            's3://data/sets/a/more.json["rows"][0]', *(f"s3://data/sets/a/train.jsonl:{i}" for i in (1, 2, 3))]
        assert len(list(iter_records("s3://data/sets/a"))) == 4  # a prefix without the slash
        assert len(list(iter_records("s3://data/sets/a/train.jsonl"))) == 3
        assert problems(validate("s3://data/sets/b/bad.jsonl")) == [
            "s3://data/sets/b/bad.jsonl:1: field 'messages' must be a non-empty list of {role, content} objects, "
            "got an empty list. Fix the row"]
        with pytest.raises(DataError, match=r"s3://data/nothing/: no data files under this prefix"):
            list(iter_records("s3://data/nothing/"))


# ====================================================================== formats
@pytest.mark.parametrize("row, fmt, canonical", [
    (CHAT, "chat", CHAT),
    ({"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "hi"},
                        {"from": "gpt", "value": "hello"}]}, "chat",
     {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "hello"}]}),
    ({"messages": json.dumps(CHAT["messages"])}, "chat", CHAT),  # a CSV/SQL cell holding the JSON array
    ({"instruction": "Name it.", "output": "red", "id": 3}, "alpaca", {"instruction": "Name it.", "input": "", "output": "red"}),
    ({"prompt": "a", "completion": "b"}, "prompt_completion", {"prompt": "a", "completion": "b"}),
    ({"text": "plain", "source": "wiki"}, "text", {"text": "plain"}),
    ({"text": "great", "label": "pos"}, "classification", {"text": "great", "label": "pos"}),
    ({"text": "great", "label": 1}, "classification", {"text": "great", "label": 1}),
])
def test_each_format_is_detected_and_normalized(row, fmt, canonical):
    rec = Record(row, "f.jsonl:1")
    assert detect_format([rec]) == fmt
    assert normalize(rec, fmt) == canonical


def test_mixed_and_ambiguous_input_is_reported_with_locations_never_guessed(tmp_path):
    jsonl(tmp_path / "a.jsonl", [CHAT, CHAT, {"prompt": "p", "completion": "c"}, CHAT])
    report = validate(tmp_path / "a.jsonl")
    assert problems(report)[0] == (
        f"{tmp_path}/a.jsonl:1, {tmp_path}/a.jsonl:3: mixed row formats: {tmp_path}/a.jsonl:1 is chat, "
        f"{tmp_path}/a.jsonl:3 is prompt_completion (3 chat, 1 prompt_completion rows). Use one format per data "
        "set, or set the format explicitly (--format) to list the other rows")
    with pytest.raises(DataError, match=r"mixed row formats: f:1 is chat, f:3 is prompt_completion"):
        detect_format([Record(CHAT, "f:1"), Record(CHAT, "f:2"), Record({"prompt": "p", "completion": "c"}, "f:3")])
    # --format names the one to hold them to: the others are listed row by row
    assert problems(validate(tmp_path / "a.jsonl", fmt="chat")) == [
        f"{tmp_path}/a.jsonl:3: missing field 'messages' for format chat (the row has completion, prompt). "
        "Add 'messages', or use one format for all rows (data_format / --format)"]
    with pytest.raises(DataError, match=r"f:9: the row has the keys of several formats \(chat, prompt_completion"):
        detect_format([Record({**CHAT, "prompt": "p", "completion": "c"}, "f:9")])
    with pytest.raises(DataError, match=r"f:1: cannot tell the row format from its keys \['answer', 'question'\]"):
        detect_format([Record({"question": "q", "answer": "a"}, "f:1")])


# ====================================================================== error classes, exact locations
def _chat(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


@pytest.mark.parametrize("lines, expected", [
    ([CHAT, '{"messages": [}'],
     "t.jsonl:2: invalid JSON (Expecting value at column 15). Each line of a .jsonl file must be one JSON "
     "object; for a pretty-printed file use the .json suffix"),
    ([CHAT, '["a", "list"]'], 't.jsonl:2: expected a JSON object, got an array. Each line must be one row object '
                              'such as {"text": "..."}'),
    ([CHAT, CHAT, _chat(("user", "hi"), ("assitant", "yo"))],
     't.jsonl:3: messages[1].role is "assitant"; expected one of system, user, assistant, tool. Correct the role'),
    ([_chat(("user", "hi"), ("assistant", "  "))], "t.jsonl:1: messages[1].content is empty. Fill it in, or drop the message"),
    ([{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}],
     "t.jsonl:1: messages[0].content must be a string, got a number (int). Make the content text"),
    ([{"messages": [{"role": "user"}]}],
     "t.jsonl:1: messages[0] has no 'content' (it has role). Every message needs 'role' and 'content'"),
    ([_chat(("system", "be nice"), ("user", "hi"))],
     "t.jsonl:1: the conversation has no assistant turn (2 messages from system, user): there is nothing to "
     "learn from it. Add the assistant's answer, or drop the row"),
    ([{"instruction": "x", "output": ["red"]}],
     "t.jsonl:1: field 'output' must be a string, got an array. Make 'output' text"),
    ([{"text": "good", "label": None}, {"text": "bad", "label": ""}],
     "t.jsonl:2: field 'label' must be a class name or integer id, got \"\". Give every row one non-empty label"),
])
def test_error_classes_name_file_line_and_field(tmp_path, lines, expected):
    path = jsonl(tmp_path / "t.jsonl", lines)
    report = validate(path, label="t.jsonl")
    assert problems(report)[-1] == expected
    if not expected.split(": ", 1)[1].startswith(("invalid JSON", "expected a JSON object")):  # row checks
        assert report.problems[-1].field and report.problems[-1].field.split(".")[0].split("[")[0] in expected


def test_missing_column_wrong_count_and_csv_locations(tmp_path):
    (tmp_path / "r.csv").write_text('prompt,answer\n"a",b\n')
    assert problems(validate(tmp_path / "r.csv", fmt="prompt_completion", label="r.csv")) == [
        "r.csv:2: missing field 'completion' for format prompt_completion (the row has answer, prompt). "
        "Add 'completion', or use one format for all rows (data_format / --format)"]
    (tmp_path / "s.csv").write_text('text,label\n"multi\nline",a\nx,b,c\n')
    assert problems(validate(tmp_path / "s.csv", label="s.csv")) == [
        "s.csv:4: 3 values but the header has 2 columns. Quote values that contain the delimiter (',') or newlines"]
    (tmp_path / "long.csv").write_text("text\n" + "x" * 200_000 + "\n")  # over csv's default cell limit
    assert validate(tmp_path / "long.csv").ok


def test_encodings_utf8_bom_is_fine_others_are_named(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(codecs.BOM_UTF8 + json.dumps(CHAT).encode() + b"\n")
    assert validate(tmp_path / "bom.jsonl").ok
    (tmp_path / "bom.csv").write_bytes(codecs.BOM_UTF8 + b"text\nhi\n")
    assert [r.data for r in iter_records(tmp_path / "bom.csv")] == [{"text": "hi"}]
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    assert problems(validate(tmp_path / "latin.jsonl", label="latin.jsonl")) == [
        "latin.jsonl:2: not UTF-8: byte 0xe9 at column 14 (looks like Latin-1/Windows-1252). Re-save the file "
        "as UTF-8 (e.g. iconv -f WINDOWS-1252 -t UTF-8 in > out)"]
    (tmp_path / "u16.json").write_bytes(json.dumps([CHAT]).encode("utf-16"))
    assert problems(validate(tmp_path / "u16.json", label="u16.json")) == [
        "u16.json: the file is UTF-16 (byte order mark); ftcloud reads UTF-8. Re-save the file as UTF-8 "
        "(e.g. iconv -f UTF-16 -t UTF-8 in > out)"]
    (tmp_path / "u16.csv").write_bytes("text\nhi\n".encode("utf-16-le"))
    assert "looks like UTF-16" in problems(validate(tmp_path / "u16.csv"))[0]


def test_empty_files_and_directories(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "empty.jsonl").write_text("")
    (tmp_path / "d" / "blank.json").write_text("  \n")
    jsonl(tmp_path / "d" / "ok.jsonl", [CHAT])
    assert problems(validate(tmp_path / "d", label="d")) == [
        "d/blank.json: empty file (no rows). Remove it, or fill it",
        "d/empty.jsonl: empty file (no rows). Remove it, or fill it"]
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.md").write_text("x")
    report = validate(tmp_path / "none")
    assert not report.ok and "has no data files; found notes.md" in problems(report)[0]
    with pytest.raises(DataError, match="no such file or directory"):
        list(iter_records(tmp_path / "missing.jsonl"))


def test_overlong_rows_and_the_problem_cap(tmp_path):
    rows = [{"text": "x" * 50}, *({"text": ""} for _ in range(30))]
    report = validate(jsonl(tmp_path / "t.jsonl", rows), max_chars=40, max_problems=5, label="t.jsonl")
    assert problems(report)[0] == ("t.jsonl:1: the row has 50 characters, more than the limit of 40. Split or "
                                   "drop it (or raise the limit if it is really one sample)")
    assert len(report.problems) == 5 and report.more_problems == 26 and report.problem_count == 31
    assert report.message().splitlines()[-1] == "... and 26 more problem(s)."
    assert report.valid_rows == 0 and report.rows == 31


def test_json_documents_stream_large_arrays_in_bounded_memory(tmp_path):
    path = tmp_path / "big.json"
    row = json.dumps(CHAT, indent=2)
    n = 20_000
    with path.open("w") as fh:  # ~2.5 MB pretty-printed
        fh.write("[\n" + ",\n".join(row for _ in range(n)) + "\n]\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_records(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < size / 2, f"peak {peak} bytes while reading a {size}-byte file: not streamed"


# ====================================================================== fuzzing: a clear error, never a traceback
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".parquet"]))
def test_arbitrary_bytes_give_problems_not_tracebacks(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    report = validate(path)  # never raises for bad data
    assert report.ok or all(p.location and p.message for p in report.problems)
    try:
        list(iter_records(path))
    except DataError as exc:
        assert str(path) in str(exc)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                         st.sampled_from(["messages", "role", "content", "text", "label", "prompt", "completion",
                                          "from", "value", "conversations", "instruction", "output", "x"]),
                         inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_json, min_size=1, max_size=4), fmt=st.sampled_from(["auto", "chat", "classification", "text"]))
def test_arbitrary_json_rows_give_problems_not_tracebacks(tmp_path, rows, fmt):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate(path, fmt=fmt)
    assert report.rows + sum(1 for p in report.problems if "expected a JSON object" in p.message) == len(rows)
    try:
        for rec in iter_records(path):
            try:
                normalize(rec, report.format or "text")
            except DataError as exc:
                assert str(exc).startswith(f"{rec.source}: ")
    except DataError as exc:
        assert str(exc).startswith(f"{path}:")
