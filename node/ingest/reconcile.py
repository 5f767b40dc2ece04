"""Start-up reconciliation: everything in the archive ends up recorded in the audit database.

An object is archived before it is recorded; if the process is killed in between, or the
database was unavailable, the file is on disk without a record (and was never acknowledged with
success). At start-up each such file is read back, decoded with the profile of the sender named
in its File Meta Information (Sending Application Entity Title, PS3.10 section 7.1) and recorded,
with its alert when flagged. Temporary files of interrupted writes are removed.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from node.audit.store import record_receipts, recorded_archive_paths
from node.ingest.receipt import ReceiptBuilder

log = logging.getLogger("node.ingest.reconcile")


def reconcile(engine: Engine, builder: ReceiptBuilder, batch: int = 256) -> int:
    """Record every archived file that has no record; return how many were recorded."""
    removed = builder.archive.remove_partials()
    if removed:
        log.info("removed interrupted writes", extra={"fields": {"files": removed}})
    with Session(engine) as session:
        known = recorded_archive_paths(session)
    missing = [p for p in builder.archive.files() if builder.archive.relative(p) not in known]
    done = 0
    for start in range(0, len(missing), batch):
        receipts = []
        for path in missing[start:start + batch]:
            receipt = builder.for_archived_file(path)
            if receipt is not None:
                receipts.append(receipt)
        with Session(engine) as session, session.begin():
            record_receipts(session, receipts)
        done += len(receipts)
        for r in receipts:
            log.warning("recorded an archived object found without a record",
                        extra={"fields": {"sop_instance_uid": r.sop_instance_uid,
                                          "archive_path": r.archive_path,
                                          "decision": None if r.record is None
                                          else r.record.decision.value}})
    if done:
        log.info("reconciliation done", extra={"fields": {"recorded": done}})
    return done
