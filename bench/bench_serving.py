"""Serving benchmark: the real ``python -m ftcloud_train serve`` over HTTP, tiny model, CPU.

    python bench/bench_serving.py [--requests 256] [--concurrency 16] [--max-new-tokens 32]

Measures, with the same load against two servers:

* throughput at concurrency 16 with dynamic batching (FTCLOUD_MAX_BATCH_SIZE=16) vs without
  (FTCLOUD_MAX_BATCH_SIZE=1); target >= 6x;
* p50 / p99 request latency under that load with batching; target p99 < 2 s;
* p50 latency of a cache hit (the same deterministic request again); target <= 5 ms.

Unique prompts in the load runs, so the result cache never answers them. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client(threading.local):
    """One keep-alive connection per thread (what a real client pool does)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.connect()
        # http.client writes headers and body separately: without TCP_NODELAY, Nagle + delayed ACK
        # add ~40 ms to every request, which would hide the server's own latency.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, payload: dict) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        self.conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        return resp.status, resp.read()


def start_server(ml_root: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    full_env = {**os.environ, "FTCLOUD_ML_ROOT": str(ml_root), "FTCLOUD_SERVE_HOST": "127.0.0.1",
                "SAGEMAKER_BIND_TO_PORT": str(port), "HF_HUB_OFFLINE": "1", **env}
    proc = subprocess.Popen([sys.executable, "-m", "ftcloud_train", "serve"], env=full_env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready in 300 s")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def stats(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stats")
    return json.loads(conn.getresponse().read())


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))]


def load_run(port: int, requests: int, concurrency: int, max_new_tokens: int, tag: str) -> dict:
    client = Client(port)
    things = ["grass", "sky", "snow", "coal", "plum", "lemon", "ocean", "mint", "cherry", "corn"]

    def one(i: int) -> float:
        prompt = f"What colour is {things[i % len(things)]}? " + "please answer briefly " * (i % 5) + f"#{tag}{i}"
        started = time.perf_counter()
        status, body = client.post({"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}})
        if status != 200:
            raise RuntimeError(f"request {i}: HTTP {status} {body[:200]!r}")
        return time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:  # warm-up: first batches pay one-off costs
        list(pool.map(one, range(-concurrency, 0)))
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {
        "requests": requests,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "requests_per_s": round(requests / wall, 2),
        "tokens_per_s": round(requests * max_new_tokens / wall, 1),
        "latency_p50_ms": round(pct(latencies, 0.50) * 1000, 1),
        "latency_p99_ms": round(pct(latencies, 0.99) * 1000, 1),
    }


def cache_run(port: int, repeats: int) -> dict:
    client = Client(port)
    payload = {"inputs": "What colour is the cached sky?", "parameters": {"max_new_tokens": 16}}
    client.post(payload)  # the miss that fills the cache
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        status, _ = client.post(payload)
        latencies.append(time.perf_counter() - started)
        assert status == 200
    return {"repeats": repeats, "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(pct(latencies, 0.99) * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--cache-repeats", type=int, default=300)
    args = parser.parse_args()

    from ftcloud_train.tiny import build_model

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        build_model(work / "ml" / "model")  # full weights, as a `full` training job writes them
        common = {"FTCLOUD_MAX_WAIT_MS": "10", "FTCLOUD_MAX_QUEUE": "256"}
        results: dict = {"cpu_count": os.cpu_count(), "max_new_tokens": args.max_new_tokens}

        proc, port = start_server(work / "ml", {**common, "FTCLOUD_MAX_BATCH_SIZE": str(args.concurrency)},
                                  work / "batched.log")
        results["batched"] = load_run(port, args.requests, args.concurrency, args.max_new_tokens, "b")
        server = stats(port)
        results["batched"]["server_batches"] = server["queue"]["batch_size_histogram"]
        results["batched"]["server_latency_ms"] = server["latency_ms"]
        results["cache_hit"] = cache_run(port, args.cache_repeats)
        results["batched"]["exit_code_on_sigterm"] = stop_server(proc)

        proc, port = start_server(work / "ml", {**common, "FTCLOUD_MAX_BATCH_SIZE": "1"}, work / "unbatched.log")
        results["max_batch_1"] = load_run(port, args.requests, args.concurrency, args.max_new_tokens, "u")
        stop_server(proc)

        speedup = results["batched"]["requests_per_s"] / results["max_batch_1"]["requests_per_s"]
        results["speedup"] = round(speedup, 2)
        results["targets"] = {
            "speedup>=6x": speedup >= 6,
            "p99<2s": results["batched"]["latency_p99_ms"] < 2000,
            "cache_hit_p50<=5ms": results["cache_hit"]["p50_ms"] <= 5,
        }
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
