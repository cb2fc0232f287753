"""The one data loader: sources, file formats, row formats and validation with exact locations.

Shared by the SDK (``ftcloud data validate/stats/prepare``, validation at ``ftcloud launch``) and the
training container (:mod:`ftcloud_train.data`), so the two can never disagree about a file.
Torch-free and import-light: pyarrow, boto3 and SQLAlchemy load only for the sources that need them.

Sources (:func:`iter_records`), all streamed (a million-row file never has to fit in memory):

* local ``.jsonl`` (one object per line), ``.json`` (one document: an array of rows, one row, or an
  object with exactly one list of rows; JSON Lines saved as ``.json`` is read as such), ``.csv``,
  ``.tsv``, ``.parquet`` (batched), and directories of them (recursively, sorted);
* ``s3://bucket/key`` or ``s3://bucket/prefix/`` (boto3, streamed);
* ``http(s)://`` URLs (streamed; the file format comes from the path suffix or the Content-Type);
* SQL through any SQLAlchemy URL (``sqlite:///data.db``, ``postgresql://...``) with ``query=`` or
  ``table=`` (server-side cursor, ``batch_size`` rows at a time).

Row formats (:data:`FORMATS`): ``chat`` (OpenAI ``messages``; ShareGPT ``conversations`` with
``from``/``value`` is mapped to role/content), ``alpaca``, ``prompt_completion``, ``text`` and
``classification`` (``text`` + ``label``). :func:`detect_format` decides from the keys and reports
mixed or ambiguous input with locations instead of guessing; :func:`normalize` returns the canonical
shape of a row or raises :class:`DataError` naming the field; :func:`validate` collects
:class:`Problem` s (file:line, field, message, fix) over every row.

Locations: ``train.jsonl:17`` (line), ``a.json[3]`` (array index), ``b.json["data"][3]``,
``c.csv:5`` (line the record starts on), ``d.parquet[12]`` (row index), and for SQL
``sqlite:///x.db table t row 3`` (1-based).
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ftcloud.contract import ROW_FORMATS
from ftcloud.errors import UsageError

FILE_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
DATA_SUFFIXES = tuple(f".{f}" for f in FILE_FORMATS)
#: Row format -> the keys that identify it (any one key set of the tuple); defined in the contract.
FORMATS = ROW_FORMATS
CHAT_ROLES = ("system", "user", "assistant", "tool")
#: ShareGPT speaker names -> OpenAI roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_call": "assistant", "observation": "tool"}
#: Characters of text per row beyond which a row is refused: ~250k tokens, past any context window,
#: so such a row is a broken file (a whole book in one cell), not a sample.
MAX_ROW_CHARS = 1_000_000
#: A raw line longer than this is skipped unread (never held in memory) and reported.
MAX_LINE_BYTES = 64 << 20
_CHUNK = 1 << 20
_JSON_READ = 1 << 16  # a JSON document is decoded value by value from a buffer of about this size


class DataError(UsageError, ValueError):
    """The data is wrong in a way the user must fix; the message names file, line and field.

    ``problems`` holds the :class:`Problem` s when there were several (``validate``)."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = problems or []


@dataclass
class Record:
    """One row and where it came from. ``source`` is the location string used in every message."""

    data: dict[str, Any]
    source: str  # "train/data.jsonl:17"


@dataclass
class Problem:
    """One thing wrong with the data: where (``location``, ``field``), what, and how to fix it."""

    location: str
    message: str
    fix: str = ""
    field: str = ""

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" + (f". {self.fix}" if self.fix else "")

    def to_dict(self) -> dict[str, str]:
        return {"location": self.location, "field": self.field, "message": self.message, "fix": self.fix}


class _Fatal(Exception):
    """A reader cannot go on with this source (carries the Problem)."""

    def __init__(self, problem: Problem):
        self.problem = problem


# ====================================================================== sources
@dataclass
class Source:
    """One readable thing: a file, an S3 object, a URL or a SQL query. ``label`` prefixes locations."""

    label: str
    file_format: str  # one of FILE_FORMATS, or "sql"
    opener: Callable[[], BinaryIO] | None = None
    sql: tuple[str, str | None, str | None] | None = None  # (url, query, table)
    local_path: Path | None = None


def is_sql_url(source: str) -> bool:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", source)
    return bool(m) and m.group(1).lower() not in ("s3", "http", "https", "file")


def expand_sources(
    sources: Iterable[str | os.PathLike],
    *,
    file_format: str = "auto",
    query: str | None = None,
    table: str | None = None,
    label: str | None = None,
) -> list[Source]:
    """Each path/URI as the :class:`Source` s it stands for (a directory or S3 prefix: its data files).

    ``label`` replaces the source's own name in locations (the container uses the channel name).
    Raises :class:`DataError` for a missing path, an empty directory or an unknown suffix."""
    if file_format != "auto" and file_format not in FILE_FORMATS:
        raise DataError(f"unknown file format {file_format!r}; choose one of auto, {', '.join(FILE_FORMATS)}.")
    out: list[Source] = []
    for raw in sources:
        src = os.fspath(raw)
        if is_sql_url(src):
            if bool(query) == bool(table):
                raise DataError(f"{_redact(src)}: a SQL source needs exactly one of --query or --table.")
            what = f"table {table}" if table else "query"
            out.append(Source(label or f"{_redact(src)} {what}", "sql", sql=(src, query, table)))
        elif src.startswith("s3://"):
            out.extend(_s3_sources(src, file_format, label))
        elif src.startswith(("http://", "https://")):
            out.append(_http_source(src, file_format, label))
        else:
            out.extend(_local_sources(Path(src.removeprefix("file://")).expanduser(), src, file_format, label))
    return out


