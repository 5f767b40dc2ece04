"""Group commit: receipts that arrive together are recorded in one transaction.

Each C-STORE handler calls :meth:`GroupCommitWriter.record` and gets its result only once its
transaction has committed (on disk: SQLite WAL with ``synchronous=FULL``), so no object is ever
acknowledged before it is durable. The commits are flat-combined (:mod:`node.combining`): the
handler that finds no commit running commits everything pending in one transaction, the others
wait on their own futures; concurrent associations thus share one fsync instead of queueing for
one each, and a lone association commits in its own thread with no hand-off. When a batch fails,
its receipts are retried one transaction each, so one bad receipt fails alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from node.audit.store import record_receipts
from node.combining import Closed, Combiner
from node.records import Receipt, Recorded

log = logging.getLogger("node.audit.writer")

WriterStopped = Closed


class ReceiptChecker(Protocol):
    """Checks applied to receipts inside the transaction that records them (the console's
    history, docs/contract.md section 6: :class:`node.consoles.checks.ConsoleChecker`)."""

    def prepare(self, conn: Connection, receipts: Sequence[Receipt]) -> list[Receipt]: ...

    def recorded(self, conn: Connection, receipts: Sequence[Receipt],
                 results: Sequence[Recorded]) -> None: ...


def record_checked(conn: Connection, receipts: Sequence[Receipt],
                   checker: ReceiptChecker | None, *, check_recorded: bool = True
                   ) -> list[Recorded]:
    """:func:`record_receipts` with ``checker``'s checks in the same transaction."""
    if checker is None:
        return record_receipts(conn, receipts, check_recorded=check_recorded)
    checked = checker.prepare(conn, receipts)
    results = record_receipts(conn, checked, check_recorded=check_recorded)
    checker.recorded(conn, checked, results)
    return results


class GroupCommitWriter:
    """The audit database's writer (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        batch_max: int = 64,
        on_committed: Callable[[Sequence[Recorded]], None] | None = None,
        checker: ReceiptChecker | None = None,
    ) -> None:
        self._engine = engine
        self._checker = checker
        self._on_committed = on_committed
        self._combiner: Combiner[Receipt, Recorded] = Combiner(self._commit, batch_max)
        self.batches = 0
        self.committed = 0

    def record(self, receipt: Receipt, timeout: float | None = None) -> Recorded:
        """Record ``receipt`` durably (alone or with others); raise if that failed."""
        return self._combiner.run(receipt, timeout)

    def submit(self, receipt: Receipt) -> Future[Recorded]:
        """Queue ``receipt`` without waiting; :meth:`wait` or :meth:`flush` commits it."""
        return self._combiner.submit(receipt)

    def wait(self, future: Future[Recorded], timeout: float | None = None) -> Recorded:
        return self._combiner.wait(future, timeout)

    def flush(self) -> None:
        self._combiner.drain()

    def stop(self) -> None:
        """Commit what is pending and refuse new receipts."""
        self._combiner.close()

    def _commit(self, batch: list[tuple[Receipt, Future[Recorded]]],
                check_recorded: bool = False) -> None:
        receipts = [r for r, _ in batch]
        try:
            with self._engine.begin() as connection:
                results = record_checked(connection, receipts, self._checker,
                                         check_recorded=check_recorded)
        except Exception as exc:
            if isinstance(exc, IntegrityError) and not check_recorded:
                # an archive path recorded already: record each again, looking before inserting
                log.info("archive path recorded already; recording again with a lookup",
                         extra={"fields": {"batch": len(batch), "error": repr(exc)}})
                for one in batch:
                    self._commit([one], check_recorded=True)
            elif len(batch) == 1:
                log.error("audit commit failed", extra={"fields": {
                    "sop_instance_uid": receipts[0].sop_instance_uid, "error": repr(exc)}})
                batch[0][1].set_exception(exc)
            else:  # each receipt again in a transaction of its own: a bad one fails alone
                log.warning("batch commit failed; retrying one at a time",
                            extra={"fields": {"batch": len(batch), "error": repr(exc)}})
                for one in batch:
                    self._commit([one], check_recorded)
            return
        self.batches += 1
        self.committed += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
        if self._on_committed is not None:
            try:
                self._on_committed(results)
            except Exception:  # a callback never breaks a commit
                log.exception("on_committed callback failed")
