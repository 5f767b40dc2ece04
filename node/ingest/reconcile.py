"""Start-up reconciliation: everything in the archive ends up recorded in the audit database.

An object is archived before it is recorded; if the process is killed in between, or the
database was unavailable, the file is on disk without a record (and was never acknowledged with
success). At start-up each such file is read back, decoded with the profile of the sender named
in its File Meta Information (Sending Application Entity Title, PS3.10 section 7.1) and recorded,
with its alert when flagged. Temporary files of interrupted writes are removed.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from pynetdicom.dsutils import split_dataset
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from model.pipeline import read_file
from node.audit.store import record_receipts, recorded_archive_paths
from node.ingest.archive import Archived
from node.ingest.receipt import Recorder
from node.records import Origin, Placement, Receipt, Source

log = logging.getLogger("node.ingest.reconcile")


def _placement(recorder: Recorder, path: Path) -> Placement:
    top = path.relative_to(recorder.archive.root).parts[0]
    return {"objects": Placement.PRIMARY, "duplicates": Placement.DUPLICATE}.get(
        top, Placement.UNNAMED
    )


def receipt_for_file(recorder: Recorder, path: Path) -> Receipt | None:
    """A receipt for an archived file found without a record (``None`` if it is gone)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    meta = None
    try:
        meta, _ = split_dataset(path)
    except Exception:
        meta = None  # read_file says why
    ds, error = read_file(path)  # the checks ``decode`` and the C-STORE handler apply

    def meta_text(keyword: str) -> str | None:
        value = None if meta is None else meta.get(keyword)
        return str(value).strip() or None if value is not None else None

    uid = meta_text("MediaStorageSOPInstanceUID")
    origin = Origin(
        calling_ae_title=meta_text("SendingApplicationEntityTitle"),
        called_ae_title=meta_text("ReceivingApplicationEntityTitle"),
        peer_address=None,
        association_id=None,
        received_at=dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC),
        source=Source.RECONCILIATION,
    )
    placement = _placement(recorder, path)
    archived = Archived(path, recorder.archive.relative(path), placement, stat.st_size)
    duplicate = placement is Placement.DUPLICATE
    record = None if duplicate else recorder.decode(ds, error, origin, uid)
    return recorder.receipt(
        origin=origin, uid=uid, sop_class_uid=meta_text("MediaStorageSOPClassUID"),
        transfer_syntax_uid=meta_text("TransferSyntaxUID"), archived=archived,
        size=stat.st_size, record=record, ds=ds, duplicate=duplicate,
    )


def reconcile(engine: Engine, recorder: Recorder, batch: int = 256) -> int:
    """Record every archived file that has no record; return how many were recorded."""
    removed = recorder.archive.remove_partials()
    if removed:
        log.info("removed interrupted writes", extra={"fields": {"files": removed}})
    with Session(engine) as session:
        known = recorded_archive_paths(session)
    missing = [p for p in recorder.archive.files() if recorder.archive.relative(p) not in known]
    done = 0
    for start in range(0, len(missing), batch):
        receipts = []
        for path in missing[start:start + batch]:
            receipt = receipt_for_file(recorder, path)
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
