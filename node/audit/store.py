"""Opening the audit database, migrating it, and the functions that write and read it.

One engine per process (:func:`open_database`), built from the settings in ``main()``. SQLite runs
in WAL mode with ``synchronous=FULL``, so a commit is on disk when it returns; PostgreSQL works the
same through its URL. Writes of received objects go through the group-commit writer
(:mod:`node.audit.writer`), which calls :func:`record_receipts` for a batch in one transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, aliased, object_session, selectinload

from model.decision import DecodeRecord
from model.dicom.statuses import status_for
from node.audit.models import (
    FIRST_COPY,
    Acknowledgement,
    AlertOutbox,
    CompanionPairing,
    DecisionRecord,
    ReceivedObject,
    utcnow,
)
from node.records import (
    AlertMessage,
    AlertState,
    PairingConflict,
    PairingLink,
    PairingRole,
    PairingStatus,
    Placement,
    Receipt,
    Recorded,
)

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


#: the key of the PostgreSQL advisory lock the migrations run under (any fixed 64-bit number)
MIGRATION_LOCK = 0x5352_4F5F_4D49_4752  # "SRO_MIGR"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (run at every start-up), under a lock so
    that nodes starting at the same moment migrate one after the other: PostgreSQL's
    transaction-level advisory lock (``pg_advisory_xact_lock``, released at commit; the DDL is
    transactional, so the next node finds the schema at head), a file lock beside a SQLite file.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _migration_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


@contextlib.contextmanager
def _migration_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive ``flock`` on ``<database>.migrate.lock`` for a SQLite file; nothing else."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    done: dict[tuple[str, str], Recorded] = {}
    if paths and check_recorded:
        for hit in conn.execute(
            select(objects.c.id, objects.c.node, objects.c.archive_path,
                   objects.c.duplicate_of_id, objects.c.status, decisions.c.id)
            .outerjoin(decisions, (decisions.c.object_id == objects.c.id)
                       & decisions.c.superseded_by_id.is_(None))
            .where(objects.c.archive_path.in_(set(paths)),
                   objects.c.node.in_({r.node for r in receipts}))
        ):
            done[(hit[1], hit[2])] = Recorded(hit[0], hit[5], hit[3], hit[4], False)
    for r in receipts:
        key = (r.node, r.archive_path or "")
        if r.archive_path is not None and not r.duplicate and key in done:
            out.append(done[key])
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
            "node": r.node,
            "content_sha256": r.content_sha256,
            "conflict": False,
            **_pairing_columns(r),
        }
        primary = None
        if r.duplicate and r.sop_instance_uid is not None:
            primary = _first_copy(conn, r.sop_instance_uid)
        object_id = None
        if primary is None and r.record is not None and r.sop_instance_uid is not None \
                and r.placement is Placement.PRIMARY:
            # the database decides which copy is the first (a unique partial index): a copy
            # another node (or association) recorded first makes this one a duplicate
            object_id = conn.execute(_first_copy_insert(conn.dialect.name), row).scalar()
            if object_id is None:
                primary = _first_copy(conn, r.sop_instance_uid)
                if primary is None:  # it went again in between (purged): record it later
                    raise ValueError(f"first copy of {r.sop_instance_uid} recorded and gone")
                row.update(_pairing_columns(replace(r, duplicate=True)))
        if primary is not None:
            out.append(_record_copy(conn, r, row, primary, now))
            continue
        if r.record is None:
            raise ValueError(
                f"receipt of {r.sop_instance_uid} has no decision and no recorded first copy"
            )
        if object_id is None:
            object_id = _insert(conn, objects, row)
        decision_id = _insert(conn, decisions, _decision_row(
            object_id, r.sop_instance_uid, r.record, r.extra, now, r.calling_ae_title))
        queued = _queue_alert(conn, decision_id, r.alert, now)
        if r.sro_updates or r.companion_updates or r.links:
            queued = _apply_pairing(conn, r, object_id, decision_id, now) or queued
        recorded = Recorded(object_id, decision_id, None, r.status, queued)
        if r.archive_path is not None and not r.duplicate:
            done[key] = recorded
        out.append(recorded)
    return out


def _first_copy(conn: Connection, sop_instance_uid: str) -> Any:
    """The recorded first copy of a UID: its id, C-STORE status and data-set SHA-256."""
    objects = ReceivedObject.__table__
    return conn.execute(
        select(objects.c.id, objects.c.status, objects.c.content_sha256)
        .where(objects.c.sop_instance_uid == sop_instance_uid,
               objects.c.duplicate_of_id.is_(None),
               objects.c.placement == Placement.PRIMARY.value)
        .order_by(objects.c.id)
        .limit(1)
    ).first()


@functools.cache
def _first_copy_insert(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (sop_instance_uid) WHERE <first copy> DO NOTHING RETURNING id``
    (SQLite 3.35+, PostgreSQL): the new id, or nothing when a first copy is recorded."""
    table: Any = ReceivedObject.__table__
    module: Any = sqlite_dialect if dialect == "sqlite" else postgresql_dialect
    return (module.insert(table)
            .on_conflict_do_nothing(index_elements=[table.c.sop_instance_uid],
                                    index_where=text(FIRST_COPY))
            .returning(table.c.id))


