"""The real server: ``python -m ftcloud_train serve`` as a subprocess on a free port, over HTTP.

One server for the module (loading costs ~20-30 s here); the SIGTERM test runs last and stops it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from ftcloud.contract import CUSTOM_ATTRIBUTES_HEADER, MAX_REQUEST_BYTES, ROOT_ENV

pytestmark = pytest.mark.slow  # the module's server takes longer than 15 s to load the model

MAX_QUEUE = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, ml_root, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ml_root / f"server-{self.port}.log"
        self.log = self.log_path.open("w")
        full_env = {**os.environ, ROOT_ENV: str(ml_root), "FTCLOUD_SERVE_HOST": "127.0.0.1",
                    "SAGEMAKER_BIND_TO_PORT": str(self.port), **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "ftcloud_train", "serve"], env=full_env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def invoke(self, payload, headers: dict | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, hdrs, raw = self.request("POST", "/invocations", body, {"Content-Type": "application/json", **(headers or {})})
        return status, hdrs, json.loads(raw) if raw else None

    def stats(self) -> dict:
        return json.loads(self.request("GET", "/stats")[2])

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(adapter_ml_root):
    srv = Server(adapter_ml_root, {"FTCLOUD_MAX_BATCH_SIZE": "4", "FTCLOUD_MAX_WAIT_MS": "20",
                                   "FTCLOUD_MAX_QUEUE": str(MAX_QUEUE)})
    pings = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert srv.proc.poll() is None, srv.log_path.read_text()[-3000:]
        try:
            status = srv.request("GET", "/ping", timeout=2)[0]
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
            continue
        pings.append(status)
        if status == 200:
            break
        time.sleep(0.2)
    srv.pings = pings
    yield srv
    srv.stop()


def test_port_answers_before_the_model_is_loaded_and_ping_says_so(server):
    assert server.pings[-1] == 200
    assert server.pings[0] == 503  # connections were accepted while torch was still importing
    events = [e["event"] for e in server.events() if e.get("logger") == "ftcloud.serve"]
    assert events.index("listening") < events.index("loading model") < events.index("model loaded")


def test_concurrent_requests_are_batched_and_answer_like_one_by_one(server):
    prompts = [f"What colour is {thing}? please answer" for thing in
               ("grass", "sky", "snow", "coal", "plum", "lemon", "ocean", "mint")]
    adapters = ["default", "second", None, "second", "__base__", "default", "second", None]

    def ask(i, **extra):
        return server.invoke({"inputs": prompts[i], "parameters": {"max_new_tokens": 10, "adapter_id": adapters[i], **extra}})

    before = server.stats()
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    middle = server.stats()
    # One by one, from the model again: a stop sequence that never occurs changes the cache key only.
    alone = [ask(i, stop=["<never>"]) for i in range(8)]
    after = server.stats()
    assert all(status == 200 for status, _, _ in together + alone)
    assert [body[0]["generated_text"] for _, _, body in together] == [body[0]["generated_text"] for _, _, body in alone]
    assert after["generate_calls"] - middle["generate_calls"] == 8
    assert middle["queue"]["batches"] - before["queue"]["batches"] < 8  # requests really shared generate calls
    assert any(int(size) > 1 for size in middle["queue"]["batch_size_histogram"])


def test_cache_hits_skip_the_model(server):
    payload = {"inputs": "What colour is cherry?", "parameters": {"max_new_tokens": 6}}
    first = server.invoke(payload)
    before = server.stats()
    again = server.invoke(payload)
    header = server.invoke(payload, {CUSTOM_ATTRIBUTES_HEADER: "adapter=second"})  # another adapter: a miss
    after = server.stats()
    assert first[2] == again[2]
    assert after["cache"]["hits"] == before["cache"]["hits"] + 1
    assert after["generate_calls"] == before["generate_calls"] + 1  # only the other adapter's request ran
    assert header[2] != first[2]
    # Over one keep-alive connection, as SageMaker's front end and client pools send them: a hit takes
    # ~1 ms here; 40+ ms would mean Nagle + delayed ACK on the server's two-part responses.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        conn.request("POST", "/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"})
        assert json.loads(conn.getresponse().read()) == first[2]
        timings.append(time.perf_counter() - started)
    conn.close()
    assert sorted(timings)[2] < 0.025
    sampled = {"inputs": "What colour is cherry?", "parameters": {"max_new_tokens": 6, "do_sample": True}}
    server.invoke(sampled)
    server.invoke(sampled)
    assert server.stats()["generate_calls"] == after["generate_calls"] + 2  # sampling is never cached
    assert server.stats()["cache"]["hits"] == after["cache"]["hits"] + 5


def test_chat_requests_get_a_chat_completion(server):
    status, _, body = server.invoke({"messages": [{"role": "user", "content": "What colour is grass?"}],
                                     "max_tokens": 5, "adapter_id": "second"})
    assert status == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] <= 5


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"inputs": "x",', 400, None),
        ({"parameters": {}}, 422, "inputs"),
        ({"inputs": "x", "parameters": {"temperature": "hot"}}, 422, "parameters.temperature"),
        ({"inputs": "x", "parameters": {"adapter_id": "nope"}}, 422, "parameters.adapter_id"),
        ({"inputs": "colour " * 5000}, 413, "inputs"),  # over the tiny model's 4096-token context
        ({"inputs": "x" * (MAX_REQUEST_BYTES + 10)}, 413, None),  # over SageMaker's 6 MB body limit
    ],
)
def test_bad_requests_get_their_status_and_the_server_keeps_serving(server, body, status, field):
    got, _, answer = server.invoke(body)
    assert got == status, answer
    assert answer.get("field") == field and answer["error"]
    ok, _, _ = server.invoke({"inputs": "still there?", "parameters": {"max_new_tokens": 2}})
    assert ok == 200


def test_a_saturated_queue_answers_429_with_retry_after(server):
    too_many = server.invoke({"inputs": ["x"] * (MAX_QUEUE + 1), "parameters": {"max_new_tokens": 2}})
    assert too_many[0] == 429 and too_many[1]["retry-after"] == "1"

    def flood(i):
        return server.invoke({"inputs": f"flood {i}", "parameters": {"max_new_tokens": 40}})

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(flood, range(24)))
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
    assert all(r[1]["retry-after"] == "1" for r in results if r[0] == 429)
    assert server.invoke({"inputs": "after the flood", "parameters": {"max_new_tokens": 2}})[0] == 200
    assert server.stats()["queue"]["depth"] == 0


def test_sigterm_drains_in_flight_requests_and_exits_zero(server):
    answers = []
    worker = threading.Thread(target=lambda: answers.append(
        server.invoke({"inputs": "a long answer", "parameters": {"max_new_tokens": 200}})))
    worker.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = server.proc.wait(timeout=30)
    worker.join(5)
    assert code == 0
    assert time.monotonic() - started < 30  # inside SageMaker's SIGKILL window
    assert answers and answers[0][0] == 200 and answers[0][2][0]["generated_text"]
    assert "stopped" in [e["event"] for e in server.events()]


def test_a_model_that_cannot_load_stops_the_server_with_the_reason(tiny_model_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"not safetensors")  # a truncated upload
    srv = Server(tmp_path, {})
    try:
        code = srv.proc.wait(timeout=120)
    finally:
        srv.stop()
    failed = [e for e in srv.events() if e["event"] == "model load failed"]
    assert code == 1 and failed
    assert f"cannot load model weights from '{tmp_path / 'model'}'" in failed[0]["error"]
    assert "SafetensorError" in failed[0]["error"]
