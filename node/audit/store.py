"""Opening the audit database, migrating it, and the functions that write and read it.

One engine per process (:func:`open_database`), built from the settings in ``main()``. SQLite runs
in WAL mode with ``synchronous=FULL``, so a commit is on disk when it returns; PostgreSQL works the
same through its URL. Writes of received objects go through the group-commit writer
(:mod:`node.audit.writer`), which calls :func:`record_receipts` for a batch in one transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, selectinload

from model.decision import DecodeRecord
from node.audit.models import Acknowledgement, AlertOutbox, DecisionRecord, ReceivedObject, utcnow
from node.records import AlertState, Placement, Receipt, Recorded

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def open_database(url: str, *, migrate_schema: bool = True, sqlite_synchronous: str = "FULL"
                  ) -> Engine:
    """The process's one engine for ``url``, migrated to the newest schema.

    ``sqlite_synchronous`` is SQLite's ``PRAGMA synchronous``: ``FULL`` (default) makes every
    commit survive a power cut; ``NORMAL`` (WAL) survives a killed process but may lose the last
    commits on a power cut, which start-up reconciliation then re-records from the (always
    fsynced) archive; acknowledgements and alert states of those last moments would be lost.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        mode = sqlite_synchronous.upper()

        def pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={mode}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        event.listen(engine, "connect", pragmas)
    if migrate_schema:
        migrate(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (run at every start-up)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


# ---------------------------------------------------------------------------------------------
# Writing receipts


def find_primary(session: Session, sop_instance_uid: str) -> ReceivedObject | None:
    """The recorded first receipt of this UID (with its decision), if any."""
    return session.scalars(
        select(ReceivedObject)
        .where(
            ReceivedObject.sop_instance_uid == sop_instance_uid,
            ReceivedObject.duplicate_of_id.is_(None),
            ReceivedObject.placement == Placement.PRIMARY.value,
        )
        .order_by(ReceivedObject.id)
        .limit(1)
    ).first()


def _convention_text(record: DecodeRecord) -> str | None:
    if record.convention is None:
        return None
    c = record.convention
    return f"{c.order.value}/{'inverse' if c.inverse else 'direct'}/{c.patient_position.value}"


def record_receipts(target: Session | Connection, receipts: Sequence[Receipt], *,
                    check_recorded: bool = True) -> list[Recorded]:
    """Add the receipts in ``target``'s transaction (the caller commits); duplicates point to
    their first copy.

    A receipt marked ``duplicate`` whose first copy is not recorded yet (its earlier recording
    failed) records the first copy's decision with it, so nothing stays unrecorded. The rows are
    written with SQLAlchemy Core statements (one ``INSERT`` per row, built once and compiled
    once), not ORM objects: this runs once per received object, on the path to its
    acknowledgement. With ``check_recorded`` an archive path recorded already (two paths raced
    to record one file) gets that record back; without it such a receipt fails on the unique
    archive path (:class:`sqlalchemy.exc.IntegrityError`) and the caller retries with it.
    """
    conn = target.connection() if isinstance(target, Session) else target
    objects, decisions = ReceivedObject.__table__, DecisionRecord.__table__
    now = utcnow()
    out: list[Recorded] = []
    paths = [r.archive_path for r in receipts if r.archive_path is not None and not r.duplicate]
    done: dict[str, Recorded] = {}
    if paths and check_recorded:
        for hit in conn.execute(
            select(objects.c.id, objects.c.archive_path, objects.c.duplicate_of_id,
                   objects.c.status, decisions.c.id)
            .outerjoin(decisions, decisions.c.object_id == objects.c.id)
            .where(objects.c.archive_path.in_(set(paths)))
        ):
            done[hit[1]] = Recorded(hit[0], hit[4], hit[2], hit[3], False)
    for r in receipts:
        if r.archive_path is not None and not r.duplicate and r.archive_path in done:
            out.append(done[r.archive_path])
            continue
        row: dict[str, Any] = {
            "sop_instance_uid": r.sop_instance_uid,
            "sop_class_uid": r.sop_class_uid,
            "transfer_syntax_uid": r.transfer_syntax_uid,
            "archive_path": r.archive_path,
            "placement": r.placement.value,
            "size_bytes": r.size_bytes,
            "calling_ae_title": r.calling_ae_title,
            "called_ae_title": r.called_ae_title,
            "peer_address": r.peer_address,
            "association_id": r.association_id,
            "source": r.source.value,
            "status": r.status,
            "received_at": r.received_at,
            "recorded_at": now,
            "duplicate_of_id": None,
        }
        primary = None
        if r.duplicate and r.sop_instance_uid is not None:
            primary = conn.execute(
                select(objects.c.id, objects.c.status)
                .where(objects.c.sop_instance_uid == r.sop_instance_uid,
                       objects.c.duplicate_of_id.is_(None),
                       objects.c.placement == Placement.PRIMARY.value)
                .order_by(objects.c.id)
                .limit(1)
            ).first()
        if primary is not None:
            row.update(duplicate_of_id=primary[0], status=primary[1])
            object_id = _insert(conn, objects, row)
            out.append(Recorded(object_id, None, primary[0], primary[1], False))
            continue
        if r.record is None:
            raise ValueError(
                f"receipt of {r.sop_instance_uid} has no decision and no recorded first copy"
            )
        object_id = _insert(conn, objects, row)
        decision_id = _insert(conn, decisions, _decision_row(
            object_id, r.sop_instance_uid, r.record, r.extra, now, r.calling_ae_title))
        queued = False
        if r.alert is not None:
            _insert(conn, AlertOutbox.__table__, {
                "decision_id": decision_id,
                "recipients": ",".join(r.alert.recipients),
                "subject": r.alert.subject,
                "body": r.alert.body,
                "state": AlertState.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
                "last_error": None,
                "sent_at": None,
            })
            queued = True
        recorded = Recorded(object_id, decision_id, None, r.status, queued)
        if r.archive_path is not None and not r.duplicate:
            done[r.archive_path] = recorded
        out.append(recorded)
    return out


@functools.cache
def _insert_statement(table: Any) -> Any:
    """One ``INSERT`` statement object per table, so its cache key and compiled SQL are reused."""
    return insert(table)


def _insert(conn: Connection, table: Any, row: dict[str, Any]) -> int:
    """Insert one row and return its primary key."""
    key = conn.execute(_insert_statement(table), row).inserted_primary_key
    assert key is not None
    return int(key[0])


def _decision_row(
    object_id: int, object_uid: str | None, record: DecodeRecord, extra: dict[str, Any],
    now: dt.datetime, calling_ae_title: str | None = None,
) -> dict[str, Any]:
    data = record.as_dict()
    data.update(extra)
    return {
        "object_id": object_id,
        "sop_instance_uid": record.sop_instance_uid or object_uid,
        "decision": record.decision.value,
        "flagged": record.flagged,
        "reason_code": None if record.reason_code is None else record.reason_code.value,
        "reason": record.reason,
        "convention": _convention_text(record),
        "probability": record.probability,
        "energy": record.energy,
        "model_name": record.model.name,
        "model_version": record.model.version,
        "model_sha256": record.model.sha256,
        "record_json": json.dumps(data),
        "decided_at": now,
        "console": console_of(record, calling_ae_title),
    }


def console_of(record: DecodeRecord, calling_ae_title: str | None) -> str | None:
    """The console a decision is listed under: the offset's console text (docs/contract.md
    section 1.7), else the calling AE title; at most 64 characters."""
    console = (record.offset.console if record.offset is not None else None) or calling_ae_title
    return None if not console else console[:64]


def recorded_archive_paths(session: Session) -> set[str]:
    return {p for p in session.scalars(select(ReceivedObject.archive_path)) if p is not None}


# ---------------------------------------------------------------------------------------------
# Reading and acknowledging


def query_decisions(
    session: Session,
    *,
    flagged: bool | None = None,
    decision: str | None = None,
    since: dt.datetime | None = None,
    sop_instance_uid: str | None = None,
    unacknowledged: bool = False,
) -> list[DecisionRecord]:
    """Decision records (with object, acknowledgements and alerts loaded), oldest first;
    ``unacknowledged``: only those no one has acknowledged yet."""
    stmt = (
        select(DecisionRecord)
        .join(DecisionRecord.received_object)
        .options(
            selectinload(DecisionRecord.received_object),
            selectinload(DecisionRecord.acknowledgements),
            selectinload(DecisionRecord.alerts),
        )
        .order_by(ReceivedObject.received_at, DecisionRecord.id)
    )
    if flagged is not None:
        stmt = stmt.where(DecisionRecord.flagged.is_(flagged))
    if decision is not None:
        stmt = stmt.where(DecisionRecord.decision == decision)
    if since is not None:
        stmt = stmt.where(ReceivedObject.received_at >= since)
    if sop_instance_uid is not None:
        stmt = stmt.where(DecisionRecord.sop_instance_uid == sop_instance_uid)
    if unacknowledged:
        stmt = stmt.where(~DecisionRecord.acknowledgements.any())
    return list(session.scalars(stmt))


def duplicates_of(session: Session, object_id: int) -> list[ReceivedObject]:
    return list(session.scalars(
        select(ReceivedObject).where(ReceivedObject.duplicate_of_id == object_id)
        .order_by(ReceivedObject.id)
    ))


def duplicate_counts(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(ReceivedObject.duplicate_of_id, func.count())
        .where(ReceivedObject.duplicate_of_id.is_not(None))
        .group_by(ReceivedObject.duplicate_of_id)
    )
    return {int(k): int(n) for k, n in rows if k is not None}


def alert_state(decision: DecisionRecord) -> AlertState:
    """``NONE`` (not flagged), ``FAILED`` (an e-mail that can never be sent), ``PENDING``
    (queued, not all sent yet) or ``SENT``."""
    if not decision.alerts:
        return AlertState.NONE
    if any(a.state == AlertState.FAILED.value for a in decision.alerts):
        return AlertState.FAILED
    if all(a.state == AlertState.SENT.value for a in decision.alerts):
        return AlertState.SENT
    return AlertState.PENDING


def acknowledge(
    session: Session, decision: DecisionRecord, by: str, note: str | None,
    user_id: int | None = None,
) -> Acknowledgement:
    """Add an acknowledgement (``user_id``: the logged-in user's, on the web or the API)."""
    ack = Acknowledgement(
        decision_id=decision.id, acknowledged_by=by, note=note, acknowledged_at=utcnow(),
        user_id=user_id,
    )
    session.add(ack)
    return ack


def export_record(decision: DecisionRecord, duplicates: int = 0) -> dict[str, Any]:
    """SPEC section 5 record plus the node's fields (received time, calling AE, alert, acks)."""
    obj = decision.received_object
    data: dict[str, Any] = json.loads(decision.record_json)
    data.update({
        "received_at": obj.received_at.isoformat(),
        "calling_ae_title": obj.calling_ae_title,
        "called_ae_title": obj.called_ae_title,
        "peer_address": obj.peer_address,
        "association_id": obj.association_id,
        "archive_path": obj.archive_path,
        "source": obj.source,
        "dimse_status": obj.status,
        "duplicates": duplicates,
        "flagged": decision.flagged,
        "console": decision.console,
        "alert_state": alert_state(decision).value,
        "acknowledgements": [
            {"by": a.acknowledged_by, "note": a.note, "at": a.acknowledged_at.isoformat()}
            for a in decision.acknowledgements
        ],
    })
    return data


# ---------------------------------------------------------------------------------------------
# The alert outbox


def due_alerts(session: Session, now: dt.datetime, limit: int = 50, *,
               addressed_only: bool = False) -> list[AlertOutbox]:
    """Pending alerts due at ``now``, oldest first; with ``addressed_only`` only those queued
    with recipients (when none are configured the others cannot be sent yet)."""
    stmt = (
        select(AlertOutbox)
        .where(AlertOutbox.state == AlertState.PENDING.value, AlertOutbox.next_attempt_at <= now)
        .order_by(AlertOutbox.id)
        .limit(limit)
    )
    if addressed_only:
        stmt = stmt.where(AlertOutbox.recipients != "")
    return list(session.scalars(stmt))


def next_alert_time(session: Session, *, addressed_only: bool = False) -> dt.datetime | None:
    stmt = select(func.min(AlertOutbox.next_attempt_at)).where(
        AlertOutbox.state == AlertState.PENDING.value)
    if addressed_only:
        stmt = stmt.where(AlertOutbox.recipients != "")
    return session.scalar(stmt)


def unaddressed_alerts(session: Session) -> int:
    """How many pending alerts were queued without recipients."""
    return int(session.scalar(
        select(func.count()).select_from(AlertOutbox)
        .where(AlertOutbox.state == AlertState.PENDING.value, AlertOutbox.recipients == "")
    ) or 0)