def _record_copy(conn: Connection, r: Receipt, row: dict[str, Any], primary: Any,
                 now: dt.datetime) -> Recorded:
    """Record ``r`` as a copy of ``primary``: a duplicate answered as the first was, or, when
    both data sets' SHA-256 are known and differ, a conflict with its own flagged decision
    (``r.conflict_record``) and alert."""
    first_id, first_status, first_sha = primary
    conflict = (r.conflict_record is not None and r.content_sha256 is not None
                and first_sha is not None and r.content_sha256 != first_sha)
    if not conflict or r.conflict_record is None:
        row.update(duplicate_of_id=first_id, status=first_status)
        object_id = _insert(conn, ReceivedObject.__table__, row)
        return Recorded(object_id, None, first_id, first_status, False)
    record = replace(r.conflict_record, reason=(
        f"{r.conflict_record.reason} (SHA-256 {r.content_sha256}; the first copy's "
        f"{first_sha})"))
    status = int(status_for(record))
    row.update(duplicate_of_id=first_id, status=status, conflict=True)
    object_id = _insert(conn, ReceivedObject.__table__, row)
    decision_id = _insert(conn, DecisionRecord.__table__, _decision_row(
        object_id, r.sop_instance_uid, record, r.extra, now, r.calling_ae_title))
    queued = _queue_alert(conn, decision_id, None if r.compose is None else r.compose(record),
                          now)
    return Recorded(object_id, decision_id, first_id, status, queued)


def _queue_alert(conn: Connection, decision_id: int, alert: AlertMessage | None,
                 now: dt.datetime) -> bool:
    """Queue ``alert`` in the outbox for ``decision_id`` (in the caller's transaction)."""
    if alert is None:
        return False
    _insert(conn, AlertOutbox.__table__, {
        "decision_id": decision_id,
        "recipients": ",".join(alert.recipients),
        "subject": alert.subject,
        "body": alert.body,
        "state": AlertState.PENDING.value,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "last_error": None,
        "sent_at": None,
    })
    return True


def _pairing_columns(r: Receipt) -> dict[str, Any]:
    p = r.pairing
    if p is None or r.duplicate:
        return {"patient_id": None, "study_instance_uid": None, "registration_time": None,
                "pairing_role": None, "pairing_state": None}
    return {"patient_id": p.patient_id, "study_instance_uid": p.study_instance_uid,
            "registration_time": p.time, "pairing_role": p.role.value,
            "pairing_state": p.status.value}


