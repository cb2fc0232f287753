"""Streaming (``"stream": true``): server-sent events that the SDK's parser reads, text equal to the
non-streamed answer, stop sequences, the queue bound, and a server that keeps serving meanwhile.

The runner tests need no socket; the server tests run the real ``python -m ftcloud_train serve``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import pytest

from ftcloud.endpoints.base import iter_stream_text
from ftcloud_train.serving.protocol import (
    ChatStream,
    Generation,
    GenerationTask,
    generate_stream_event,
    generate_stream_final,
    parse_request,
    sampling,
    sse,
)
from ftcloud_train.serving.runner import StreamPiece, _ModeGate, _stop_prefix_len

from .test_server import Server

PROMPT = "What colour is grass?"


def task(text=PROMPT, adapter=None, max_new_tokens=16, stop=()):
    s = sampling(max_new_tokens, False, None, None, None, None, stop, None)
    return GenerationTask(text=text, messages=None, sampling=s, adapter=adapter)


def streamed(runner, t, timeout_s=60.0, cancel=None):
    items = list(runner.stream(runner.prepare(t), timeout_s, cancel))
    assert all(isinstance(i, StreamPiece) for i in items[:-1]) and isinstance(items[-1], Generation)
    return [i.text for i in items[:-1]], items[-1]


# ---------------------------------------------------------------------------- wire format
def test_stream_events_are_what_the_sdk_parser_reads():
    result = Generation(text=" blue sky", finish_reason="stop", prompt_tokens=4, completion_tokens=3)
    tgi = parse_request(b'{"inputs": "sky is", "stream": true, "parameters": {"return_full_text": true}}')
    assert tgi.stream and tgi.kind == "generate"
    body = sse(generate_stream_event(" blue", 7)) + sse(generate_stream_event(" sky", 9)) + sse(
        generate_stream_final(tgi, result, 9))
    assert list(iter_stream_text([body[i:i + 5] for i in range(0, len(body), 5)])) == [" blue", " sky"]
    final = json.loads(body.split(b"\n\n")[-2][len(b"data: "):])
    assert final["generated_text"] == "sky is blue sky" and final["details"]["finish_reason"] == "stop"

    chat = parse_request(b'{"messages": [{"role": "user", "content": "sky?"}], "stream": true}')
    stream = ChatStream(chat, "tiny")
    body = sse(stream.first()) + sse(stream.piece(" blue")) + sse(stream.last(result)) + b"data: [DONE]\n\n"
    assert list(iter_stream_text([body])) == [" blue"]
    last = stream.last(result)
    assert last["object"] == "chat.completion.chunk" and last["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("text", "stops", "held"), [
    ("the end", ("END",), 0), ("the E", ("END",), 1), ("the EN", ("END",), 2), ("the EN", ("NX", "ENZ"), 2),
    ("abc", (), 0), ("a", ("abc",), 1), ("x\n", ("\n\n",), 1),
])
def test_text_that_may_begin_a_stop_sequence_is_held_back(text, stops, held):
    assert _stop_prefix_len(text, stops) == held


# ---------------------------------------------------------------------------- runner
@pytest.mark.parametrize("adapter", [None, "second", "__base__", "dora"])
def test_streamed_pieces_join_to_the_batched_answer(adapter_runner, adapter):
    t = task(adapter=adapter)
    expected = adapter_runner.generate([adapter_runner.prepare(t)])[0]
    pieces, result = streamed(adapter_runner, t)
    assert len(pieces) > 1  # really piece by piece
    assert "".join(pieces) == result.text == expected.text
    assert (result.finish_reason, result.completion_tokens) == (expected.finish_reason, expected.completion_tokens)


def test_a_stop_sequence_ends_the_stream_without_its_text(adapter_runner):
    full = adapter_runner.generate([adapter_runner.prepare(task(max_new_tokens=24))])[0].text
    stop = full[5:8]
    assert stop and full.find(stop) >= 5
    pieces, result = streamed(adapter_runner, task(max_new_tokens=24, stop=(stop,)))
    assert "".join(pieces) == result.text == full[: full.find(stop)]
    assert result.finish_reason == "stop" and result.completion_tokens < 24


def test_cancel_and_timeout_stop_the_model(adapter_runner):
    cancel = threading.Event()
    stream = adapter_runner.stream(adapter_runner.prepare(task(max_new_tokens=400)), 60.0, cancel)
    next(stream)
    cancel.set()  # what the server does when the client goes away
    rest = list(stream)
    assert rest[-1].completion_tokens < 400
    with pytest.raises(TimeoutError, match="FTCLOUD_REQUEST_TIMEOUT_S"):
        list(adapter_runner.stream(adapter_runner.prepare(task(max_new_tokens=2000)), 0.2))


def test_a_stream_and_a_batch_on_other_adapters_do_not_mix_their_adapters(adapter_runner):
    """A stream generates beside the batches; switching the model's adapter for one must not change
    the other's answer."""
    long_task, batch = task(adapter="second", max_new_tokens=60), [task(p) for p in ("a", "What colour is snow?")]
    expected_stream = adapter_runner.generate([adapter_runner.prepare(long_task)])[0].text
    expected_batch = [g.text for g in adapter_runner.generate([adapter_runner.prepare(t) for t in batch])]
    with ThreadPoolExecutor(2) as pool:
        stream = pool.submit(streamed, adapter_runner, long_task)
        together = pool.submit(lambda: [adapter_runner.generate([adapter_runner.prepare(t) for t in batch])
                                        for _ in range(3)])
        assert "".join(stream.result()[0]) == expected_stream
        assert all([g.text for g in answers] == expected_batch for answers in together.result())


