"""Grouping a flooding console's alerts (issue 12): at most one e-mail per console per
``[alerts] digest_window_s``, every object listed.

A console is the one of each decision's ``console_convention`` check (docs/contract.md section
6: the calling AE title with the SRO's equipment names), else the decision's console text. The
first alert of a console goes out at once; while the window since that console's last e-mail is
open, its further alerts wait in the outbox (``next_attempt_at`` set to the window's end, no
attempt counted) and then go out together as one digest listing each object's UID, decision,
reason and failing checks, followed by each object's own e-mail. Nothing is lost: a deferred
row stays ``pending``, and every row of a digest is marked with the digest's outcome.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from model.consoles.identity import ConsoleIdentity
from node.audit.models import AlertOutbox, Console, ConsoleCheck, DecisionRecord
from node.records import AlertState
from node.text import header_safe, line_safe

#: Most objects one digest lists; the rest wait for the console's next window
DIGEST_MAX = 1000
#: Objects whose whole e-mail is repeated in a digest (all are listed)
FULL_BODIES_MAX = 20
_ACK_LINE = "  sro-decoder audit ack "


@dataclass(frozen=True, slots=True)
class ConsoleKey:
    """The console an alert is grouped under: a console row's id, else the decision's console
    text (``None``: neither)."""

    console_id: int | None
    text: str | None
    label: str


@dataclass(frozen=True, slots=True)
class DigestMessage:
    """What :func:`node.alerts.sender.build_email` needs of a message, for a digest."""

    id: str
    subject: str
    body: str
    created_at: dt.datetime


def console_keys(session: Session, decision_ids: Sequence[int]) -> dict[int, ConsoleKey]:
    """The console of each decision (reads only)."""
    ids = sorted(set(decision_ids))
    out: dict[int, ConsoleKey] = {}
    for start in range(0, len(ids), 500):  # within SQLite's bound on bound parameters
        rows = session.execute(
            select(DecisionRecord.id, DecisionRecord.console, Console)
            .outerjoin(ConsoleCheck, ConsoleCheck.decision_id == DecisionRecord.id)
            .outerjoin(Console, Console.id == ConsoleCheck.console_id)
            .where(DecisionRecord.id.in_(ids[start:start + 500])))
        for did, text, console in rows:
            if console is not None:
                label = ConsoleIdentity(console.calling_ae_title, console.station_name,
                                        console.manufacturer,
                                        console.manufacturer_model_name).label
                out[int(did)] = ConsoleKey(int(console.id), None, label)
            else:
                out[int(did)] = ConsoleKey(None, text, text or "(unknown console)")
    return out


def _of_console(stmt: Any, key: ConsoleKey) -> Any:
    if key.console_id is not None:
        return stmt.join(ConsoleCheck, ConsoleCheck.decision_id == AlertOutbox.decision_id) \
            .where(ConsoleCheck.console_id == key.console_id)
    checked = select(ConsoleCheck.id).where(ConsoleCheck.decision_id == AlertOutbox.decision_id)
    stmt = stmt.join(DecisionRecord, DecisionRecord.id == AlertOutbox.decision_id) \
        .where(~checked.exists())
    return stmt.where(DecisionRecord.console.is_(None) if key.text is None
                      else DecisionRecord.console == key.text)


def last_sent(session: Session, key: ConsoleKey) -> dt.datetime | None:
    """When the console's last e-mail went out."""
    stmt = select(func.max(AlertOutbox.sent_at)).where(
        AlertOutbox.state == AlertState.SENT.value)
    value = session.scalar(_of_console(stmt, key))
    if value is not None and value.tzinfo is None:  # an aggregate skips the column's type
        value = value.replace(tzinfo=dt.UTC)
    return value


def pending_of(session: Session, key: ConsoleKey, recipients: str) -> list[AlertOutbox]:
    """The console's pending alerts queued for ``recipients``, oldest first (at most
    :data:`DIGEST_MAX`)."""
    stmt = select(AlertOutbox).where(AlertOutbox.state == AlertState.PENDING.value,
                                     AlertOutbox.recipients == recipients)
    return list(session.scalars(_of_console(stmt, key).order_by(AlertOutbox.id)
                                .limit(DIGEST_MAX)))