def _apply_pairing(conn: Connection, r: Receipt, object_id: int, decision_id: int,
                   now: dt.datetime) -> bool:
    """Record what a receipt changes in the pairing of objects recorded earlier (docs/contract.md
    section 1), in the receipt's transaction: the new decisions of SROs (the earlier one marked
    superseded, kept), companions' states, the links. Each change is checked against the state
    it was planned from; a difference raises :class:`PairingConflict` (the transaction is rolled
    back and the receipt planned again). Returns whether an alert was queued."""
    objects: Any = ReceivedObject.__table__
    decisions: Any = DecisionRecord.__table__
    links = CompanionPairing.__table__
    queued = False

    def link_row(link: PairingLink, sro_decision_id: int | None) -> dict[str, Any]:
        return {"sro_object_id": link.sro_object_id or object_id,
                "companion_object_id": link.companion_object_id or object_id,
                "sro_decision_id": sro_decision_id if link.decided else None,
                "state": link.status.value, "seconds": link.seconds, "paired_at": now}

    for u in r.sro_updates:
        current = conn.execute(
            select(decisions.c.id).where(decisions.c.object_id == u.sro_object_id,
                                         decisions.c.superseded_by_id.is_(None))).scalars().all()
        if current != [u.supersedes_decision_id]:
            raise PairingConflict(f"SRO object {u.sro_object_id}: current decision {current}, "
                                  f"planned from {u.supersedes_decision_id}")
        new_id = _insert(conn, decisions, _decision_row(
            u.sro_object_id, u.sop_instance_uid, u.record, {}, now, u.calling_ae_title))
        conn.execute(update(decisions).where(decisions.c.id == u.supersedes_decision_id)
                     .values(superseded_by_id=new_id))
        conn.execute(update(objects).where(objects.c.id == u.sro_object_id)
                     .values(pairing_state=u.status.value))
        queued = _queue_alert(conn, new_id, u.alert, now) or queued
        for link in u.links:
            _insert(conn, links, link_row(link, new_id))
    for c in r.companion_updates:
        done = conn.execute(
            update(objects).where(objects.c.id == c.companion_object_id,
                                  objects.c.pairing_state == c.expected.value)
            .values(pairing_state=c.status.value))
        if done.rowcount != 1:
            raise PairingConflict(f"companion object {c.companion_object_id} is no longer "
                                  f"{c.expected.value}")
    for link in r.links:
        _insert(conn, links, link_row(link, decision_id))
    return queued


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


@dataclass(frozen=True, slots=True)
class PairingMember:
    """One recorded object of a patient's study that takes part in companion pairing, as
    :class:`node.ingest.pairing.Pairer` plans from it: its facts, its current decision and,
    for an SRO, the companions that decision was made from (or found competing for it)."""

    object_id: int
    sop_instance_uid: str
    role: PairingRole
    status: PairingStatus
    time: dt.datetime | None
    archive_path: str | None
    calling_ae_title: str | None
    decision_id: int | None
    companions: frozenset[int] = frozenset()


def pairing_group(target: Session | Connection, patient_id: str,
                  study_instance_uid: str) -> list[PairingMember]:
    """The objects of one Patient ID and Study Instance UID that pair (the candidates of
    docs/contract.md section 1: the database narrows, :func:`model.inputs.pairing.pair`
    decides), first receipts only, in the order recorded."""
    conn = target.connection() if isinstance(target, Session) else target
    objects: Any = ReceivedObject.__table__
    decisions: Any = DecisionRecord.__table__
    links: Any = CompanionPairing.__table__
    rows = conn.execute(
        select(objects.c.id, objects.c.sop_instance_uid, objects.c.pairing_role,
               objects.c.pairing_state, objects.c.registration_time, objects.c.archive_path,
               objects.c.calling_ae_title, decisions.c.id)
        .outerjoin(decisions, (decisions.c.object_id == objects.c.id)
                   & decisions.c.superseded_by_id.is_(None))
        .where(objects.c.patient_id == patient_id,
               objects.c.study_instance_uid == study_instance_uid,
               objects.c.pairing_role.is_not(None), objects.c.duplicate_of_id.is_(None),
               objects.c.sop_instance_uid.is_not(None))
        .order_by(objects.c.id)).all()
    decided: dict[int, set[int]] = {}
    ids = [r[7] for r in rows if r[7] is not None and r[2] == PairingRole.SRO.value]
    if ids:
        for sro_decision, companion in conn.execute(
                select(links.c.sro_decision_id, links.c.companion_object_id)
                .where(links.c.sro_decision_id.in_(ids))):
            decided.setdefault(int(sro_decision), set()).add(int(companion))
    return [PairingMember(
        object_id=int(r[0]), sop_instance_uid=str(r[1]), role=PairingRole(r[2]),
        status=PairingStatus(r[3]), time=r[4], archive_path=r[5], calling_ae_title=r[6],
        decision_id=None if r[7] is None else int(r[7]),
        companions=frozenset(decided.get(int(r[7]), ())) if r[7] is not None else frozenset())
        for r in rows]


