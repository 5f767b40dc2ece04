"""A flooding console's alerts are grouped (issue 12): at most one e-mail per console per
``[alerts] digest_window_s``, every object listed; another console is not delayed; nothing is
lost or sent twice; an object acknowledged before it is sent is left out. Real SQLite file,
real aiosmtpd server, the real console check in the recording transaction."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from model.consoles import ConsoleIdentity
from model.decision import DecisionKind, DecodeRecord
from model.decoder import ModelInfo
from model.errors import InvalidReason
from node.alerts.compose import ReceiptContext, compose_alert
from node.alerts.sender import OutboxSender
from node.audit.models import AlertOutbox, DecisionRecord
from node.audit.store import acknowledge, open_database
from node.audit.writer import record_checked
from node.consoles.checks import ConsoleChecker
from node.records import AlertState, Placement, Receipt, Source
from tests.node.conftest import make_settings

_UIDS = itertools.count(1)
#: two consoles behind one calling AE title: grouped apart (docs/contract.md section 6)
XVI1 = ConsoleIdentity.of("XVI", "XVI-ROOM1", "Elekta", "XVI")
XVI2 = ConsoleIdentity.of("XVI", "XVI-ROOM2", "Elekta", "XVI")


def _receipt(console: ConsoleIdentity) -> Receipt:
    uid = f"1.2.826.0.1.3680043.10.1433.99.{next(_UIDS)}"
    record = DecodeRecord(decision=DecisionKind.INVALID, reason="cannot be parsed",
                          reason_code=InvalidReason.UNREADABLE,
                          model=ModelInfo("analytic", "test"), sop_instance_uid=uid)
    now = dt.datetime.now(dt.UTC)
    ctx = ReceiptContext(sop_instance_uid=uid, calling_ae_title=console.calling_ae_title,
                         called_ae_title="SRO_DECODER", peer_address="127.0.0.1",
                         received_at=now, archive_path=f"archive/{uid}.dcm",
                         station_name=console.station_name)
    return Receipt(
        sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.66.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1", archive_path=f"archive/{uid}.dcm",
        placement=Placement.PRIMARY, size_bytes=100, calling_ae_title=console.calling_ae_title,
        called_ae_title="SRO_DECODER", peer_address="127.0.0.1", association_id=None,
        source=Source.C_STORE, status=0xC000, received_at=now, record=record,
        alert=compose_alert(record, ctx, ("physics@example.org",)), console=console)


def _queue(engine: Any, console: ConsoleIdentity, n: int) -> list[str]:
    receipts = [_receipt(console) for _ in range(n)]
    with Session(engine) as session, session.begin():
        record_checked(session.connection(), receipts, ConsoleChecker())
    return [str(r.sop_instance_uid) for r in receipts]


def _rows(engine: Any) -> dict[str, AlertOutbox]:
    with Session(engine) as session:
        return {str(d.sop_instance_uid): a for a, d in session.execute(
            select(AlertOutbox, DecisionRecord)
            .join(DecisionRecord, DecisionRecord.id == AlertOutbox.decision_id))}


def _body(message: Any) -> str:
    return str(message.get_payload(decode=True).decode())


def test_a_flooding_console_gets_one_digest_per_window(tmp_path: Path, smtp: Any) -> None:
    sink, port = smtp
    window = 1.5
    settings = make_settings(tmp_path, port, alerts={"digest_window_s": window})
    engine = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    sender = OutboxSender(engine, settings.smtp, settings.alerts)

    first = _queue(engine, XVI1, 1)
    assert sender.run_once() == 1  # a quiet console's alert goes out at once
    burst = _queue(engine, XVI1, 6)
    other = _queue(engine, XVI2, 1)  # same AE title, another console
    started = time.monotonic()
    assert sender.run_once() == 1  # only the other console's: XVI1's window is open
    assert len(sink.messages) == 2
    assert other[0] in str(sink.messages[1]["Subject"])
    rows = _rows(engine)
    assert all(rows[u].state == AlertState.PENDING and rows[u].attempts == 0 for u in burst)
    # one of the burst is acknowledged before its digest goes: left out, and why
    with Session(engine) as session, session.begin():
        d = session.scalars(select(DecisionRecord).where(
            DecisionRecord.sop_instance_uid == burst[2])).one()
        acknowledge(session, d, "Dr Who", "seen on the console")
    assert sender.run_once() == 0  # still inside the window: nothing, nothing lost
    time.sleep(max(0.0, window - (time.monotonic() - started)) + 0.2)
    assert sender.run_once() == 5
    assert len(sink.messages) == 3
    digest = sink.messages[2]
    body = _body(digest)
    assert "5 alerts: console XVI-ROOM1 (XVI)" in str(digest["Subject"])
    listed = [u for u in burst if f"SOP Instance UID: {u}" in body]
    assert listed == [u for u in burst if u != burst[2]]
    assert burst[2] not in body and first[0] not in body
    assert body.count("Reason:           cannot be parsed") == 5
    rows = _rows(engine)
    assert rows[burst[2]].state == AlertState.NOT_SENT
    assert "Dr Who" in str(rows[burst[2]].last_error)
    assert all(rows[u].state == AlertState.SENT and rows[u].attempts == 1 for u in listed)
    assert len({rows[u].sent_at for u in listed}) == 1
    assert sender.run_once() == 0 and len(sink.messages) == 3  # none sent twice

    time.sleep(window + 0.2)  # a new window: the next alert goes out alone, at once
    late = _queue(engine, XVI1, 1)
    assert sender.run_once() == 1
    assert len(sink.messages) == 4 and late[0] in str(sink.messages[3]["Subject"])
    engine.dispose()


def test_the_sender_wakes_at_the_window_end(tmp_path: Path, smtp: Any) -> None:
    """The running sender sends a deferred digest when the window ends (not at the next poll),
    and a burst queued together before a pass is one e-mail listing all of it."""
    sink, port = smtp
    settings = make_settings(tmp_path, port, alerts={"digest_window_s": 1.0, "poll_s": 30})
    engine = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    burst = _queue(engine, XVI1, 4)
    sender = OutboxSender(engine, settings.smtp, settings.alerts)
    sender.start()
    try:
        messages = sink.wait_for(1, timeout=5)
        assert len(messages) == 1
        assert all(f"SOP Instance UID: {u}" in _body(messages[0]) for u in burst)
        more = _queue(engine, XVI1, 2)
        sender.wake()
        time.sleep(0.3)
        assert len(sink.messages) == 1  # deferred to the window's end
        messages = sink.wait_for(2, timeout=3)  # well before poll_s
        assert len(messages) == 2
        assert all(f"SOP Instance UID: {u}" in _body(messages[1]) for u in more)
    finally:
        sender.stop()
    engine.dispose()