def _format_of(name: str, file_format: str, where: str) -> str:
    if file_format != "auto":
        return file_format
    suffix = Path(name).suffix.lower()
    if suffix in DATA_SUFFIXES:
        return suffix[1:]
    raise DataError(
        f"{where}: cannot tell the file format from the name (suffix {suffix or 'none'}). "
        f"Use one of {', '.join(DATA_SUFFIXES)}, or pass the file format explicitly."
    )


def _local_sources(path: Path, given: str, file_format: str, label: str | None) -> list[Source]:
    if path.is_file():
        fmt = _format_of(path.name, file_format, given)
        return [Source(label or given, fmt, opener=lambda p=path: open(p, "rb"), local_path=path)]
    if not path.is_dir():
        raise DataError(f"{given}: no such file or directory.")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if not files:
        found = ", ".join(sorted(p.name for p in path.iterdir())[:5]) or "nothing"
        where = f"{label} ({path})" if label else given
        raise DataError(f"{where} has no data files; found {found}. Provide {', '.join(DATA_SUFFIXES)} files.")
    base = (label or given).rstrip("/")
    return [
        Source(f"{base}/{p.relative_to(path).as_posix()}", p.suffix.lower()[1:],
               opener=lambda p=p: open(p, "rb"), local_path=p)
        for p in files
    ]


def _s3_sources(uri: str, file_format: str, label: str | None) -> list[Source]:
    import boto3
    import botocore.exceptions

    bucket, _, key = uri[5:].partition("/")
    s3 = boto3.client("s3")

    def opener(k: str) -> Callable[[], BinaryIO]:
        return lambda: _ReadAdapter.wrap(s3.get_object(Bucket=bucket, Key=k)["Body"])

    if key and not key.endswith("/"):
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return [Source(label or uri, _format_of(key, file_format, uri), opener=opener(key))]
        except botocore.exceptions.ClientError as exc:  # 404: maybe a prefix without the slash
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise DataError(f"{uri}: cannot read it ({exc}).") from None
    prefix = key if not key or key.endswith("/") else key + "/"
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    data = sorted(k for k in keys if Path(k).suffix.lower() in DATA_SUFFIXES or file_format != "auto")
    if not data:
        raise DataError(f"{uri}: no data files under this prefix (found {len(keys)} objects). "
                        f"Provide {', '.join(DATA_SUFFIXES)} files.")
    base = (label or uri).rstrip("/")
    return [Source(f"{base}/{k[len(prefix):]}", _format_of(k, file_format, f"s3://{bucket}/{k}"), opener=opener(k))
            for k in data]


_CONTENT_TYPES = {"application/json": "json", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl",
                  "application/jsonlines": "jsonl", "text/csv": "csv", "text/tab-separated-values": "tsv",
                  "application/vnd.apache.parquet": "parquet", "application/x-parquet": "parquet"}


def _http_source(url: str, file_format: str, label: str | None) -> Source:
    from urllib.parse import urlparse

    def opener() -> BinaryIO:
        import urllib.error
        import urllib.request

        try:
            return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - the user's own URL
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(f"{url}: cannot download it ({getattr(exc, 'reason', exc)}).") from None

    fmt = file_format
    if fmt == "auto":
        suffix = Path(urlparse(url).path).suffix.lower()
        if suffix in DATA_SUFFIXES:
            fmt = suffix[1:]
        else:  # ask the server what it is
            with opener() as resp:
                ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            fmt = _CONTENT_TYPES.get(ctype, "")
            if not fmt:
                raise DataError(f"{url}: cannot tell the file format from the URL or its Content-Type "
                                f"({ctype or 'none'}). Pass the file format explicitly.")
    return Source(label or url, fmt, opener=opener)


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


class _ReadAdapter(io.RawIOBase):
    """Any object with ``read(n)`` (a botocore StreamingBody) as a buffered binary file."""

    def __init__(self, body: Any):
        self._body = body

    @classmethod
    def wrap(cls, body: Any) -> BinaryIO:
        return io.BufferedReader(cls(body), buffer_size=_CHUNK)  # type: ignore[return-value]

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._body.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close:
            close()
        super().close()