def test_adapter_modes_share_the_model_but_a_waiting_mode_is_not_starved():
    gate, order, release_first = _ModeGate(), [], threading.Event()

    def use(mode, hold_until=None):
        with gate.hold(mode):
            order.append(mode)
            if hold_until is not None:
                hold_until.wait(10)

    first = threading.Thread(target=use, args=("a", release_first))
    first.start()
    while not order:
        time.sleep(0.01)
    with gate.hold("a"):  # same mode, nobody waiting: runs beside the first
        order.append("a-beside")
    other = threading.Thread(target=use, args=("b",))
    other.start()
    while not gate._waiting:
        time.sleep(0.01)
    late = threading.Thread(target=use, args=("a",))  # same mode as the running one, but "b" waits
    late.start()
    time.sleep(0.2)
    assert order == ["a", "a-beside"]  # the late "a" did not slip in ahead of the waiting "b"
    release_first.set()
    for t in (first, other, late):
        t.join(10)
    assert order[:2] == ["a", "a-beside"] and sorted(order[2:]) == ["a", "b"]


# ---------------------------------------------------------------------------- the real server
class SSEReader:
    """Reads one streamed response over HTTP, event by event, noting when each arrived."""

    def __init__(self, server: Server, payload: dict):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        self.conn.request("POST", "/invocations", json.dumps(payload), {"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        self.events: list[tuple[float, object]] = []

    def next_event(self):
        while True:
            line = self.response.readline()
            if not line:
                return None
            if line.startswith(b"data: "):
                data = line[6:].strip()
                item = "[DONE]" if data == b"[DONE]" else json.loads(data)
                self.events.append((time.monotonic(), item))
                return item

    def read_all(self) -> list:
        while self.next_event() is not None:
            pass
        self.conn.close()
        return [e for _, e in self.events]


@pytest.fixture(scope="module")
def stream_server(adapter_ml_root):
    srv = Server(adapter_ml_root, {"FTCLOUD_MAX_QUEUE": "2", "FTCLOUD_MAX_WAIT_MS": "5"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert srv.proc.poll() is None, srv.log_path.read_text()[-3000:]
        try:
            if srv.request("GET", "/ping", timeout=2)[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    yield srv
    srv.stop()


@pytest.mark.slow
def test_tgi_stream_over_http_equals_the_plain_answer(stream_server):
    params = {"max_new_tokens": 16, "adapter_id": "second", "details": True}
    status, _, plain = stream_server.invoke({"inputs": PROMPT, "parameters": params})
    reader = SSEReader(stream_server, {"inputs": PROMPT, "parameters": params, "stream": True})
    assert reader.response.status == 200
    assert reader.response.getheader("Content-Type").startswith("text/event-stream")
    assert reader.response.getheader("Transfer-Encoding") == "chunked"  # what InvokeEndpointWithResponseStream needs
    events = reader.read_all()
    pieces, final = events[:-1], events[-1]
    assert status == 200 and len(pieces) > 1
    assert all(e["generated_text"] is None and isinstance(e["token"]["id"], int) for e in pieces)
    assert "".join(e["token"]["text"] for e in pieces) == final["generated_text"] == plain[0]["generated_text"]
    assert final["details"]["finish_reason"] == plain[0]["details"]["finish_reason"]
    assert final["details"]["generated_tokens"] == plain[0]["details"]["generated_tokens"]


@pytest.mark.slow
def test_chat_stream_over_http_equals_the_plain_answer_and_ends_with_done(stream_server):
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 12}
    status, _, plain = stream_server.invoke(body)
    events = SSEReader(stream_server, {**body, "stream": True}).read_all()
    assert status == 200 and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == plain["usage"]


@pytest.mark.slow
def test_stop_sequence_and_bad_streams_over_http(stream_server):
    full = stream_server.invoke({"inputs": PROMPT, "parameters": {"max_new_tokens": 24}})[2][0]["generated_text"]
    stop = full[5:8]
    events = SSEReader(stream_server, {"inputs": PROMPT, "stream": True,
                                       "parameters": {"max_new_tokens": 24, "stop": [stop]}}).read_all()
    assert "".join(e["token"]["text"] for e in events[:-1]) == events[-1]["generated_text"] == full[: full.find(stop)]
    assert events[-1]["details"]["finish_reason"] == "stop"
    status, _, err = stream_server.invoke({"inputs": ["a", "b"], "stream": True})
    assert status == 422 and err["field"] == "stream"
    status, _, err = stream_server.invoke({"inputs": "x", "stream": True, "parameters": {"adapter_id": "nope"}})
    assert status == 422 and err["field"] == "parameters.adapter_id"  # checked before the 200


@pytest.mark.slow
def test_a_running_stream_does_not_hold_up_other_requests_and_counts_against_the_queue(stream_server):
    long_stream = SSEReader(stream_server, {"inputs": PROMPT, "stream": True, "parameters": {"max_new_tokens": 3000}})
    assert long_stream.next_event()["generated_text"] is None  # streaming has begun
    reading = threading.Thread(target=long_stream.read_all)
    reading.start()
    status, _, body = stream_server.invoke({"inputs": "What colour is snow?", "parameters": {"max_new_tokens": 4}})
    answered = time.monotonic()
    assert status == 200 and body[0]["generated_text"] is not None
    # FTCLOUD_MAX_QUEUE=2: the stream holds one slot, a second stream the other; a third request waits
    # for nothing and is told to retry.
    second = SSEReader(stream_server, {"inputs": "x", "stream": True, "parameters": {"max_new_tokens": 3000}})
    assert second.response.status == 200 and second.next_event() is not None
    busy, headers, _ = stream_server.invoke({"inputs": "y", "stream": True})
    assert busy == 429 and headers["retry-after"] == "1"
    assert stream_server.invoke({"inputs": "y"})[0] == 429
    second.conn.close()  # a client that goes away frees its slot: the model stops for it
    reading.join(timeout=300)
    ended = long_stream.events[-1][0]
    assert ended > answered  # the plain request was answered while the stream was still running
    assert long_stream.events[-1][1]["details"]["generated_tokens"] > 100
    deadline = time.monotonic() + 30
    while stream_server.stats()["queue"]["depth"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stream_server.stats()["queue"]["depth"] == 0
    finished = [e for e in stream_server.events() if e.get("event") == "stream finished"]
    assert any("finish_reason" not in e and e["pieces"] > 0 for e in finished)  # the one whose client left
