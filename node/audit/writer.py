"""Group commit: one writer thread records pending receipts in shared transactions.

Each C-STORE handler submits its :class:`~node.audit.store.Receipt` and waits on its own future.
The writer takes everything pending (up to ``batch_max``) and records it in one transaction; when
the commit returns (on disk: SQLite WAL with ``synchronous=FULL``), every future in the batch is
resolved. A handler therefore never answers before its record is durable, and concurrent
associations share one fsync instead of queueing for one each. When a batch fails, its receipts
are retried one transaction each, so one bad receipt fails alone.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from node.audit.store import Receipt, Recorded, record_receipts

log = logging.getLogger("node.audit.writer")

_STOP = object()


class WriterStopped(RuntimeError):
    """A receipt was submitted after the writer stopped."""


class GroupCommitWriter:
    """The single writer thread of the audit database (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        batch_max: int = 64,
        on_committed: Callable[[Sequence[Recorded]], None] | None = None,
    ) -> None:
        self._engine = engine
        self._batch_max = batch_max
        self._on_committed = on_committed
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.batches = 0
        self.committed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def submit(self, receipt: Receipt) -> Future[Recorded]:
        """Queue ``receipt``; the future resolves once it is committed (or fails)."""
        future: Future[Recorded] = Future()
        with self._lock:
            if self._stopped:
                future.set_exception(WriterStopped("the audit writer has stopped"))
                return future
            self._queue.put((receipt, future))
        return future

    def stop(self, timeout: float = 30.0) -> None:
        """Record everything already submitted, then stop the thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self._batch_max:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                batch.append(more)
            self._commit(batch)  # type: ignore[arg-type]

    def _commit(self, batch: list[tuple[Receipt, Future[Recorded]]]) -> None:
        receipts = [r for r, _ in batch]
        try:
            with Session(self._engine) as session, session.begin():
                results = record_receipts(session, receipts)
        except Exception as exc:
            if len(batch) == 1:
                log.error("audit commit failed", extra={"fields": {
                    "sop_instance_uid": receipts[0].sop_instance_uid, "error": repr(exc)}})
                batch[0][1].set_exception(exc)
                return
            log.warning("batch commit failed; retrying one at a time",
                        extra={"fields": {"batch": len(batch), "error": repr(exc)}})
            for one in batch:
                self._commit([one])
            return
        self.batches += 1
        self.committed += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
        if self._on_committed is not None:
            try:
                self._on_committed(results)
            except Exception:  # a callback never breaks the writer
                log.exception("on_committed callback failed")
