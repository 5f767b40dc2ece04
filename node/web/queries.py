"""The reads behind the pages and the REST API: filtered, paged decision records, the
dashboard's counts, the consoles seen. Indexed columns only, so a page of 100,000 records
answers quickly (bench/bench_web.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Select, cast, func, select
from sqlalchemy.orm import Session, selectinload

from node.audit.models import AlertOutbox, DecisionRecord, ReceivedObject
from node.records import AlertState

DECISIONS = ("confident", "ambiguous", "out_of_distribution", "invalid", "no_offset")
PAGE_MAX = 500


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """The filters of the list page and of ``GET /api/v1/records``."""

    flagged: bool | None = None
    unacknowledged: bool = False
    decision: str | None = None
    console: str | None = None
    calling_ae_title: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    sop_instance_uid: str | None = None
    #: also the decisions a later one superseded (a paired SRO's earlier ``no_offset``)
    history: bool = False

    def apply(self, stmt: Select[Any]) -> Select[Any]:
        if not self.history:
            stmt = stmt.where(DecisionRecord.superseded_by_id.is_(None))
        if self.flagged is not None:
            stmt = stmt.where(DecisionRecord.flagged.is_(self.flagged))
        if self.unacknowledged:
            stmt = stmt.where(~DecisionRecord.acknowledgements.any())
        if self.decision:
            stmt = stmt.where(DecisionRecord.decision == self.decision)
        if self.console:
            stmt = stmt.where(DecisionRecord.console == self.console)
        if self.calling_ae_title:
            stmt = stmt.where(ReceivedObject.calling_ae_title == self.calling_ae_title)
        if self.since is not None:
            stmt = stmt.where(ReceivedObject.received_at >= self.since)
        if self.until is not None:
            stmt = stmt.where(ReceivedObject.received_at < self.until)
        if self.sop_instance_uid:
            stmt = stmt.where(DecisionRecord.sop_instance_uid == self.sop_instance_uid)
        return stmt


def page_of_records(session: Session, where: RecordFilter, *, limit: int = 50,
                    offset: int = 0) -> tuple[list[DecisionRecord], int]:
    """One page of decision records, the last recorded first, and how many match in all.

    Ordered by the record's id (the order of recording, an index walk) rather than the received
    time of the joined object (a sort of every match); the object is joined only when a filter
    needs it (every decision has its one object, so the count is the same)."""
    joined = where.calling_ae_title is not None or where.since is not None \
        or where.until is not None
    base = select(DecisionRecord)
    count = select(func.count()).select_from(DecisionRecord)
    if joined:
        base = base.join(DecisionRecord.received_object)
        count = count.join(DecisionRecord.received_object)
    stmt = (where.apply(base)
            .options(selectinload(DecisionRecord.received_object),
                     selectinload(DecisionRecord.acknowledgements),
                     selectinload(DecisionRecord.alerts))
            .order_by(DecisionRecord.id.desc())
            .limit(max(1, min(limit, PAGE_MAX))).offset(max(0, offset)))
    total = session.scalar(where.apply(count))
    return list(session.scalars(stmt)), int(total or 0)


def record_by_id(session: Session, ident: int) -> DecisionRecord | None:
    return session.scalars(
        select(DecisionRecord).where(DecisionRecord.id == ident)
        .options(selectinload(DecisionRecord.received_object),
                 selectinload(DecisionRecord.acknowledgements),
                 selectinload(DecisionRecord.alerts))).first()


#: Grouping and "not superseded" as expressions, not bare columns: SQLite's planner (no
#: statistics for a range bound given as a parameter) would otherwise walk the whole table in
#: the order of the grouped column's index, or through the index of ``superseded_by_id``
#: (null for nearly every row), rather than the few rows since ``since`` through
#: ``decided_at``'s index: 60-110 ms against 1-10 ms for a day or a week of 100,000 records.
_CURRENT = func.coalesce(DecisionRecord.superseded_by_id, 0) == 0


def counts_by_decision(session: Session, since: dt.datetime) -> dict[str, int]:
    """Decisions made since ``since``, by kind (by the decision's time: no join)."""
    kind = func.coalesce(DecisionRecord.decision, "")
    rows = session.execute(
        select(kind, func.count())
        .where(DecisionRecord.decided_at >= since, _CURRENT)
        .group_by(kind))
    return {str(d): int(n) for d, n in rows}


def flagged_unacknowledged(session: Session) -> int:
    return int(session.scalar(
        select(func.count()).select_from(DecisionRecord)
        .where(DecisionRecord.flagged.is_(True), ~DecisionRecord.acknowledgements.any(),
               DecisionRecord.superseded_by_id.is_(None))) or 0)


@dataclass(frozen=True, slots=True)
class ConsoleSeen:
    console: str
    objects: int
    flagged: int
    last_received_at: dt.datetime  # the last decision's time


def consoles_seen(session: Session, since: dt.datetime | None = None) -> list[ConsoleSeen]:
    """Each console (docs/contract.md section 1.7's text, else the calling AE) that sent."""
    name = func.coalesce(DecisionRecord.console, "")  # an expression: see _CURRENT
    stmt = (select(name, func.count(),
                   func.sum(cast(DecisionRecord.flagged, Integer)),
                   func.max(DecisionRecord.decided_at))
            .where(name != "")
            .group_by(name).order_by(name))
    if since is not None:
        stmt = stmt.where(DecisionRecord.decided_at >= since)
    out = []
    for console, n, flagged, last in session.execute(stmt):
        if isinstance(last, str):  # func.max over the type decorator comes back as text
            last = dt.datetime.fromisoformat(last)
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        out.append(ConsoleSeen(str(console), int(n), int(flagged or 0), last))
    return out


def outbox_state(session: Session, now: dt.datetime) -> tuple[int, float | None]:
    """Unsent alerts (pending) and the age in seconds of the oldest."""
    n, oldest = session.execute(
        select(func.count(), func.min(AlertOutbox.created_at))
        .where(AlertOutbox.state == AlertState.PENDING.value)).one()
    if oldest is None:
        return int(n), None
    if isinstance(oldest, str):
        oldest = dt.datetime.fromisoformat(oldest)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return int(n), max(0.0, (now - oldest).total_seconds())
