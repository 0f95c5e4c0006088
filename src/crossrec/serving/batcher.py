"""Micro-batching: concurrent requests answered by one batched call.

A server thread per request would score users one at a time: one index search per user, each
reading the whole category's item matrix (memory-bound), plus per-call overhead in torch and FAISS.
`MicroBatcher` puts the requests that arrive together into one call of a batched function
(`Service.recommend_many`): one [B, d] x [d, n] search instead of B searches.

It batches opportunistically: one worker thread takes every request that is waiting when it
becomes free (at most `max_batch`), so a lone request is answered at once and a burst is answered
in a few large batches; `max_wait_ms > 0` additionally holds the first request that long for
company (a throughput/latency trade, off by default). A failure of one request (the batched
function returns an exception in its slot) reaches only that request's caller; a failure of the
whole call reaches every caller of the batch. The worker never dies of a request.

Example:
    >>> b = MicroBatcher(lambda xs: [x * 2 for x in xs])
    >>> b.submit(21).result()
    42
    >>> b.close()
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

Req = TypeVar("Req")
_STOP = object()


class MicroBatcher(Generic[Req]):
    """Answers `submit(request)` futures with `fn(batch)`'s results, in order.

    Args:
        fn: takes a list of requests, returns one result (or an exception instance) per request.
        max_batch: the largest batch.
        max_wait_ms: how long the first request of a batch waits for more (0: not at all).
        name: the worker thread's name.
    """

    def __init__(
        self,
        fn: Callable[[list[Req]], list[Any]],
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        name: str = "crossrec-batcher",
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch={max_batch}, max_wait_ms={max_wait_ms}; expected >= 1 and >= 0")
        self.fn, self.max_batch, self.max_wait = fn, int(max_batch), max_wait_ms / 1000.0
        self.batches = 0  # batches run so far
        self.requests = 0  # requests answered so far
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: Req) -> Future:
        """A future of `request`'s result."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        fut: Future = Future()
        self._q.put((request, fut))
        return fut

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._q.put(_STOP)
            self._thread.join()

    def _take(self) -> tuple[list[tuple[Req, Future]], bool]:
        first = self._q.get()
        if first is _STOP:
            return [], True
        batch, stop = [first], False
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                left = deadline - time.perf_counter()
                nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                stop = True
                break
            batch.append(nxt)
        return batch, stop

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take()
            if not batch:
                continue
            live = [(r, f) for r, f in batch if f.set_running_or_notify_cancel()]
            try:
                results = self.fn([r for r, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batched call returned {len(results)} results for {len(live)} requests")
            except Exception as exc:  # the whole call failed: every caller of this batch hears it
                results = [exc] * len(live)
            for (_, fut), res in zip(live, results):
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
            self.batches += 1
            self.requests += len(live)


__all__ = ["MicroBatcher"]
