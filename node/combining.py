"""Flat combining: callers that arrive together share one batch, run by one of them.

Each caller queues its item and then tries to become the combiner: the one that gets the lock
processes everything pending, in batches, until nothing is left; the others wait on their own
futures (and retry becoming the combiner every few milliseconds, so an item queued just as a
combiner finishes is never left behind). Alone, a caller processes its own item in its own
thread at once, with no hand-off to another thread; under concurrency, items arriving while a
batch runs are taken together in the next one. Used for the audit commit (group commit) and for
decoding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: how long a waiting caller sleeps before trying to become the combiner again
RETRY_S = 0.002


class Closed(RuntimeError):
    """An item was submitted after :meth:`Combiner.close`."""


class Combiner(Generic[T, R]):
    """Runs ``process(batch)`` over pending items; ``process`` resolves every future it gets."""

    def __init__(self, process: Callable[[list[tuple[T, Future[R]]]], None],
                 batch_max: int = 64) -> None:
        self._process = process
        self._batch_max = batch_max
        self._pending: list[tuple[T, Future[R]]] = []
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._closed = False

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; :meth:`wait` on the future (or anyone's :meth:`drain`) processes it."""
        future: Future[R] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(Closed("closed"))
            else:
                self._pending.append((item, future))
        return future

    def run(self, item: T, timeout: float | None = None) -> R:
        return self.wait(self.submit(item), timeout)

    def wait(self, future: Future[R], timeout: float | None = None) -> R:
        """Process pending items (as combiner) or wait until ``future`` is resolved."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._busy.acquire(blocking=False):
                try:
                    self._drain_locked()
                finally:
                    self._busy.release()
            if future.done():
                return future.result()
            wait = RETRY_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FutureTimeout()
                wait = min(wait, left)
            try:
                return future.result(timeout=wait)
            except FutureTimeout:
                continue

    def drain(self) -> None:
        """Process everything pending now, in this thread."""
        with self._busy:
            self._drain_locked()

    def close(self) -> None:
        """Refuse new items and process those pending."""
        with self._lock:
            self._closed = True
        self.drain()

    def _drain_locked(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self._batch_max]
                del self._pending[: self._batch_max]
            if not batch:
                return
            try:
                self._process(batch)
            except BaseException as exc:  # never leave a caller waiting forever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
