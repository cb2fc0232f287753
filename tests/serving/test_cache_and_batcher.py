"""The result cache (LRU + TTL, counted) and the dynamic batcher (grouping, limits, timeouts, drain)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ftcloud_train.serving.batcher import DynamicBatcher, QueueFull, RequestTimeout, ShuttingDown
from ftcloud_train.serving.cache import ResultCache


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_cache_is_lru_with_ttl_and_counts_hits_and_misses():
    clock = Clock()
    cache = ResultCache(max_entries=2, ttl_s=10, clock=clock)
    a, b, c = (ResultCache.key("v1", "default", x) for x in "abc")
    assert ResultCache.key("v2", "default", "a") != a and ResultCache.key("v1", "second", "a") != a
    cache.put(a, "A")
    cache.put(b, "B")
    assert cache.get(a) == "A"  # a is now the most recently used
    cache.put(c, "C")  # evicts b
    assert cache.get(b) is None and cache.get(c) == "C"
    clock.now = 10.5
    assert cache.get(a) is None  # expired
    assert (cache.hits, cache.misses) == (2, 2)
    assert cache.stats()["entries"] == 1


def test_disabled_cache_stores_nothing():
    cache = ResultCache(max_entries=0, ttl_s=600)
    cache.put("k", 1)
    assert cache.get("k") is None and not cache.enabled and cache.stats()["misses"] == 0


class Recorder:
    """A run_batch that records each batch it gets (the batcher under test calls it from its thread)."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None):
        self.batches: list[list] = []
        self.delay = delay
        self.gate = gate

    def __call__(self, items):
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append(list(items))
        return [f"done:{item[1]}" for item in items]


def run(coro):
    return asyncio.run(coro)


def _batcher(recorder, **kw):
    return DynamicBatcher(recorder, key=lambda item: item[0], **kw)


def test_concurrent_compatible_items_share_a_batch_and_incompatible_ones_wait_their_turn():
    async def main():
        rec = Recorder()
        b = _batcher(rec, max_batch_size=3, max_wait_ms=50, max_queue=16)
        b.start()
        items = [("greedy", 0), ("sample", 1), ("greedy", 2), ("greedy", 3), ("greedy", 4), ("sample", 5)]
        results = await asyncio.gather(*(b.submit(i) for i in items))
        await b.close()
        return rec, results, b

    rec, results, b = run(main())
    assert results == [f"done:{i}" for i in range(6)]  # each caller gets its own answer
    assert [[item[1] for item in batch] for batch in rec.batches] == [[0, 2, 3], [1, 5], [4]]
    assert b.summary()["batch_size_histogram"] == {"1": 1, "2": 1, "3": 1}


def test_a_lone_request_waits_at_most_max_wait_and_none_keys_run_alone():
    async def main():
        rec = Recorder()
        b = _batcher(rec, max_batch_size=8, max_wait_ms=30, max_queue=16)
        b.start()
        t = time.perf_counter()
        await b.submit(("greedy", 0))
        lone = time.perf_counter() - t
        await asyncio.gather(b.submit((None, 1)), b.submit((None, 2)))
        await b.close()
        return rec, lone

    rec, lone = run(main())
    assert 0.025 <= lone < 1.0
    assert [len(batch) for batch in rec.batches] == [1, 1, 1]


def test_queue_is_bounded_and_the_server_is_told_to_refuse():
    async def main():
        gate = threading.Event()
        b = _batcher(Recorder(gate=gate), max_batch_size=2, max_wait_ms=0, max_queue=3)
        b.start()
        first = [asyncio.create_task(b.submit(("g", i))) for i in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await b.submit(("g", 9))
        with pytest.raises(QueueFull):
            await b.submit_many([("g", 10)])  # still full: waiting + generating count
        gate.set()
        done = await asyncio.gather(*first)
        after = await b.submit(("g", 11))  # room again once answered
        await b.close()
        return done, after, b

    done, after, b = run(main())
    assert done == ["done:0", "done:1", "done:2"] and after == "done:11"
    assert b.stats.rejected == 2 and b.depth == 0


def test_a_request_that_times_out_while_queued_is_never_generated():
    async def main():
        gate = threading.Event()
        rec = Recorder(gate=gate)
        b = _batcher(rec, max_batch_size=1, max_wait_ms=0, max_queue=8, timeout_s=0.2)
        b.start()
        busy = asyncio.create_task(b.submit(("g", 0)))  # holds the worker until the gate opens
        await asyncio.sleep(0.02)
        with pytest.raises(RequestTimeout):
            await b.submit(("g", 1))
        gate.set()
        with pytest.raises(RequestTimeout):
            await busy  # timed out while generating: its late result is dropped
        ok = await b.submit(("g", 2))
        await b.close()
        return rec, ok, b

    rec, ok, b = run(main())
    assert ok == "done:2"
    assert [item[1] for batch in rec.batches for item in batch] == [0, 2]  # item 1 skipped
    assert b.depth == 0 and b.stats.timeouts == 2


def test_close_finishes_queued_work_then_refuses_new_work():
    async def main():
        rec = Recorder(delay=0.05)
        b = _batcher(rec, max_batch_size=2, max_wait_ms=5, max_queue=16)
        b.start()
        pending = [asyncio.create_task(b.submit(("g", i))) for i in range(5)]
        await asyncio.sleep(0.01)
        await b.close()
        generated = sorted(item[1] for batch in rec.batches for item in batch)  # before close returned
        with pytest.raises(ShuttingDown):
            await b.submit(("g", 99))
        return generated, await asyncio.gather(*pending)

    generated, results = run(main())
    assert generated == [0, 1, 2, 3, 4] and results == [f"done:{i}" for i in range(5)]


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_serving():
    calls = []

    def flaky(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return ["ok" for _ in items]

    async def main():
        b = DynamicBatcher(flaky, key=lambda item: 0, max_batch_size=4, max_wait_ms=0, max_queue=8)
        b.start()
        with pytest.raises(RuntimeError, match="out of memory"):
            await b.submit("x")
        ok = await b.submit("y")
        await b.close()
        return ok

    assert run(main()) == "ok"
