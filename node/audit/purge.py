"""Retention in the audit database: which recorded objects a purge may remove, and removing them.

The unit of a purge is a *group*: a first receipt with its duplicates and every object a
companion pairing links to it (docs/contract.md section 1), so that no link is left dangling:
a group goes whole or stays whole. A group may go when each of its objects was received and
recorded before the cutoff, its current decision is not flagged-and-unacknowledged, no alert of
any of its decisions is still pending, and its archived file is in this node's archive (an
object without a record is never seen here: start-up reconciliation records it first). Rows go
in one transaction per batch of groups, which first re-checks the batch (docs/conformance.md
section 3, Retention); the caller removes the files after the commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from sqlalchemy import Connection, delete, func, or_, select, update
from sqlalchemy.orm import Session

from node.audit.models import (
    Acknowledgement,
    AlertOutbox,
    CompanionPairing,
    ConsoleCheck,
    DecisionRecord,
    ReceivedObject,
)
from node.records import AlertState

#: ids per ``IN (...)``: within SQLite's bound on bound parameters
_CHUNK = 400


class Hold(str, Enum):
    """Why an object old enough to go stays (the purge report's ``kept`` counts)."""

    FLAGGED_UNACKNOWLEDGED = "flagged_unacknowledged"
    ALERT_PENDING = "alert_pending"
    NOT_IN_ARCHIVE = "not_in_archive"  # its file is not in this node's archive
    NOT_DECIDED = "not_decided"  # a first receipt without a decision: not wholly recorded
    LINKED = "linked"  # a duplicate or a pairing ties it to an object that stays


@dataclass(frozen=True, slots=True)
class Removed:
    """Rows (and files) a purge removes, or would remove."""

    objects: int = 0
    decisions: int = 0
    acknowledgements: int = 0
    alerts: int = 0
    pairings: int = 0
    console_checks: int = 0
    files: int = 0
    bytes: int = 0

    def __add__(self, other: Removed) -> Removed:
        return Removed(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Group:
    """Objects that go together, their archived files (relative path, bytes) and row counts."""

    object_ids: tuple[int, ...]
    files: tuple[tuple[str, int], ...]
    removed: Removed


@dataclass(frozen=True, slots=True)
class PurgePlan:
    groups: tuple[Group, ...]
    #: objects old enough that stay, by :class:`Hold` value
    kept: dict[str, int] = field(default_factory=dict)

    @property
    def removed(self) -> Removed:
        return sum((g.removed for g in self.groups), Removed())


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    items = sorted(set(ids))
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


@dataclass(slots=True)
class _Facts:
    """What the rule needs of some objects, read in the caller's transaction."""

    objects: dict[int, Any]  # id -> (duplicate_of_id, archive_path, size, received, recorded)
    decisions: dict[int, list[Any]]  # object id -> (id, superseded_by_id, flagged, acks)
    pending: set[int]  # decision ids with a pending alert
    alerts: dict[int, int]  # decision id -> outbox rows
    checks: dict[int, int]  # decision id -> console checks
    links: list[tuple[int, int, int]]  # (pairing id, SRO object id, companion object id)


def _facts(conn: Connection, ids: Iterable[int]) -> _Facts:
    o: Any = ReceivedObject.__table__
    d: Any = DecisionRecord.__table__
    a: Any = Acknowledgement.__table__
    out: Any = AlertOutbox.__table__
    c: Any = ConsoleCheck.__table__
    p: Any = CompanionPairing.__table__
    facts = _Facts({}, {}, set(), {}, {}, [])
    decision_ids: list[int] = []
    seen_links: set[int] = set()
    for chunk in _chunks(ids):
        for row in conn.execute(select(o.c.id, o.c.duplicate_of_id, o.c.archive_path,
                                       o.c.size_bytes, o.c.received_at, o.c.recorded_at)
                                .where(o.c.id.in_(chunk))):
            facts.objects[int(row[0])] = row[1:]
        acks = (select(func.count()).select_from(a).where(a.c.decision_id == d.c.id)
                .scalar_subquery())
        for dec in conn.execute(select(d.c.object_id, d.c.id, d.c.superseded_by_id,
                                       d.c.flagged, acks).where(d.c.object_id.in_(chunk))):
            facts.decisions.setdefault(int(dec[0]), []).append(dec[1:])
            decision_ids.append(int(dec[1]))
        for link in conn.execute(select(p.c.id, p.c.sro_object_id, p.c.companion_object_id)
                                 .where(or_(p.c.sro_object_id.in_(chunk),
                                            p.c.companion_object_id.in_(chunk)))):
            if int(link[0]) not in seen_links:
                seen_links.add(int(link[0]))
                facts.links.append((int(link[0]), int(link[1]), int(link[2])))
    for chunk in _chunks(decision_ids):
        for decision_id, state in conn.execute(select(out.c.decision_id, out.c.state)
                                               .where(out.c.decision_id.in_(chunk))):
            facts.alerts[int(decision_id)] = facts.alerts.get(int(decision_id), 0) + 1
            if state == AlertState.PENDING.value:
                facts.pending.add(int(decision_id))
        for decision_id, n in conn.execute(select(c.c.decision_id, func.count())
                                           .where(c.c.decision_id.in_(chunk))
                                           .group_by(c.c.decision_id)):
            facts.checks[int(decision_id)] = int(n)
    return facts


def _hold(facts: _Facts, object_id: int, in_archive: Callable[[str], bool]) -> Hold | None:
    """Why this object must stay whatever its age (``None``: it may go)."""
    duplicate_of, path, _, _, _ = facts.objects[object_id]
    decisions = facts.decisions.get(object_id, [])
    if duplicate_of is None and not decisions:
        return Hold.NOT_DECIDED
    current = [x for x in decisions if x[1] is None]
    if any(flagged and not acks for _, _, flagged, acks in current):
        return Hold.FLAGGED_UNACKNOWLEDGED
    if any(x[0] in facts.pending for x in decisions):
        return Hold.ALERT_PENDING
    if path is not None and not in_archive(path):
        return Hold.NOT_IN_ARCHIVE
    return None


def _old(facts: _Facts, object_id: int, cutoff: dt.datetime) -> bool:
    _, _, _, received, recorded = facts.objects[object_id]
    return bool(received < cutoff and recorded < cutoff)


def _group(facts: _Facts, ids: Sequence[int]) -> Group:
    members = set(ids)
    decisions = [x for i in ids for x in facts.decisions.get(i, [])]
    files = tuple((facts.objects[i][1], int(facts.objects[i][2])) for i in ids
                  if facts.objects[i][1] is not None)
    return Group(tuple(sorted(ids)), files, Removed(
        objects=len(ids), decisions=len(decisions),
        acknowledgements=sum(int(x[3]) for x in decisions),
        alerts=sum(facts.alerts.get(int(x[0]), 0) for x in decisions),
        pairings=sum(1 for _, s, c in facts.links if s in members or c in members),
        console_checks=sum(facts.checks.get(int(x[0]), 0) for x in decisions),
        files=len(files), bytes=sum(size for _, size in files)))


def plan_purge(target: Session | Connection, cutoff: dt.datetime,
               in_archive: Callable[[str], bool]) -> PurgePlan:
    """The groups a purge with this ``cutoff`` removes, and why the other old objects stay;
    ``in_archive``: whether a recorded relative archive path is a file of this node's archive.
    Reads only."""
    conn = target.connection() if isinstance(target, Session) else target
    o: Any = ReceivedObject.__table__
    p: Any = CompanionPairing.__table__
    seeds = [int(i) for i in conn.execute(select(o.c.id).where(
        o.c.received_at < cutoff, o.c.recorded_at < cutoff)).scalars()]
    if not seeds:
        return PurgePlan(())
    # groups: the duplicates and pairing links, joined (union-find)
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            parent[i] = parent.get(parent[i], parent[i])
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for i, first in conn.execute(select(o.c.id, o.c.duplicate_of_id)
                                 .where(o.c.duplicate_of_id.is_not(None))):
        join(int(i), int(first))
    for s, c in conn.execute(select(p.c.sro_object_id, p.c.companion_object_id)):
        join(int(s), int(c))
    wanted = {root(i) for i in seeds}
    members: dict[int, set[int]] = {}
    for i in [*seeds, *parent]:
        if root(i) in wanted:
            members.setdefault(root(i), set()).add(i)
    facts = _facts(conn, (i for ids in members.values() for i in ids))
    groups: list[Group] = []
    kept: dict[str, int] = {}
    for group_ids in members.values():
        ids = sorted(i for i in group_ids if i in facts.objects)
        holds = {i: _hold(facts, i, in_archive) for i in ids}
        if all(h is None and _old(facts, i, cutoff) for i, h in holds.items()):
            groups.append(_group(facts, ids))
            continue
        for i, h in holds.items():
            if _old(facts, i, cutoff):
                reason = (h or Hold.LINKED).value
                kept[reason] = kept.get(reason, 0) + 1
    groups.sort(key=lambda g: g.object_ids)
    return PurgePlan(tuple(groups), kept)


def remove_groups(conn: Connection, groups: Sequence[Group], cutoff: dt.datetime,
                  in_archive: Callable[[str], bool]) -> Removed | None:
    """Delete the rows of ``groups`` in ``conn``'s transaction (the caller commits, then
    removes the files). The objects' rows are locked first and the rule checked again: when
    anything changed since the plan (an object gone, a new link, duplicate, decision or
    pending alert), nothing is deleted and ``None`` returned (the caller rolls back).
    Foreign keys refuse a row added meanwhile that refers to a deleted one."""
    o: Any = ReceivedObject.__table__
    d: Any = DecisionRecord.__table__
    ids = sorted({i for g in groups for i in g.object_ids})
    planned = sum((g.removed for g in groups), Removed())
    for chunk in _chunks(ids):  # takes the write lock (SQLite) and the rows' locks
        conn.execute(update(o).where(o.c.id.in_(chunk)).values(placement=o.c.placement))
    facts = _facts(conn, ids)
    if set(facts.objects) != set(ids):
        return None
    members = set(ids)
    if any((s in members) != (c in members) for _, s, c in facts.links):
        return None
    for chunk in _chunks(ids):
        outside = conn.execute(select(func.count()).select_from(o).where(
            o.c.duplicate_of_id.in_(chunk), o.c.id.not_in(members))).scalar()
        if outside:
            return None
    if any(_hold(facts, i, in_archive) is not None or not _old(facts, i, cutoff) for i in ids):
        return None
    now = sum((_group(facts, g.object_ids).removed for g in groups), Removed())
    if now != planned:
        return None
    decision_ids = [int(x[0]) for i in ids for x in facts.decisions.get(i, [])]
    link_ids = [link for link, _, _ in facts.links]
    counts: dict[str, int] = {}

    def gone(name: str, table: Any, column: Any, keys: list[int]) -> None:
        for chunk in _chunks(keys):
            counts[name] = counts.get(name, 0) + int(
                conn.execute(delete(table).where(column.in_(chunk))).rowcount or 0)

    gone("console_checks", ConsoleCheck.__table__, ConsoleCheck.__table__.c.decision_id,
         decision_ids)
    gone("acknowledgements", Acknowledgement.__table__,
         Acknowledgement.__table__.c.decision_id, decision_ids)
    gone("alerts", AlertOutbox.__table__, AlertOutbox.__table__.c.decision_id, decision_ids)
    gone("pairings", CompanionPairing.__table__, CompanionPairing.__table__.c.id, link_ids)
    for chunk in _chunks(decision_ids):  # the superseded decisions point to their successor
        conn.execute(update(d).where(d.c.id.in_(chunk)).values(superseded_by_id=None))
    gone("decisions", d, d.c.id, decision_ids)
    duplicates = [i for i in ids if facts.objects[i][0] is not None]
    gone("objects", o, o.c.id, duplicates)  # before the first receipts they point to
    gone("objects", o, o.c.id, [i for i in ids if facts.objects[i][0] is None])
    return Removed(objects=counts.get("objects", 0), decisions=counts.get("decisions", 0),
                   acknowledgements=counts.get("acknowledgements", 0),
                   alerts=counts.get("alerts", 0), pairings=counts.get("pairings", 0),
                   console_checks=counts.get("console_checks", 0),
                   files=planned.files, bytes=planned.bytes)


def recorded_paths(target: Session | Connection, paths: Iterable[str]) -> set[str]:
    """Which of these relative archive paths a received object's record names."""
    conn = target.connection() if isinstance(target, Session) else target
    o: Any = ReceivedObject.__table__
    items = sorted(set(paths))
    found: set[str] = set()
    for start in range(0, len(items), _CHUNK):
        found.update(str(p) for p in conn.execute(
            select(o.c.archive_path).where(o.c.archive_path.in_(items[start:start + _CHUNK])))
            .scalars())
    return found
