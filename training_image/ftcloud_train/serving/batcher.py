"""Dynamic batching: concurrent requests queue up and are generated together.

A batch closes when it holds ``max_batch_size`` compatible items or when its first item has
waited ``max_wait_ms``. Items are compatible when their ``key`` is equal (same decoding mode and
sampling knobs; see ``protocol.Sampling.batch_key``, plus the adapter when the runner cannot mix
adapters); ``key=None`` runs alone. Incompatible items stay queued, in arrival order, for the
next batch. One worker thread runs the batches (one model), so the event loop keeps answering
``/ping`` while a batch generates.

Admission is bounded: more than ``max_queue`` items in flight (waiting + generating, plus streams
that generate on their own and hold a slot with :meth:`DynamicBatcher.reserve`) raises
:class:`QueueFull` (the server answers 429 with Retry-After). Each item has a timeout
(:class:`RequestTimeout`, 503); an item that times out while waiting is skipped, not generated.
:meth:`DynamicBatcher.close` refuses new items and finishes the queued ones (SIGTERM drains).

A small asyncio batcher rather than a serving engine (vLLM, TGI): those bring their own HTTP
server, CUDA-only kernels and scheduler, and none of them runs on the CPU where the tests run;
PEFT's ``adapter_names`` already gives mixed-adapter batches on top of plain ``generate``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """Too many requests in flight; retry after a short wait."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new work."""


class RequestTimeout(Exception):
    """The request did not finish within its timeout."""


@dataclass
class _Pending:
    item: Any
    key: Hashable | None
    future: asyncio.Future
    enqueued: float


@dataclass
class BatcherStats:
    batches: int = 0
    items: int = 0
    timeouts: int = 0
    rejected: int = 0
    max_depth: int = 0
    sizes: collections.Counter = field(default_factory=collections.Counter)
    batch_seconds: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        key: Callable[[Any], Hashable | None],
        max_batch_size: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        timeout_s: float = 55.0,
    ):
        self._run_batch = run_batch
        self._key = key
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._waiting: list[_Pending] = []
        self._in_flight = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftcloud-generate")
        self.stats = BatcherStats()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="ftcloud-batcher")

    async def close(self) -> None:
        """Refuse new items, finish every queued one, stop the worker."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Items in flight: waiting plus generating."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- submitting --------------------------------------------------------------------
    async def submit_many(self, items: Sequence[Any]) -> list[Any]:
        """Queue ``items`` together (all admitted or none) and wait for their results, in order."""
        if self._closing or self._task is None:
            raise ShuttingDown("the server is shutting down")
        if self._in_flight + len(items) > self.max_queue:
            self.stats.rejected += 1
            raise QueueFull(f"{self._in_flight} requests in flight, limit {self.max_queue} (FTCLOUD_MAX_QUEUE)")
        loop = asyncio.get_running_loop()
        now = loop.time()
        pendings = [_Pending(item, self._key(item), loop.create_future(), now) for item in items]
        self._waiting.extend(pendings)
        self._in_flight += len(pendings)
        self.stats.max_depth = max(self.stats.max_depth, self._in_flight)
        self._wakeup.set()
        futures = [p.future for p in pendings]
        try:
            done, not_done = await asyncio.wait(futures, timeout=self.timeout_s)
        except asyncio.CancelledError:  # client went away: do not generate for nobody
            for f in futures:
                f.cancel()
            raise
        if not_done:
            self.stats.timeouts += 1
            for f in futures:
                f.cancel()  # skipped if still waiting; its result is dropped if generating
            raise RequestTimeout(f"no answer within {self.timeout_s:g} s (FTCLOUD_REQUEST_TIMEOUT_S)")
        return [f.result() for f in futures]

    async def submit(self, item: Any) -> Any:
        return (await self.submit_many([item]))[0]

    # -- work done outside the batches (streams) ---------------------------------------
    def reserve(self) -> None:
        """Count one request that generates on its own (a stream) as in flight, under the same bound.

        Raises :class:`QueueFull` / :class:`ShuttingDown` like :meth:`submit_many`; pair with :meth:`release`."""
        if self._closing or self._task is None:
            raise ShuttingDown("the server is shutting down")
        if self._in_flight + 1 > self.max_queue:
            self.stats.rejected += 1
            raise QueueFull(f"{self._in_flight} requests in flight, limit {self.max_queue} (FTCLOUD_MAX_QUEUE)")
        self._in_flight += 1
        self.stats.max_depth = max(self.stats.max_depth, self._in_flight)

    def release(self) -> None:
        self._in_flight -= 1

    # -- the loop ----------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        kept = []
        for p in self._waiting:
            if p.future.done():
                self._in_flight -= 1
            else:
                kept.append(p)
        self._waiting = kept

    def _compatible(self, first: _Pending) -> list[_Pending]:
        if first.key is None:
            return [first]
        group = [p for p in self._waiting if p.key == first.key and not p.future.done()]
        return group[: self.max_batch_size]

    async def _next_batch(self) -> list[_Pending] | None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if self._waiting:
                break
            if self._closing:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        first = self._waiting[0]
        deadline = first.enqueued + self.max_wait_s
        while True:
            group = self._compatible(first)
            remaining = deadline - loop.time()
            if len(group) >= self.max_batch_size or first.key is None or remaining <= 0 or self._closing:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                pass
            if first.future.done():  # the first item timed out meanwhile: start over
                return []
        chosen = {id(p) for p in group}
        self._waiting = [p for p in self._waiting if id(p) not in chosen]
        return group

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the loop lives on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
            else:
                for p, result in zip(batch, results, strict=True):
                    if not p.future.done():
                        p.future.set_result(result)
            finally:
                self._in_flight -= len(batch)
                self.stats.batches += 1
                self.stats.items += len(batch)
                self.stats.sizes[len(batch)] += 1
                self.stats.batch_seconds.append(time.perf_counter() - started)

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "depth": self._in_flight,
            "waiting": len(self._waiting),
            "max_depth_seen": s.max_depth,
            "max_queue": self.max_queue,
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_s * 1000,
            "batches": s.batches,
            "items": s.items,
            "mean_batch_size": round(s.items / s.batches, 3) if s.batches else None,
            "batch_size_histogram": {str(k): v for k, v in sorted(s.sizes.items())},
            "timeouts": s.timeouts,
            "rejected": s.rejected,
        }