def recorded_archive_paths(session: Session, node: str = "") -> set[str]:
    """The archive paths recorded for ``node``'s archive (with those recorded before nodes had
    names, node '', when one node used the database)."""
    return {p for p in session.scalars(
        select(ReceivedObject.archive_path).where(ReceivedObject.node.in_({node, ""})))
        if p is not None}


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
    history: bool = False,
) -> list[DecisionRecord]:
    """Decision records (with object, acknowledgements and alerts loaded), oldest first;
    ``unacknowledged``: only those no one has acknowledged yet; ``history``: also the decisions
    a later one superseded (a paired SRO's earlier ``no_offset``), else current ones only."""
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
    if not history:
        stmt = stmt.where(DecisionRecord.superseded_by_id.is_(None))
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
    if all(a.state == AlertState.NOT_SENT.value for a in decision.alerts):
        return AlertState.NOT_SENT  # acknowledged before it was sent
    if all(a.state in (AlertState.SENT.value, AlertState.NOT_SENT.value)
           for a in decision.alerts):
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
    """The docs/contract.md section 5 record plus the node's fields (received time, calling AE,
    alert, acknowledgements)."""
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
    session = object_session(decision)
    if obj.pairing_role is not None and session is not None:
        data["pairing"] = pairing_of(session, decision)
    if decision.superseded_by_id is not None:
        data["superseded_by_decision_id"] = decision.superseded_by_id
    return data


def pairing_of(session: Session, decision: DecisionRecord) -> dict[str, Any]:
    """How a decision's object is paired (docs/contract.md section 1), both ways: an SRO's
    companion (the one its current decision's offset came from, or the competing ones), a
    companion's SRO; every link, oldest first; an SRO's earlier decisions (history)."""
    obj = decision.received_object
    sro_role = obj.pairing_role == PairingRole.SRO.value
    sro, comp = aliased(ReceivedObject), aliased(ReceivedObject)
    mine = (CompanionPairing.sro_object_id if sro_role
            else CompanionPairing.companion_object_id) == obj.id
    rows = session.execute(
        select(CompanionPairing, sro.sop_instance_uid, comp.sop_instance_uid)
        .join(sro, sro.id == CompanionPairing.sro_object_id)
        .join(comp, comp.id == CompanionPairing.companion_object_id)
        .where(mine).order_by(CompanionPairing.id)).all()
    links = [{"sro_sop_instance_uid": s, "companion_sop_instance_uid": c, "state": p.state,
              "seconds": p.seconds, "at": p.paired_at.isoformat(),
              "sro_decision_id": p.sro_decision_id} for p, s, c in rows]
    out: dict[str, Any] = {
        "role": obj.pairing_role, "state": obj.pairing_state,
        "registration_time": None if obj.registration_time is None
        else obj.registration_time.isoformat(),
        "links": links,
    }
    if sro_role:
        current = [x for x in links if x["sro_decision_id"] == decision.id]
        out["companion_sop_instance_uids"] = [x["companion_sop_instance_uid"] for x in current]
        out["earlier_decisions"] = [
            {"decision_id": d.id, "decision": d.decision, "reason": d.reason,
             "decided_at": d.decided_at.isoformat()}
            for d in session.scalars(select(DecisionRecord).where(
                DecisionRecord.object_id == obj.id, DecisionRecord.id != decision.id)
                .order_by(DecisionRecord.id))]
    else:
        last = [x for x in links if x["state"] == obj.pairing_state]
        out["sro_sop_instance_uids"] = sorted({x["sro_sop_instance_uid"] for x in last})
    return out


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


