"""Start-up reconciliation: everything in the archive ends up recorded in the audit database.

An object is archived before it is recorded; if the process is killed in between, or the
database was unavailable, the file is on disk without a record (and was never acknowledged with
success). At start-up each such file is read back, decoded with the profile of the sender named
in its File Meta Information (Sending Application Entity Title, PS3.10 section 7.1) and recorded,
with its alert when flagged. Only this node's archive is reconciled (``[node] name``: several
nodes may share one database, each with its own archive). Objects that pair with a companion
(docs/contract.md section 1) are recorded last, one transaction each, through the same pairing
as received objects (:mod:`node.ingest.pairing`). Temporary files of interrupted writes are
removed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from node.audit.store import recorded_archive_paths
from node.audit.writer import ReceiptChecker, record_checked
from node.ingest.purge import PurgeJournal, purge_lock
from node.ingest.receipt import ReceiptBuilder
from node.records import Receipt

log = logging.getLogger("node.ingest.reconcile")


def reconcile(engine: Engine, builder: ReceiptBuilder, batch: int = 256,
              checker: ReceiptChecker | None = None) -> int:
    """Record every archived file that has no record; return how many were recorded;
    ``checker``: the console check of docs/contract.md section 6, in the same transactions.
    Under the archive's purge lock, after finishing an interrupted purge
    (:mod:`node.ingest.purge`): the files of purged records are removed, not recorded again."""
    with purge_lock(builder.archive):
        PurgeJournal(builder.archive).finish(engine)
        return _reconcile(engine, builder, batch, checker)


def _reconcile(engine: Engine, builder: ReceiptBuilder, batch: int,
               checker: ReceiptChecker | None) -> int:
    removed = builder.archive.remove_partials()
    if removed:
        log.info("removed interrupted writes", extra={"fields": {"files": removed}})
    with Session(engine) as session:
        known = recorded_archive_paths(session, builder.settings.node_name)  # its own only
    missing = [p for p in builder.archive.files() if builder.archive.relative(p) not in known]
    done = 0
    pairing: list[Path] = []  # objects that pair: recorded one at a time, after the others
    for start in range(0, len(missing), batch):
        receipts = []
        for path in missing[start:start + batch]:
            receipt = builder.for_archived_file(path, pair=False)
            if receipt is None:
                continue
            if receipt.pairing is not None:
                pairing.append(path)
            else:
                receipts.append(receipt)
        done += _record(engine, receipts, checker)
    # each planned against what is recorded before it (node.ingest.pairing), so that an SRO
    # and its companion both found here pair as if they had arrived one after the other
    for path in pairing:
        receipt = builder.for_archived_file(path, pair=True)
        if receipt is not None:
            done += _record(engine, [receipt], checker)
    if done:
        log.info("reconciliation done", extra={"fields": {"recorded": done}})
    return done


def _record(engine: Engine, receipts: list[Receipt],
            checker: ReceiptChecker | None = None) -> int:
    with Session(engine) as session, session.begin():
        record_checked(session.connection(), receipts, checker)
    for r in receipts:
        log.warning("recorded an archived object found without a record",
                    extra={"fields": {"sop_instance_uid": r.sop_instance_uid,
                                      "archive_path": r.archive_path,
                                      "decision": None if r.record is None
                                      else r.record.decision.value}})
    return len(receipts)