# ====================================================================== reading
def iter_records(
    sources: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    file_format: str = "auto",
    query: str | None = None,
    table: str | None = None,
    batch_size: int = 1000,
    label: str | None = None,
) -> Iterator[Record]:
    """Stream every row of ``sources`` (paths, directories, ``s3://``, ``http(s)://``, SQLAlchemy URLs)
    as :class:`Record` s, one at a time. Raises :class:`DataError` at the first unreadable row.

    ``file_format`` overrides the suffix (``jsonl``/``json``/``csv``/``tsv``/``parquet``); ``query`` or
    ``table`` select the rows of a SQL source; ``label`` renames the source in locations."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    for src in expand_sources(sources, file_format=file_format, query=query, table=table, label=label):
        for item in read_source(src, batch_size=batch_size):
            if isinstance(item, Problem):
                raise DataError(str(item), [item])
            yield item


def read_source(src: Source, *, batch_size: int = 1000) -> Iterator[Record | Problem]:
    """The rows of one source, and a :class:`Problem` in their place for each unreadable one
    (reading goes on after a bad line; a problem that makes the rest unreadable ends the source)."""
    try:
        if src.file_format == "sql":
            yield from _read_sql(src, batch_size)
        elif src.file_format == "parquet":
            yield from _read_parquet(src, batch_size)
        else:
            with _open(src) as fh:
                if src.file_format == "jsonl":
                    yield from _read_jsonl(fh, src.label)
                elif src.file_format == "json":
                    yield from _read_json(fh, src)
                else:
                    yield from _read_delimited(fh, src.label, "\t" if src.file_format == "tsv" else ",")
    except _Fatal as fatal:
        yield fatal.problem


def _open(src: Source) -> BinaryIO:
    try:
        return src.opener()  # type: ignore[misc]
    except DataError as exc:
        raise _Fatal(Problem(src.label, exc.message.removeprefix(f"{src.label}: ").rstrip("."))) from None
    except Exception as exc:  # noqa: BLE001 - permissions, S3 access denied, ...: the source is unreadable
        raise _Fatal(Problem(src.label, f"cannot open it ({type(exc).__name__}: {exc})",
                             "Check that it exists and that you may read it")) from None


# ---------------------------------------------------------------------- text decoding
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_ENCODING_FIX = "Re-save the file as UTF-8 (e.g. iconv -f {enc} -t UTF-8 in > out)"


def _check_start(head: bytes, label: str) -> None:
    for bom, name in _BOMS:
        if head.startswith(bom):
            raise _Fatal(Problem(label, f"the file is {name} (byte order mark); ftcloud reads UTF-8",
                                 _ENCODING_FIX.format(enc=name)))
    if len(head) >= 4 and head[1:4:2] == b"\0\0" and head[0] and head[2]:  # ASCII as UTF-16-LE, no BOM
        raise _Fatal(Problem(label, "the file looks like UTF-16 (every other byte is zero); ftcloud reads UTF-8",
                             _ENCODING_FIX.format(enc="UTF-16")))


def _decode(raw: bytes, location: str) -> str | Problem:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start: exc.start + 1]
        guess = "Latin-1/Windows-1252" if bad and bad[0] >= 0x80 else "not UTF-8"
        if b"\0" in raw:
            guess = "UTF-16 or binary"
        col = len(raw[: exc.start].decode("utf-8", "replace")) + 1
        return Problem(location, f"not UTF-8: byte 0x{bad.hex()} at column {col} (looks like {guess})",
                       _ENCODING_FIX.format(enc="WINDOWS-1252" if "Latin" in guess else "ENCODING"))


def _lines(fh: BinaryIO, label: str) -> Iterator[tuple[int, str | Problem]]:
    """(line number, decoded line or Problem); BOM-aware; over-long lines are skipped unread."""
    first = True
    lineno = 0
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if first:
            _check_start(raw[:4], label)
            raw = raw.removeprefix(codecs.BOM_UTF8)
            first = False
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:  # skip the rest of the line without keeping it
                more = fh.readline(_CHUNK)
                if not more or more.endswith(b"\n"):
                    break
            yield lineno, Problem(f"{label}:{lineno}", f"line is longer than {MAX_LINE_BYTES >> 20} MiB",
                                  "Split it into rows, or check that the file is really text in this format")
            continue
        yield lineno, _decode(raw, f"{label}:{lineno}")


# ---------------------------------------------------------------------- JSON Lines
def _read_jsonl(fh: BinaryIO, label: str, not_one_document_at: int | None = None) -> Iterator[Record | Problem]:
    for lineno, line in _lines(fh, label):
        if isinstance(line, Problem):
            yield line
            continue
        if not line.strip():
            continue
        where = f"{label}:{lineno}"
        try:
            obj = json.loads(line.rstrip("\r\n"))  # so an error at the end of the line has its column
        except json.JSONDecodeError as exc:
            if not_one_document_at is None:
                fix = ("Each line of a .jsonl file must be one JSON object; "
                       "for a pretty-printed file use the .json suffix")
            else:
                fix = (f"A .json file must be one JSON document (an array of rows, one row, or an object "
                       f"with one list of rows), but this one goes on after its first value "
                       f"(line {not_one_document_at}); nor is it JSON Lines (one object per line)")
            yield Problem(where, f"invalid JSON ({exc.msg} at column {exc.colno})", fix)
            continue
        except RecursionError:
            yield Problem(where, "invalid JSON (nested too deeply)", "Rows are objects of a few levels")
            continue
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            yield Problem(where, f"invalid JSON ({exc})", "Check the numbers in this line")
            continue
        if not isinstance(obj, dict):
            yield Problem(where, f"expected a JSON object, got {_json_type(obj)}",
                          'Each line must be one row object such as {"text": "..."}')
            continue
        yield Record(obj, where)


def _json_type(obj: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number (int)", float: "a number (float)"}.get(type(obj), type(obj).__name__)


# ---------------------------------------------------------------------- JSON documents (streamed)
_WS = re.compile(r"[ \t\r\n]*")


class _JsonStream:
    """A JSON document read in chunks: values are decoded one by one with ``raw_decode``, so a
    large top-level array never has to be in memory at once. Tracks line/column for messages."""

    def __init__(self, fh: BinaryIO, label: str):
        self.fh = fh
        self.label = label
        self.decoder = json.JSONDecoder()
        self.incremental = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line of buf[0]
        self.col = 1  # column of buf[0]
        self.started = False
        self.bytes_read = 0

    def _fill(self, size: int = _JSON_READ) -> bool:
        if self.eof:
            return False
        raw = self.fh.read(size)
        if not self.started:
            _check_start(raw[:4], self.label)
            self.started = True
        try:
            text = self.incremental.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            line = self.line + self.buf.count("\n") + raw[: exc.start].count(b"\n")
            problem = _decode(raw[raw.rfind(b"\n", 0, exc.start) + 1: exc.end], f"{self.label}:{line}")
            raise _Fatal(problem if isinstance(problem, Problem) else Problem(f"{self.label}:{line}", "not UTF-8")) from None
        if not raw:
            self.eof = True
        self.bytes_read += len(raw)
        if self.pos > _JSON_READ:  # drop what was consumed, keeping line/column bookkeeping
            gone = self.buf[: self.pos]
            nl = gone.count("\n")
            if nl:
                self.line += nl
                self.col = len(gone) - gone.rfind("\n")
            else:
                self.col += len(gone)
            self.buf = self.buf[self.pos:]
            self.pos = 0
        self.buf += text
        return True  # read something, or just learnt that the file ends here

    def where(self, pos: int | None = None) -> tuple[int, int]:
        pos = self.pos if pos is None else pos
        before = self.buf[:pos]
        nl = before.count("\n")
        if nl:
            return self.line + nl, pos - before.rfind("\n")
        return self.line, self.col + pos

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def take(self, char: str) -> None:
        got = self.peek()
        if got != char:
            self.error(f"Expecting '{char}'" if got else f"Expecting '{char}' before the end of the file")
        self.pos += 1

    def error(self, msg: str, pos: int | None = None) -> None:
        line, col = self.where(pos)
        raise _Fatal(Problem(f"{self.label}:{line}", f"invalid JSON ({msg} at column {col})"))

    def value(self) -> Any:
        self.peek()
        size = _JSON_READ
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
                if end == len(self.buf) and not self.eof and isinstance(obj, (int, float)):
                    raise json.JSONDecodeError("number may go on", self.buf, end)
                self.pos = end
                return obj
            except json.JSONDecodeError as exc:
                # An error at the end of what we have may just be a value cut by the chunk boundary.
                truncated = exc.pos >= len(self.buf) - 2 or exc.msg.startswith("Unterminated string")
                if truncated and self._fill(size):
                    size *= 2
                    continue
                self.error(exc.msg, exc.pos)
            except RecursionError:
                self.error("nested too deeply")
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                self.error(str(exc).split(";")[0])


def _is_row(obj: dict) -> bool:
    """A row of some format (``{"messages": [...]}`` is a row, not a wrapper of rows)."""
    return bool(row_formats(obj))


_ROW_FIELDS = frozenset(k for keysets in FORMATS.values() for keys in keysets for k in keys) | {"input"}


def _read_json(fh: BinaryIO, src: Source) -> Iterator[Record | Problem]:
    label = src.label
    js = _JsonStream(fh, label)
    first = js.peek()
    if first == "":
        return  # empty file: reported by validate as an empty source
    if first == "[":
        yield from _array_rows(js, label, "Each array item")
    elif first == "{":
        first_line = js.where()[0]
        outcome: list[Record | Problem] = []
        yield from _read_json_object(js, label, outcome)
        end_line = js.where()[0]
        if js.peek() != "":
            next_line, col = js.where()
            if first_line == end_line:  # more than one value, the first on one line: JSON Lines saved as .json
                with _open(src) as again:
                    yield from _read_jsonl(again, label, not_one_document_at=next_line)
                return
            raise _Fatal(Problem(
                f"{label}:{next_line}", f"invalid JSON (Extra data at column {col})",
                f"A .json file must be one JSON document (an array of rows, one row, or an object with one list "
                f"of rows), but this one goes on after its first value (line {next_line}); nor is it JSON Lines "
                "(one object per line)"))
        if outcome and isinstance(outcome[0], Problem):
            raise _Fatal(outcome[0])
        yield from outcome
        return
    else:
        obj = js.value()
        yield Problem(label, f"expected an array of row objects, got a JSON {type(obj).__name__}",
                      "Make the file an array of rows, or use .jsonl with one object per line")
        return
    if js.peek() != "":
        line, col = js.where()
        yield Problem(f"{label}:{line}", f"invalid JSON (Extra data at column {col})",
                      "A .json file holds one document; remove what follows it, or use .jsonl")


def _array_rows(js: _JsonStream, prefix: str, what: str) -> Iterator[Record | Problem]:
    """The rows of the JSON array at the stream's position, value by value (never the whole array)."""
    js.take("[")
    if js.peek() == "]":
        js.pos += 1
        return
    i = 0
    while True:
        obj = js.value()
        if isinstance(obj, dict):
            yield Record(obj, f"{prefix}[{i}]")
        else:
            yield Problem(f"{prefix}[{i}]", f"expected a JSON object (a row), got {_json_type(obj)}",
                          f'{what} must be a row object such as {{"text": "..."}}')
        i += 1
        nxt = js.peek()
        if nxt == ",":
            js.pos += 1
        elif nxt == "]":
            js.pos += 1
            return
        else:
            js.error("Expecting ',' delimiter")