def claim_alerts(session: Session, node: str, token: str, now: dt.datetime,
                 lease: dt.timedelta, limit: int = 10, *, addressed_only: bool = False
                 ) -> list[int]:
    """Claim up to ``limit`` due alerts for one sender (``node``, its ``token``) until
    ``now + lease`` and commit; return their ids, oldest first.

    Several nodes may share the outbox: on PostgreSQL the candidates are locked with ``SELECT
    ... FOR UPDATE SKIP LOCKED`` (a row another sender is claiming is passed over, not waited
    for); on both each claim is a conditional ``UPDATE`` (pending, unclaimed or its claim
    expired), so two senders never hold one alert. A sender that dies leaves its claims to
    expire (or to be released when its node starts again, :func:`release_claims`)."""
    unclaimed = or_(AlertOutbox.claimed_until.is_(None), AlertOutbox.claimed_until < now)
    stmt = (
        select(AlertOutbox.id)
        .where(AlertOutbox.state == AlertState.PENDING.value,
               AlertOutbox.next_attempt_at <= now, unclaimed)
        .order_by(AlertOutbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if addressed_only:
        stmt = stmt.where(AlertOutbox.recipients != "")
    claimed: list[int] = []
    for alert_id in list(session.scalars(stmt)):
        done: Any = session.execute(
            update(AlertOutbox)
            .where(AlertOutbox.id == alert_id, AlertOutbox.state == AlertState.PENDING.value,
                   unclaimed)
            .values(claimed_by=node, claim_token=token, claimed_until=now + lease))
        if done.rowcount == 1:
            claimed.append(alert_id)
    session.commit()
    return claimed


def claim_rows(session: Session, rows: Sequence[AlertOutbox], node: str, token: str,
               now: dt.datetime, lease: dt.timedelta) -> list[AlertOutbox]:
    """Of ``rows`` (loaded in ``session``), those this sender holds: claimed by ``token``
    already, or claimed now (a digest's further rows); the others are another sender's.
    Does not commit."""
    unclaimed = or_(AlertOutbox.claimed_until.is_(None), AlertOutbox.claimed_until < now)
    held = []
    for row in rows:
        if row.claim_token == token:
            held.append(row)
            continue
        done: Any = session.execute(
            update(AlertOutbox)
            .where(AlertOutbox.id == row.id, AlertOutbox.state == AlertState.PENDING.value,
                   unclaimed)
            .values(claimed_by=node, claim_token=token, claimed_until=now + lease)
            .execution_options(synchronize_session=False))
        if done.rowcount == 1:
            row.claimed_by, row.claim_token, row.claimed_until = node, token, now + lease
            held.append(row)
    return held


def release_claims(session: Session, node: str) -> int:
    """Release the claims a sender of ``node`` left when its process ended (at start-up, before
    this node's sender runs); return how many. Commits."""
    done: Any = session.execute(
        update(AlertOutbox).where(AlertOutbox.claimed_by == node)
        .values(claimed_by=None, claim_token=None, claimed_until=None))
    session.commit()
    return int(done.rowcount or 0)


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


def kept_instances(session: Session, sop_instance_uids: Sequence[str]
                   ) -> dict[str, tuple[str | None, int]]:
    """Storage Commitment (PS3.4 Annex J): for each of ``sop_instance_uids`` archived under its
    own name and recorded with a decision, its SOP Class UID and the C-STORE status answered.
    Reads only."""
    found: dict[str, tuple[str | None, int]] = {}
    uids = sorted(set(sop_instance_uids))
    decided = select(DecisionRecord.id).where(DecisionRecord.object_id == ReceivedObject.id)
    for start in range(0, len(uids), 500):  # within SQLite's bound on bound parameters
        rows = session.execute(
            select(ReceivedObject.sop_instance_uid, ReceivedObject.sop_class_uid,
                   ReceivedObject.status)
            .where(ReceivedObject.sop_instance_uid.in_(uids[start:start + 500]),
                   ReceivedObject.placement == Placement.PRIMARY.value,
                   ReceivedObject.duplicate_of_id.is_(None),
                   ReceivedObject.archive_path.is_not(None), decided.exists()))
        for uid, sop_class, status in rows:
            if uid is not None:
                found[uid] = (sop_class, int(status))
    return found
