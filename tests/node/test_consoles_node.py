"""Consoles end to end (docs/contract.md section 6): DCMTK storescu sends a console's history
to the node, the node learns its convention and, when the direction flips, records the
``console_convention`` check ``changed`` in the decision's transaction and sends one e-mail
naming the console, both conventions and the displacement; ``sro-decoder consoles`` lists and
commissions; a decision acknowledged before its e-mail goes out is not sent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from model.training.histories import (
    EventKind,
    HistoryConfig,
    generate_histories,
    write_histories,
)
from node.alerts.sender import OutboxSender
from node.audit.models import AlertOutbox, ConsoleCheck
from node.audit.store import open_database
from node.records import AlertState
from tests.node.conftest import (
    cli,
    export,
    free_port,
    make_settings,
    needs_dcmtk,
    smtp_server,
    storescu,
)


def _history(out: Path) -> list[dict[str, Any]]:
    """One console, eight fractions, its direction reversed on the last."""
    data = generate_histories(HistoryConfig(
        n_consoles=1, fractions=8, seed=5, event_share=1.0, events=(EventKind.DIRECTION_FLIP,),
        event_window=(7, 7), isocenter_share=1.0, wide_share=0.0, declared_share=1.0))
    truth = write_histories(data, out)
    return [json.loads(line) for line in truth.read_text().splitlines()]


@needs_dcmtk
def test_console_change_sends_one_email_and_consoles_command(
        tmp_path: Path, smtp: Any, node_factory: Any) -> None:
    sink, smtp_port = smtp
    rows = _history(tmp_path / "h")
    data_dir = tmp_path / "data"
    node = node_factory(make_settings(data_dir, smtp_port))
    files = [tmp_path / "h" / r["file"] for r in rows]
    proc = storescu(node.address[1], files, rows[0]["calling_ae_title"])
    assert proc.returncode == 0, proc.stderr

    messages = sink.wait_for(1)
    time.sleep(0.5)  # no second e-mail follows
    assert len(sink.messages) == 1
    msg = messages[0]
    body = msg.get_payload(decode=True).decode()
    changed = rows[-1]
    assert changed["sop_instance_uid"] in msg["Subject"]
    assert "XVI-0000" in msg["Subject"] and "CONSOLE CONVENTION CHANGED" in msg["Subject"]
    old = rows[0]["convention"]
    old_pair = f"{old['order']}/{'inverse' if old['inverse'] else 'direct'}"
    assert old_pair in body and changed["event_order_direction"] in body
    assert " mm from the nearest expected convention" in body
    assert "\n>From" not in body
    assert f"--data-dir {data_dir.resolve()}" in body  # the node's own data folder

    got = export(data_dir)
    checks = [got[r["sop_instance_uid"]]["checks"] for r in rows]
    results = [next(c["result"] for c in cs if c["name"] == "console_convention")
               for cs in checks]
    assert results == ["not_checked"] * 5 + ["consistent"] * 2 + ["changed"]
    assert got[changed["sop_instance_uid"]]["flagged"] is True
    engine = open_database(f"sqlite:///{data_dir / 'audit.db'}")
    with Session(engine) as session:  # each check is linked to its decision
        assert len(session.scalars(select(ConsoleCheck)).all()) == len(rows)
    engine.dispose()

    rc, out = cli("consoles", "list", "--data-dir", str(data_dir), "--json")
    assert rc == 0
    listed = [json.loads(line) for line in out.splitlines()]
    assert len(listed) == 1 and listed[0]["station_name"] == "XVI-0000"
    assert listed[0]["changed_30d"] == 1 and listed[0]["decisions_30d"] == len(rows)
    rc, out = cli("consoles", "--data-dir", str(data_dir), "show", "XVI-0000")
    assert rc == 0 and "learned" in out and "changed" in out
    rc, out = cli("consoles", "commission", "XVI-0000", "--convention",
                  changed["event_order_direction"], "--by", "Dr Physicist", "--note",
                  "phantom test after the MOSAIQ change", "--data-dir", str(data_dir))
    assert rc == 0, out
    rc, out = cli("consoles", "show", "1", "--data-dir", str(data_dir))
    assert "commissioned" in out and "Dr Physicist" in out
    rc, _ = cli("consoles", "commission", "XVI-0000", "--convention", "abc/direct", "--by", "x",
                "--data-dir", str(data_dir))
    assert rc == 2


@needs_dcmtk
def test_acknowledged_before_sending_is_not_sent(tmp_path: Path, node_factory: Any) -> None:
    rows = _history(tmp_path / "h")
    data_dir = tmp_path / "data"
    dead = free_port()  # nothing listens: the e-mail waits in the outbox
    node = node_factory(make_settings(data_dir, dead))
    proc = storescu(node.address[1], [tmp_path / "h" / r["file"] for r in rows],
                    rows[0]["calling_ae_title"])
    assert proc.returncode == 0, proc.stderr
    node.stop(grace_s=2.0)
    uid = rows[-1]["sop_instance_uid"]
    rc, _ = cli("audit", "ack", uid, "--by", "Dr Physicist", "--data-dir", str(data_dir))
    assert rc == 0
    with smtp_server() as (sink, port):
        settings = make_settings(data_dir, port)
        engine = open_database(settings.database_url)
        sender = OutboxSender(engine, settings.smtp, settings.alerts)
        with Session(engine) as session:  # due now
            for row in session.scalars(select(AlertOutbox)):
                row.next_attempt_at = row.created_at
            session.commit()
        assert sender.run_once() == 0
        time.sleep(0.3)
        assert sink.messages == []
        with Session(engine) as session:
            row = session.scalars(select(AlertOutbox)).one()
            assert row.state == AlertState.NOT_SENT
            assert "acknowledged by Dr Physicist" in (row.last_error or "")
        engine.dispose()
    assert export(data_dir)[uid]["alert_state"] == "not_sent"