def _read_json_object(js: _JsonStream, label: str, outcome: list[Record | Problem]) -> Iterator[Record | Problem]:
    """A top-level object: a wrapper whose one list holds the rows (yielded as streamed), or one row
    (put in ``outcome``, as is the problem of an object that is neither: the caller decides, since
    a file of several objects is read as JSON Lines instead)."""
    js.take("{")
    members: dict[str, Any] = {}
    lists: list[str] = []
    streamed = False
    if js.peek() == "}":
        js.pos += 1
    else:
        while True:
            if js.peek() != '"':
                js.error("Expecting property name enclosed in double quotes")
            key = js.value()
            js.take(":")
            if js.peek() == "[" and key not in _ROW_FIELDS:
                lists.append(key)
                if len(lists) > 1:
                    raise _Fatal(_not_rows_problem(label, [*members, *lists], len(lists)))
                streamed = True
                yield from _array_rows(js, f"{label}[{json.dumps(key)}]", "Each item of the list")
            else:
                members[key] = js.value()
            nxt = js.peek()
            if nxt == ",":
                js.pos += 1
                continue
            if nxt == "}":
                js.pos += 1
                break
            js.error("Expecting ',' delimiter")
    if streamed:
        return
    if _is_row(members):
        outcome.append(Record(members, label))
        return
    outcome.append(_not_rows_problem(label, list(members), sum(isinstance(v, list) for v in members.values())))


