"""Consoles in the audit database (docs/contract.md section 6): a console's row and state, its
history as added records (:class:`node.audit.models.ConsoleEvent`), each decision's check
(:class:`node.audit.models.ConsoleCheck`), and what ``sro-decoder consoles`` reads."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, insert, select, update
from sqlalchemy.orm import Session

from model.consoles import ConsoleIdentity, ConsoleState, Established, EventKind, pairs_text
from model.decision import Check
from node.audit.models import Console, ConsoleCheck, ConsoleEvent, DecisionRecord, utcnow


def console_row(conn: Connection, identity: ConsoleIdentity, now: dt.datetime
                ) -> tuple[int, ConsoleState]:
    """The console's id and state, its row added when first seen (in the caller's
    transaction)."""
    table: Any = Console.__table__
    hit = conn.execute(select(table.c.id, table.c.state_json).where(
        table.c.key == identity.key)).first()
    if hit is not None:
        return int(hit[0]), ConsoleState.from_dict(json.loads(hit[1]))
    key = conn.execute(insert(table), {
        "key": identity.key, "calling_ae_title": identity.calling_ae_title,
        "station_name": identity.station_name, "manufacturer": identity.manufacturer,
        "manufacturer_model_name": identity.manufacturer_model_name,
        "first_seen_at": now, "last_seen_at": now,
        "state_json": json.dumps(ConsoleState().as_dict())}).inserted_primary_key
    assert key is not None
    return int(key[0]), ConsoleState()


def save_state(conn: Connection, console_id: int, state: ConsoleState, now: dt.datetime,
               *, seen: bool = True) -> None:
    table: Any = Console.__table__
    values: dict[str, Any] = {"state_json": json.dumps(state.as_dict())}
    if seen:
        values["last_seen_at"] = now
    conn.execute(update(table).where(table.c.id == console_id).values(**values))


def add_event(conn: Connection, console_id: int, kind: EventKind, est: Established | None,
              now: dt.datetime, *, by: str | None = None, note: str | None = None,
              sop_instance_uid: str | None = None) -> None:
    """An added record of the console's history."""
    events: Any = ConsoleEvent.__table__
    conn.execute(insert(events), {
        "console_id": console_id, "kind": kind.value,
        "pairs": None if est is None else ",".join(str(p) for p in sorted(est.pairs))[:160],
        "how": None if est is None else est.how.value, "by": by, "note": note, "at": now,
        "sop_instance_uid": sop_instance_uid})


def add_check(conn: Connection, console_id: int, decision_id: int, check: Check,
              now: dt.datetime) -> None:
    checks: Any = ConsoleCheck.__table__
    conn.execute(insert(checks), {
        "console_id": console_id, "decision_id": decision_id, "result": check.result.value,
        "sentence": check.sentence, "checked_at": now})


def current_decision_id(conn: Connection, object_id: int) -> int | None:
    d: Any = DecisionRecord.__table__
    return conn.execute(select(d.c.id).where(d.c.object_id == object_id,
                                             d.c.superseded_by_id.is_(None))
                        .order_by(d.c.id.desc()).limit(1)).scalar()


def console_of_object(conn: Connection, object_id: int) -> int | None:
    """The console an object's earlier decision was checked against (an SRO decided again when
    its companion arrives, docs/contract.md section 1)."""
    d: Any = DecisionRecord.__table__
    c: Any = ConsoleCheck.__table__
    return conn.execute(select(c.c.console_id).join(d, d.c.id == c.c.decision_id)
                        .where(d.c.object_id == object_id).order_by(c.c.id.desc())
                        .limit(1)).scalar()


# ---------------------------------------------------------------------------------------------
# What `sro-decoder consoles` reads and adds


@dataclass(frozen=True, slots=True)
class ConsoleSummary:
    """One line of ``consoles list``."""

    id: int
    identity: ConsoleIdentity
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    state: ConsoleState
    decisions_30d: int
    flagged_30d: int
    changed_30d: int

    @property
    def established_text(self) -> str:
        est = self.state.established
        if est is None:
            return f"(learning: {self.state.streak} confident)"
        return pairs_text(est.pairs)


def _identity(c: Console) -> ConsoleIdentity:
    return ConsoleIdentity(c.calling_ae_title, c.station_name, c.manufacturer,
                           c.manufacturer_model_name)


def list_consoles(session: Session, now: dt.datetime | None = None) -> list[ConsoleSummary]:
    now = now or utcnow()
    since = now - dt.timedelta(days=30)
    counts: dict[int, tuple[int, int, int]] = {}
    for cid, n, flagged, changed in session.execute(
            select(ConsoleCheck.console_id, func.count(),
                   func.sum(case((DecisionRecord.flagged.is_(True), 1), else_=0)),
                   func.sum(case((ConsoleCheck.result == "changed", 1), else_=0)))
            .join(DecisionRecord, DecisionRecord.id == ConsoleCheck.decision_id)
            .where(ConsoleCheck.checked_at >= since).group_by(ConsoleCheck.console_id)):
        counts[int(cid)] = (int(n or 0), int(flagged or 0), int(changed or 0))
    out = []
    for c in session.scalars(select(Console).order_by(Console.last_seen_at.desc(), Console.id)):
        n, f, ch = counts.get(c.id, (0, 0, 0))
        out.append(ConsoleSummary(c.id, _identity(c), c.first_seen_at, c.last_seen_at,
                                  ConsoleState.from_dict(json.loads(c.state_json)), n, f, ch))
    return out


def find_console(session: Session, name: str) -> list[Console]:
    """Consoles named by id, key, station name or calling AE title (exact)."""
    if name.isdigit():
        hit = session.get(Console, int(name))
        if hit is not None:
            return [hit]
    return list(session.scalars(select(Console).where(
        (Console.key == name) | (Console.station_name == name)
        | (Console.calling_ae_title == name)).order_by(Console.id)))


def console_history(session: Session, console_id: int) -> list[ConsoleEvent]:
    return list(session.scalars(select(ConsoleEvent).where(ConsoleEvent.console_id == console_id)
                                .order_by(ConsoleEvent.id)))


def recent_checks(session: Session, console_id: int, limit: int = 20
                  ) -> list[tuple[ConsoleCheck, DecisionRecord]]:
    rows = session.execute(select(ConsoleCheck, DecisionRecord)
                           .join(DecisionRecord, DecisionRecord.id == ConsoleCheck.decision_id)
                           .where(ConsoleCheck.console_id == console_id)
                           .order_by(ConsoleCheck.id.desc()).limit(limit)).all()
    return [(c, d) for c, d in rows]


def commission(session: Session, console: Console, est_pairs: Any, by: str,
               note: str | None) -> ConsoleState:
    """A person establishes the console's (order, direction) pairs: an added record, and the
    state the next decisions are checked against (a commissioned convention wins over a
    learned one, and clears ``changed``)."""
    conn = session.connection()
    now = utcnow()
    state = ConsoleState.from_dict(json.loads(console.state_json)).commissioned(
        frozenset(est_pairs), by, note)
    save_state(conn, console.id, state, now, seen=False)
    add_event(conn, console.id, EventKind.COMMISSIONED, state.established, now, by=by, note=note)
    return state


def decommission(session: Session, console: Console, by: str, note: str | None) -> ConsoleState:
    conn = session.connection()
    now = utcnow()
    state = ConsoleState.from_dict(json.loads(console.state_json)).decommissioned()
    save_state(conn, console.id, state, now, seen=False)
    add_event(conn, console.id, EventKind.DECOMMISSIONED, None, now, by=by, note=note)
    return state