def plan(session: Session, due: Sequence[AlertOutbox], now: dt.datetime, window_s: float
         ) -> list[tuple[ConsoleKey | None, list[AlertOutbox]]]:
    """The e-mails to send now from the ``due`` rows, each a console and its rows (one row: its
    own e-mail; several: a digest). A console whose window is still open has its due rows
    deferred to the window's end (committed here). ``window_s`` 0: every row alone."""
    if window_s <= 0 or not due:
        return [(None, [row]) for row in due]
    keys = console_keys(session, [row.decision_id for row in due])
    window = dt.timedelta(seconds=window_s)
    out: list[tuple[ConsoleKey | None, list[AlertOutbox]]] = []
    seen: set[tuple[ConsoleKey, str]] = set()
    deferred = False
    for row in due:
        key = keys[row.decision_id]
        if (key, row.recipients) in seen:
            continue
        seen.add((key, row.recipients))
        last = last_sent(session, key)
        if last is not None and now < last + window:  # that console's window is open: wait
            for waiting in due:
                if keys[waiting.decision_id] == key and waiting.recipients == row.recipients:
                    waiting.next_attempt_at = last + window
            deferred = True
            continue
        members = pending_of(session, key, row.recipients) or [row]
        out.append((key, members))
    if deferred:
        session.commit()
    return out


def _failing_checks(decision: DecisionRecord) -> list[str]:
    try:
        checks = json.loads(decision.record_json).get("checks") or []
    except (ValueError, AttributeError):
        return []
    return [f"{c.get('name')} {c.get('result')}: {c.get('sentence')}" for c in checks
            if isinstance(c, dict) and c.get("result") in ("failed", "changed", "ambiguous")]


def _ack_line(body: str) -> str | None:
    return next((line for line in body.splitlines() if line.startswith(_ACK_LINE)), None)


def compose_digest(key: ConsoleKey, rows: Sequence[AlertOutbox], window_s: float
                   ) -> DigestMessage:
    """One e-mail for several alerts of one console: each object's UID, decision, reason and
    failing checks, then each object's own e-mail (the first :data:`FULL_BODIES_MAX`)."""
    safe = line_safe
    label = safe(key.label)
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row.decision.decision] = kinds.get(row.decision.decision, 0) + 1
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items()))
    subject = header_safe(f"[SRO Decoder] {len(rows)} alerts: console {label} ({counts})")
    first, last = rows[0].created_at, rows[-1].created_at
    lines = [
        f"{len(rows)} flagged objects from console {label}, queued from "
        f"{first.astimezone(dt.UTC).isoformat()} to {last.astimezone(dt.UTC).isoformat()} "
        "(UTC).",
        f"At most one e-mail per console is sent every {window_s:g} s "
        "([alerts] digest_window_s): this one lists every object. Each needs its own review "
        "and acknowledgement.",
        "",
    ]
    for n, row in enumerate(rows, 1):
        d = row.decision
        lines.append(f"{n}. SOP Instance UID: {safe(d.sop_instance_uid or '(none)')}")
        lines.append(f"   Decision:         {d.decision}"
                     + (f" ({safe(d.convention)})" if d.convention else ""))
        lines.append(f"   Reason:           {safe(d.reason or 'no reason given')}")
        for c in _failing_checks(d):
            lines.append(f"   Check:            {safe(c)}")
        lines.append(f"   Queued (UTC):     {row.created_at.astimezone(dt.UTC).isoformat()}")
        ack = _ack_line(row.body)
        if ack is not None:
            lines.append(f"   Acknowledge:    {ack.strip()}")
    for n, row in enumerate(rows[:FULL_BODIES_MAX], 1):
        lines += ["", f"=== {n}. {safe(row.subject)} ===", "", *row.body.splitlines()]
    if len(rows) > FULL_BODIES_MAX:
        lines += ["", f"({len(rows) - FULL_BODIES_MAX} more objects are listed above; each "
                  "one's full record: sro-decoder audit show UID)"]
    return DigestMessage(id=f"{rows[0].id}-{rows[-1].id}", subject=subject,
                         body="\n".join(lines) + "\n", created_at=last)