def _not_rows_problem(label: str, keys: list[str], n_lists: int) -> Problem:
    return Problem(
        label,
        f"the JSON object (keys {sorted(keys)}) is not a row (no format's keys: {_format_keys_text()}) and has "
        f"{n_lists} lists instead of exactly one list of rows",
        "Make the file an array of rows, or an object whose one list holds the rows",
    )


def _format_keys_text() -> str:
    return "; ".join(f"{fmt} ({' or '.join(', '.join(k) for k in keysets)})" for fmt, keysets in FORMATS.items())


# ---------------------------------------------------------------------- CSV / TSV
def _read_delimited(fh: BinaryIO, label: str, delimiter: str) -> Iterator[Record | Problem]:
    lines = _lines(fh, label)
    state = {"lineno": 0}
    bad: list[Problem] = []

    def text_lines() -> Iterator[str]:
        for lineno, line in lines:
            state["lineno"] = lineno
            if isinstance(line, Problem):
                bad.append(line)
                yield "\n"  # keeps the csv reader in step; the problem is reported instead of the row
            else:
                yield line

    # csv refuses cells over 128 KiB by default; long documents are legitimate (the row cap is validate's)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
    reader = csv.reader(text_lines(), delimiter=delimiter)
    name = "TSV" if delimiter == "\t" else "CSV"
    try:
        header = next(reader, None)
        if header is None:
            return
        if bad:
            raise _Fatal(bad[0])
        if not any(h.strip() for h in header):
            raise _Fatal(Problem(f"{label}:1", f"the {name} header is empty", "The first line must name the columns"))
        blank = [i + 1 for i, h in enumerate(header) if not h.strip()]
        if blank or len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise _Fatal(Problem(f"{label}:1", f"the {name} header has " + (
                f"an unnamed column ({', '.join(map(str, blank))})" if blank else f"duplicate columns {dup}"),
                "Give every column one unique name"))
        start = state["lineno"] + 1
        for values in reader:
            while bad:
                yield bad.pop(0)
            where = f"{label}:{start}"
            start = state["lineno"] + 1
            if not values:  # a blank line
                continue
            if len(values) != len(header):
                yield Problem(where, f"{len(values)} values but the header has {len(header)} columns",
                              f"Quote values that contain the delimiter ({delimiter!r}) or newlines")
                continue
            yield Record(dict(zip(header, values, strict=True)), where)
        while bad:
            yield bad.pop(0)
    except csv.Error as exc:
        raise _Fatal(Problem(f"{label}:{state['lineno']}", f"invalid {name} ({exc})",
                             "Check the quoting of this line")) from None


