"""The ``console_convention`` check in each decision's transaction (docs/contract.md section 6).

:class:`ConsoleChecker` is what the group-commit writer (:mod:`node.audit.writer`) and
start-up reconciliation call inside the transaction that records a batch of receipts:
:meth:`~ConsoleChecker.prepare` reads each receipt's console (added when first seen), applies
the history rules of :mod:`model.consoles` to its decision (and to an SRO's new decision when
its companion arrives), adds the check to the record, composes the alert again when the check
flags it, and writes the console's new state and history; :meth:`~ConsoleChecker.recorded`
links each decision to its check once the decision has its id. Receipts are never changed in
place, so a batch retried after a failure is checked afresh.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from model.consoles import ConsoleIdentity, ConsoleState, HistoryPolicy, assess
from model.decision import Check, DecisionPolicy, DecodeRecord
from node.alerts.compose import ReceiptContext, compose_alert
from node.audit.models import Console, utcnow
from node.consoles.store import (
    add_check,
    add_event,
    console_of_object,
    console_row,
    current_decision_id,
    save_state,
)
from node.records import Receipt, Recorded


class ConsoleChecker:
    """Applies consoles' histories to receipts in the writer's transaction (module
    docstring)."""

    def __init__(self, policy: HistoryPolicy | None = None,
                 decision_policy: DecisionPolicy | None = None,
                 recipients: tuple[str, ...] = ()) -> None:
        self.policy = policy or HistoryPolicy()
        self.decision_policy = decision_policy or DecisionPolicy()
        self.recipients = recipients

    def _assess(self, conn: Connection, console_id: int, record: DecodeRecord,
                patient: str | None, uid: str | None) -> tuple[DecodeRecord, Check]:
        table: Any = Console.__table__
        state_json = conn.execute(select(table.c.state_json).where(
            table.c.id == console_id)).scalar()
        state = ConsoleState.from_dict(json.loads(state_json or "{}"))
        a = assess(state, record, patient=patient, policy=self.policy,
                   decision_policy=self.decision_policy)
        now = utcnow()
        save_state(conn, console_id, a.state, now)
        for kind, est in a.events:
            add_event(conn, console_id, kind, est, now, sop_instance_uid=uid)
        checks = tuple(c for c in record.checks if c.name is not a.check.name)
        return dataclasses.replace(record, checks=(*checks, a.check)), a.check

    def prepare(self, conn: Connection, receipts: Sequence[Receipt]) -> list[Receipt]:
        """Each receipt with its decision checked against its console (new receipts)."""
        out: list[Receipt] = []
        for r in receipts:
            extra: dict[str, Any] = {}
            record = r.record
            if record is not None and not r.duplicate:
                ident = r.console or ConsoleIdentity.of(r.calling_ae_title)
                if ident.known:
                    console_id, _ = console_row(conn, ident, utcnow())
                    record, check = self._assess(conn, console_id, record, r.patient_key,
                                                 r.sop_instance_uid)
                    extra["console"] = (console_id, check)
            updates = []
            for u in r.sro_updates:
                cid = console_of_object(conn, u.sro_object_id)
                if cid is None:
                    updates.append(u)
                    continue
                new, check = self._assess(conn, cid, u.record, None, u.sop_instance_uid)
                alert = u.alert
                if new.flagged and alert is None:
                    alert = compose_alert(new, ReceiptContext(
                        sop_instance_uid=u.sop_instance_uid, calling_ae_title=u.calling_ae_title,
                        called_ae_title=None, peer_address=None, received_at=utcnow(),
                        archive_path=None), self.recipients)
                updates.append(dataclasses.replace(u, record=new, alert=alert))
                extra.setdefault("updates", []).append((u.sro_object_id, cid, check))
            alert = r.alert
            if record is not None and record is not r.record:
                if not record.flagged:
                    alert = None
                elif r.compose is not None:
                    alert = r.compose(record)
            new_r = dataclasses.replace(r, record=record, alert=alert,
                                        sro_updates=tuple(updates))
            new_r.checked = extra
            out.append(new_r)
        return out

    def recorded(self, conn: Connection, receipts: Sequence[Receipt],
                 results: Sequence[Recorded]) -> None:
        """Link each recorded decision to its check (same transaction)."""
        now = utcnow()
        for r, done in zip(receipts, results, strict=True):
            info = r.checked or {}
            if "console" in info and done.decision_id is not None:
                cid, check = info["console"]
                add_check(conn, cid, done.decision_id, check, now)
            for object_id, cid, check in info.get("updates", ()):
                did = current_decision_id(conn, object_id)
                if did is not None:
                    add_check(conn, cid, did, check, now)