# ---------------------------------------------------------------------- Parquet
def _read_parquet(src: Source, batch_size: int) -> Iterator[Record | Problem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = None
    try:
        if src.local_path is not None:
            target: Any = src.local_path
        else:  # remote: spool to disk (Parquet needs random access), never into memory
            tmp = tempfile.TemporaryFile()
            with _open(src) as fh:
                while block := fh.read(_CHUNK):
                    tmp.write(block)
            tmp.seek(0)
            target = tmp
        try:
            pf = pq.ParquetFile(target)
        except (pa.ArrowException, OSError) as exc:
            raise _Fatal(Problem(src.label, f"not a readable Parquet file ({exc})",
                                 "Check that the file is Parquet, or give it the right suffix")) from None
        i = 0
        try:
            for batch in pf.iter_batches(batch_size=batch_size):
                for obj in batch.to_pylist():
                    yield Record(obj, f"{src.label}[{i}]")
                    i += 1
        except (pa.ArrowException, OSError) as exc:
            raise _Fatal(Problem(f"{src.label}[{i}]", f"Parquet read failed ({exc})",
                                 "The file may be truncated; write it again")) from None
    finally:
        if tmp is not None:
            tmp.close()


# ---------------------------------------------------------------------- SQL
def _read_sql(src: Source, batch_size: int) -> Iterator[Record | Problem]:
    import sqlalchemy as sa
    import sqlalchemy.exc

    url, query, table = src.sql  # type: ignore[misc]
    try:
        engine = sa.create_engine(url)
    except Exception as exc:  # noqa: BLE001 - bad URL or missing driver: SQLAlchemy says which
        raise _Fatal(Problem(src.label, f"cannot open the database ({exc})", "Check the SQLAlchemy URL")) from None
    try:
        with engine.connect() as conn:
            if table:
                stmt: Any = sa.select(sa.Table(table, sa.MetaData(), autoload_with=conn))
            else:
                stmt = sa.text(query)
            result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(stmt)
            for n, row in enumerate(result, 1):
                yield Record(dict(row._mapping), f"{src.label} row {n}")
    except sqlalchemy.exc.NoSuchTableError:
        raise _Fatal(Problem(src.label, f"no table named {table!r}", "Check --table, or use --query")) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        msg = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise _Fatal(Problem(src.label, f"the database refused the query ({msg})", "Fix the query or --table")) from None
    finally:
        engine.dispose()


# ====================================================================== row formats
def row_formats(data: dict[str, Any]) -> list[str]:
    """The formats whose keys ``data`` has; a format whose keys are a subset of another match's is
    dropped (``text`` + ``label`` is classification, not text)."""
    return list(_formats_of_keys(frozenset(data)))


@functools.lru_cache(maxsize=4096)  # rows of a data set share a few key sets: decide each once
def _formats_of_keys(present: frozenset[str]) -> tuple[str, ...]:
    matches = {fmt: max((set(k) for k in keysets if present.issuperset(k)), key=len, default=None)
               for fmt, keysets in FORMATS.items()}
    found = {fmt: keys for fmt, keys in matches.items() if keys is not None}
    return tuple(fmt for fmt, keys in found.items() if not any(keys < other for other in found.values()))


def detect_format(records: Iterable[Record], requested: str = "auto") -> str:
    """The one row format of ``records`` (or ``requested`` if not ``auto``).

    Rows matching no format are left to :func:`normalize` to report (missing fields); rows that
    match two formats, or rows of different formats, raise :class:`DataError` with locations."""
    if requested != "auto":
        if requested not in FORMATS:
            raise DataError(f"unknown data format {requested!r}; choose one of auto, {', '.join(FORMATS)}.")
        return requested
    first_of: dict[str, str] = {}
    first_unknown: Record | None = None
    for rec in records:
        fmts = row_formats(rec.data)
        if len(fmts) > 1:
            raise DataError(
                f"{rec.source}: the row has the keys of several formats ({', '.join(fmts)}: keys {sorted(rec.data)}), "
                "so its format is ambiguous. Remove the extra fields, or set the format explicitly "
                "(data_format / --format)."
            )
        if fmts:
            first_of.setdefault(fmts[0], rec.source)
        elif first_unknown is None:
            first_unknown = rec
    if len(first_of) > 1:
        raise DataError(
            "mixed row formats: " + ", ".join(f"{loc} is {fmt}" for fmt, loc in first_of.items())
            + ". Use one format per data set (convert the rows, or split them into separate data sets), "
            "or set the format explicitly (data_format / --format) to have the others reported."
        )
    if first_of:
        return next(iter(first_of))
    if first_unknown is None:
        raise DataError("no rows to tell the format from.")
    raise DataError(
        f"{first_unknown.source}: cannot tell the row format from its keys {sorted(first_unknown.data)}. "
        f"Expected one of: {_format_keys_text()}. Rename the fields, or set the format explicitly "
        "(data_format / --format)."
    )


def _text_problem(data: dict, key: str, *, allow_empty: bool = False) -> tuple[str, str, str] | None:
    value = data.get(key)
    if not isinstance(value, str):
        return key, f"field '{key}' must be a string, got {_json_type(value)}", f"Make '{key}' text"
    if not allow_empty and not value.strip():
        return key, f"field '{key}' is empty", "Fill it in, or drop the row"
    return None


def _check(data: dict[str, Any], fmt: str) -> tuple[dict[str, Any] | None, tuple[str, str, str] | None]:
    """(canonical row, None) or (None, (field, message, fix))."""
    keysets = FORMATS[fmt]
    if not any(all(k in data and data[k] is not None for k in keys) for keys in keysets):
        keys = next((k for k in keysets if any(x in data for x in k)), keysets[0])
        missing = next(k for k in keys if k not in data or data[k] is None)
        return None, (missing, f"missing field '{missing}' for format {fmt} (the row has {', '.join(sorted(data)) or 'no fields'})",
                      f"Add '{missing}', or use one format for all rows (data_format / --format)")
    if fmt == "chat":
        return _check_chat(data)
    if fmt == "alpaca":
        for key in ("instruction", "output"):
            if p := _text_problem(data, key):
                return None, p
        if data.get("input") is not None and not isinstance(data["input"], str):
            return None, ("input", f"field 'input' must be a string, got {_json_type(data['input'])}", "Make 'input' text")
        return {"instruction": data["instruction"], "input": data.get("input") or "", "output": data["output"]}, None
    if fmt == "prompt_completion":
        if p := _text_problem(data, "prompt", allow_empty=True) or _text_problem(data, "completion"):
            return None, p
        return {"prompt": data["prompt"], "completion": data["completion"]}, None
    if fmt == "text":
        if p := _text_problem(data, "text"):
            return None, p
        return {"text": data["text"]}, None
    # classification
    if p := _text_problem(data, "text"):
        return None, p
    label = data["label"]
    if isinstance(label, bool) or not isinstance(label, (str, int)) or (isinstance(label, str) and not label.strip()):
        return None, ("label", f"field 'label' must be a class name or integer id, got {json.dumps(label)}",
                      "Give every row one non-empty label")
    return {"text": data["text"], "label": label}, None


def _check_chat(data: dict[str, Any]) -> tuple[dict | None, tuple[str, str, str] | None]:
    key = "messages" if "messages" in data else "conversations"
    messages = data[key]
    if isinstance(messages, str):  # a CSV/SQL cell holding the JSON array
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            pass
    if not isinstance(messages, list) or not messages:
        return None, (key, f"field '{key}' must be a non-empty list of {{role, content}} objects, got "
                      f"{'an empty list' if messages == [] else _json_type(messages)}",
                      "In CSV/SQL put the JSON array in the cell" if isinstance(messages, str) else "Fix the row")
    out = []
    for i, msg in enumerate(messages):
        f = f"{key}[{i}]"
        if not isinstance(msg, dict):
            return None, (f, f"{f} must be an object, got {_json_type(msg)}", 'Use {"role": ..., "content": ...}')
        if "role" in msg or "content" in msg or key == "messages":
            role_key, content_key, roles = "role", "content", {r: r for r in CHAT_ROLES}
        else:  # ShareGPT
            role_key, content_key, roles = "from", "value", SHAREGPT_ROLES
        for k in (role_key, content_key):
            if k not in msg:
                return None, (f"{f}.{k}", f"{f} has no '{k}' (it has {', '.join(sorted(msg)) or 'nothing'})",
                              f"Every message needs '{role_key}' and '{content_key}'")
        role = msg[role_key]
        if not isinstance(role, str) or role not in roles:
            fix = ('ShareGPT\'s "human" is "user" and "gpt" is "assistant" in "messages"'
                   if role in SHAREGPT_ROLES else "Correct the role")
            return None, (f"{f}.{role_key}", f"{f}.{role_key} is {json.dumps(role)}; expected one of "
                          f"{', '.join(dict.fromkeys(roles))}", fix)
        content = msg[content_key]
        if not isinstance(content, str):
            return None, (f"{f}.{content_key}", f"{f}.{content_key} must be a string, got {_json_type(content)}",
                          "Make the content text")
        if not content.strip():
            return None, (f"{f}.{content_key}", f"{f}.{content_key} is empty", "Fill it in, or drop the message")
        out.append({"role": roles[role], "content": content})
    if not any(m["role"] == "assistant" for m in out):
        return None, (key, f"the conversation has no assistant turn ({len(out)} messages from "
                      f"{', '.join(dict.fromkeys(m['role'] for m in out))}): there is nothing to learn from it",
                      "Add the assistant's answer, or drop the row")
    return {"messages": out}, None


def normalize(record: Record | dict[str, Any], fmt: str) -> dict[str, Any]:
    """The canonical shape of a row of format ``fmt``: ``{"messages": [{role, content}...]}`` (chat and
    ShareGPT), ``{instruction, input, output}``, ``{prompt, completion}``, ``{text}`` or ``{text, label}``.
    Raises :class:`DataError` naming the location and field."""
    data, where = (record.data, record.source) if isinstance(record, Record) else (record, "row")
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    row, problem = _check(data, fmt)
    if problem is not None:
        p = Problem(where, problem[1], problem[2], problem[0])
        raise DataError(str(p), [p])
    return row  # type: ignore[return-value]


def row_chars(row: dict[str, Any]) -> int:
    """Characters of text in a canonical row (what the length cap measures)."""
    if "messages" in row:
        return sum(len(m["content"]) for m in row["messages"])
    return sum(len(v) for k, v in row.items() if isinstance(v, str) and k != "label")


# ====================================================================== validation
@dataclass
class SourceSummary:
    location: str
    rows: int = 0
    problems: int = 0


@dataclass
class ValidationReport:
    """What :func:`validate` found. ``ok`` when there are no problems; ``problems`` holds the first
    ``max_problems`` of them, ``more_problems`` how many more there were."""

    format: str = ""
    rows: int = 0
    valid_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0
    sources: list[SourceSummary] = field(default_factory=list)
    formats_seen: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problem_count(self) -> int:
        return len(self.problems) + self.more_problems

    def add(self, problem: Problem, limit: int) -> None:
        if len(self.problems) < limit:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def summary(self) -> str:
        if self.ok:
            return f"{self.rows} rows ({self.format}) in {len(self.sources)} file(s): no problems."
        return (f"{self.problem_count} problem(s) in {self.rows} rows"
                + (f" ({self.format})" if self.format else "") + f" of {len(self.sources)} file(s).")

    def message(self) -> str:
        """Every listed problem, one per line, then the count of the rest."""
        lines = [str(p) for p in self.problems]
        if self.more_problems:
            lines.append(f"... and {self.more_problems} more problem(s).")
        return "\n".join([self.summary(), *lines])

    def raise_if_problems(self) -> ValidationReport:
        if not self.ok:
            raise DataError(self.message(), self.problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "format": self.format, "rows": self.rows, "valid_rows": self.valid_rows,
            "problem_count": self.problem_count, "problems": [p.to_dict() for p in self.problems],
            "more_problems": self.more_problems, "formats_seen": self.formats_seen,
            "sources": [s.__dict__ for s in self.sources],
        }


def validate(
    sources: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    fmt: str = "auto",
    max_problems: int = 20,
    max_chars: int = MAX_ROW_CHARS,
    query: str | None = None,
    table: str | None = None,
    file_format: str = "auto",
    label: str | None = None,
) -> ValidationReport:
    """Read every row of ``sources`` once and collect what is wrong. Never raises for bad data: a
    source that cannot be found or expanded is a problem too. With ``fmt="auto"`` each row is checked
    against the format its keys name; rows of several formats are one "mixed" problem, and rows
    that name no format are reported against the most common one (as missing fields)."""
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of auto, {', '.join(FORMATS)}.")
    report = ValidationReport()
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    expanded: list[Source] = []
    for s in sources:
        try:
            expanded.extend(expand_sources([s], file_format=file_format, query=query, table=table, label=label))
        except DataError as exc:
            report.add(Problem(os.fspath(s), exc.message.removeprefix(f"{os.fspath(s)}: ")), max_problems)
    if not expanded and report.ok:
        report.add(Problem("(no sources)", "nothing to read", "Pass files, directories or URIs"), max_problems)

    first_of: dict[str, str] = {}  # format -> location of its first row
    valid: dict[str, int] = {}
    unknown: list[Record] = []  # rows naming no format (kept up to max_problems, then counted)
    n_unknown = 0
    for src in expanded:
        summary = SourceSummary(src.label)
        report.sources.append(summary)
        before = report.problem_count
        for item in read_source(src):
            if isinstance(item, Problem):
                report.add(item, max_problems)
                continue
            summary.rows += 1
            report.rows += 1
            if fmt == "auto":
                fmts = row_formats(item.data)
                if len(fmts) > 1:
                    report.add(Problem(item.source, f"the row has the keys of several formats ({', '.join(fmts)})",
                                       "Remove the extra fields, or set the format explicitly (--format)"), max_problems)
                    continue
                if not fmts:
                    n_unknown += 1
                    if len(unknown) < max(max_problems, 1):
                        unknown.append(item)
                    continue
                row_fmt = fmts[0]
                first_of.setdefault(row_fmt, item.source)
                report.formats_seen[row_fmt] = report.formats_seen.get(row_fmt, 0) + 1
            else:
                row_fmt = fmt
            row, problem = _check(item.data, row_fmt)
            if problem is not None:
                report.add(Problem(item.source, problem[1], problem[2], problem[0]), max_problems)
            elif (n := row_chars(row)) > max_chars:  # type: ignore[arg-type]
                report.add(Problem(item.source, f"the row has {n:,} characters, more than the limit of {max_chars:,}",
                                   "Split or drop it (or raise the limit if it is really one sample)"), max_problems)
            else:
                valid[row_fmt] = valid.get(row_fmt, 0) + 1
        if summary.rows == 0 and report.problem_count == before:
            report.add(Problem(src.label, "empty file (no rows)", "Remove it, or fill it"), max_problems)
        summary.problems = report.problem_count - before

    report.format = fmt if fmt != "auto" else max(report.formats_seen, key=report.formats_seen.__getitem__, default="")
    if len(first_of) > 1:
        seen = report.formats_seen
        mixed = Problem(
            ", ".join(first_of.values()),
            "mixed row formats: " + ", ".join(f"{loc} is {f}" for f, loc in first_of.items())
            + f" ({', '.join(f'{n} {f}' for f, n in seen.items())} rows)",
            "Use one format per data set, or set the format explicitly (--format) to list the other rows",
        )
        report.add(mixed, max_problems)
        if mixed in report.problems:  # it is the headline: show it first
            report.problems.insert(0, report.problems.pop(report.problems.index(mixed)))
    if n_unknown and report.format:
        for item in unknown:
            _, problem = _check(item.data, report.format)
            report.add(Problem(item.source, problem[1], problem[2], problem[0]), max_problems)  # type: ignore[index]
        report.more_problems += n_unknown - len(unknown)
    elif n_unknown:
        first = unknown[0]
        report.add(Problem(first.source, f"cannot tell the row format from its keys {sorted(first.data)}",
                           f"Expected one of: {_format_keys_text()}. Rename the fields, or set --format"),
                   max_problems)
    report.valid_rows = valid.get(report.format, 0)
    return report
