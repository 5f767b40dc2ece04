"""Alert e-mails: delivered after an SMTP outage and a restart; STARTTLS with login; patient
identity only when a setting asks for it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select
from sqlalchemy.orm import Session

from model.decision import DecisionKind, DecodeRecord
from model.decoder import ModelInfo
from model.errors import InvalidReason
from node.alerts.sender import OutboxSender
from node.audit.models import AlertOutbox
from node.audit.store import open_database, record_receipts
from node.records import AlertState, Placement, Receipt, Source
from tests.node.conftest import (
    SmtpSink,
    cli,
    export,
    free_port,
    make_settings,
    needs_dcmtk,
    smtp_server,
    sro_files,
    storescu,
)

FLAGGED = ("ambiguous", "out_of_distribution", "invalid")


def flagged_uids(data_dir: Path) -> set[str]:
    return {uid for uid, row in export(data_dir).items() if row["decision"] in FLAGGED}


def outbox(data_dir: Path) -> list[AlertOutbox]:
    engine = open_database(f"sqlite:///{data_dir / 'audit.db'}", migrate_schema=False)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(AlertOutbox).order_by(AlertOutbox.id)))
    finally:
        engine.dispose()


@needs_dcmtk
def test_alerts_survive_smtp_outage_and_restart(
    tmp_path: Path, sro_dir: Path, node_factory: Any
) -> None:
    data = tmp_path / "data"
    smtp_port = free_port()  # nothing listens there yet: the SMTP server is down
    node = node_factory(make_settings(data, smtp_port))
    assert storescu(node.address[1], sro_files(sro_dir)).returncode == 0
    flagged = flagged_uids(data)
    assert flagged
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the sender tried and failed at least once each
        rows = outbox(data)
        if len(rows) == len(flagged) and all(r.attempts >= 1 for r in rows):
            break
        time.sleep(0.1)
    assert len(rows) == len(flagged)
    assert all(r.state == AlertState.PENDING and r.attempts >= 1 and r.last_error for r in rows)
    assert {export(data)[u]["alert_state"] for u in flagged} == {"pending"}
    node.stop()

    with smtp_server(smtp_port) as (sink, _):
        node_factory(make_settings(data, smtp_port))  # the restart
        messages = sink.wait_for(len(flagged))
        time.sleep(0.5)
        assert len(sink.messages) == len(flagged)  # each once
        subjects = " ".join(m["Subject"] for m in messages)
        assert all(uid in subjects for uid in flagged)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(r.state != AlertState.SENT for r in outbox(data)):
            time.sleep(0.1)
        assert all(r.state == AlertState.SENT and r.sent_at is not None for r in outbox(data))


@needs_dcmtk
def test_patient_identity_only_when_asked(
    tmp_path: Path, sro_dir: Path, node_factory: Any, smtp: Any
) -> None:
    sink, port = smtp
    settings = make_settings(tmp_path / "data", port,
                             alerts={"include_patient_identity": True})
    node = node_factory(settings)
    assert storescu(node.address[1], sro_files(sro_dir)).returncode == 0
    flagged = flagged_uids(tmp_path / "data")
    messages = sink.wait_for(len(flagged))
    assert len(messages) == len(flagged)
    for m in messages:
        body = m.get_payload(decode=True).decode()
        assert "Patient name:       SYNTHETIC^SYNTH" in body
        assert "Patient ID:         SYNTH" in body


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return key, cert


@contextlib.contextmanager
def starttls_server(key: Path, cert: Path) -> Iterator[tuple[SmtpSink, int, list[str]]]:
    sink = SmtpSink()
    logins: list[str] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts" \
            and auth_data.password == b"s3cret"
        if ok:
            logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, authenticator=authenticate,
                            auth_require_tls=True)
    controller.start()
    try:
        yield sink, port, logins
    finally:
        controller.stop()


@needs_dcmtk
def test_starttls_with_login(
    tmp_path: Path, sro_dir: Path, node_factory: Any, tls_files: tuple[Path, Path]
) -> None:
    key, cert = tls_files
    with starttls_server(key, cert) as (sink, port, logins):
        settings = make_settings(tmp_path / "data", port, smtp={
            "starttls": True, "user": "alerts", "password": "s3cret", "ca_file": str(cert)})
        node = node_factory(settings)
        assert storescu(node.address[1], sro_files(sro_dir)[:12]).returncode == 0
        flagged = flagged_uids(tmp_path / "data")
        assert flagged
        messages = sink.wait_for(len(flagged))
        assert len(messages) == len(flagged)
        assert logins and set(logins) == {"alerts"}


@needs_dcmtk
def test_wrong_password_keeps_alerts_pending(
    tmp_path: Path, sro_dir: Path, node_factory: Any, tls_files: tuple[Path, Path]
) -> None:
    key, cert = tls_files
    with starttls_server(key, cert) as (sink, port, _):
        settings = make_settings(tmp_path / "data", port, smtp={
            "starttls": True, "user": "alerts", "password": "wrong", "ca_file": str(cert)})
        node = node_factory(settings)
        assert storescu(node.address[1], sro_files(sro_dir)[:12]).returncode == 0
        flagged = flagged_uids(tmp_path / "data")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = outbox(tmp_path / "data")
            if len(rows) == len(flagged) and all(r.attempts >= 1 for r in rows):
                break
            time.sleep(0.1)
        # aiosmtpd answers a wrong password by going silent: the login fails either way
        assert rows and all(r.state == AlertState.PENDING and r.attempts >= 1 and r.last_error
                            for r in rows)
        assert sink.messages == []


# ---------------------------------------------------------------------------------------------
# Outbox isolation (issue 9, defects 1 and 8): one bad message never stops the others


def _flagged_receipt(uid: str, index: int, recipients: tuple[str, ...]) -> Receipt:
    from node.alerts.compose import ReceiptContext, compose_alert

    record = DecodeRecord(decision=DecisionKind.INVALID, reason="cannot be parsed",
                          reason_code=InvalidReason.UNREADABLE,
                          model=ModelInfo("analytic", "test"), sop_instance_uid=uid)
    now = dt.datetime.now(dt.UTC)
    ctx = ReceiptContext(sop_instance_uid=uid, calling_ae_title="CONSOLE1",
                         called_ae_title="SRO_DECODER", peer_address="127.0.0.1",
                         received_at=now, archive_path=f"archive/{uid}.dcm")
    return Receipt(
        sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.66.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1", archive_path=f"archive/{uid}.dcm",
        placement=Placement.PRIMARY, size_bytes=100, calling_ae_title="CONSOLE1",
        called_ae_title="SRO_DECODER", peer_address="127.0.0.1", association_id=None,
        source=Source.C_STORE, status=0xC000, received_at=now, record=record,
        alert=compose_alert(record, ctx, recipients),
    )


def _queue(data: Path, uids: list[str], recipients: tuple[str, ...] = ("physics@example.org",)
           ) -> Any:
    engine = open_database(f"sqlite:///{data / 'audit.db'}")
    with Session(engine) as session, session.begin():
        record_receipts(session, [_flagged_receipt(u, i, recipients) for i, u in enumerate(uids)])
    return engine


def _alert_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "node.alerts" and r.levelno == level]


def test_one_bad_message_is_failed_once_and_the_others_go_on(
    tmp_path: Path, smtp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink, port = smtp
    settings = make_settings(tmp_path, port, alerts={"poll_s": 0.1})
    hostile = "1.2.3.4.6\r\nBcc: x@y"
    engine = _queue(tmp_path, ["1.2.3.4.5", hostile, "1.2.3.4.7"])
    # a row whose headers cannot be built at all (written by hand, or by an older version)
    with Session(engine) as session, session.begin():
        decision_id = session.scalars(select(AlertOutbox.decision_id)).first()
        now = dt.datetime.now(dt.UTC)
        bad = AlertOutbox(decision_id=decision_id, recipients="physics@example.org\r\nBcc: x@y",
                          subject="unbuildable", body="b", state=AlertState.PENDING.value,
                          attempts=0, created_at=now, next_attempt_at=now)
        session.add(bad)
        session.flush()
        bad_id = bad.id
    engine.dispose()
    caplog.set_level(logging.INFO, logger="node.alerts")
    sender = OutboxSender(open_database(f"sqlite:///{tmp_path / 'audit.db'}"),
                          settings.smtp, settings.alerts)
    sender.start()
    try:
        messages = sink.wait_for(3, timeout=10)
        time.sleep(1.0)  # several more passes (poll_s 0.1): none may retry or log again
    finally:
        sender.stop()
    assert len(sink.messages) == 3
    subjects = [str(m["Subject"]) for m in messages]
    assert any("1.2.3.4.5" in s for s in subjects) and any("1.2.3.4.7" in s for s in subjects)
    # the CR/LF UID was sent, with the CR/LF shown and no Bcc header or recipient
    assert any("1.2.3.4.6\\r\\nBcc: x@y" in s for s in subjects)
    assert all(m["Bcc"] is None for m in messages)
    assert all(rcpts == ["physics@example.org"] for _, rcpts in sink.envelopes)

    rows = {r.id: r for r in outbox(tmp_path)}
    assert rows[bad_id].state == AlertState.FAILED and rows[bad_id].attempts == 1
    assert rows[bad_id].last_error and "recipient" in rows[bad_id].last_error.lower()
    assert all(r.state == AlertState.SENT for i, r in rows.items() if i != bad_id)
    errors = _alert_logs(caplog, logging.ERROR)
    assert len(errors) == 1 and errors[0].fields["alert_id"] == bad_id  # type: ignore[attr-defined]
    rc, out = cli("audit", "--data-dir", str(tmp_path), "export")
    assert rc == 0 and "failed" in {json.loads(line)["alert_state"] for line in out.splitlines()}


def test_an_outbox_pass_that_fails_backs_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, free_port(), alerts={"retry_initial_s": 0.2,
                                                            "retry_max_s": 1.0, "poll_s": 0.1})
    engine = _queue(tmp_path, ["1.2.3.4.5"])
    with engine.begin() as conn:  # every change of the outbox fails; reading it still works
        conn.exec_driver_sql("CREATE TRIGGER frozen BEFORE UPDATE ON alert_outbox "
                             "BEGIN SELECT RAISE(ABORT, 'outbox frozen'); END")
    engine.dispose()
    caplog.set_level(logging.INFO, logger="node.alerts")
    sender = OutboxSender(open_database(f"sqlite:///{tmp_path / 'audit.db'}"),
                          settings.smtp, settings.alerts)
    sender.start()
    time.sleep(1.5)
    sender.stop()
    passes = [r for r in caplog.records if r.name == "node.alerts"
              and r.getMessage() == "alert outbox pass failed"]
    assert 1 <= len(passes) <= 6  # 0.2 + 0.4 + 0.8 s of backoff, not a spin


def test_no_recipients_waits_quietly_and_loses_nothing(
    tmp_path: Path, smtp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink, port = smtp
    settings = make_settings(tmp_path, port, alerts={"recipients": [], "poll_s": 0.1,
                                                     "retry_initial_s": 0.1, "retry_max_s": 0.2})
    engine = _queue(tmp_path, [f"1.2.3.{i}" for i in range(5)], recipients=())
    caplog.set_level(logging.INFO, logger="node.alerts")
    sender = OutboxSender(engine, settings.smtp, settings.alerts)
    sender.start()
    time.sleep(1.0)
    _queue(tmp_path, ["1.2.3.9"], recipients=()).dispose()
    sender.wake()
    time.sleep(0.5)
    sender.stop()
    assert sink.messages == []
    warnings = _alert_logs(caplog, logging.WARNING)
    assert len(warnings) == 1, [w.getMessage() for w in warnings]
    rows = outbox(tmp_path)
    assert len(rows) == 6 and all(r.state == AlertState.PENDING and r.attempts == 0 for r in rows)

    # once recipients are configured (a restart), every waiting alert goes out at once
    settings = make_settings(tmp_path, port, alerts={"poll_s": 0.1})
    OutboxSender(engine, settings.smtp, settings.alerts).run_once()
    assert len(sink.wait_for(6, timeout=5)) == 6
    assert all(rcpts == ["physics@example.org"] for _, rcpts in sink.envelopes)
    engine.dispose()


def test_an_alert_keeps_its_message_id_when_sent_again_and_names_its_node() -> None:
    """A second copy (a sender killed between the SMTP server's acceptance and its commit) is
    recognisable: the Message-ID depends on the alert alone, never on when it was sent."""
    from node.alerts.digest import DigestMessage
    from node.alerts.sender import build_email

    created = dt.datetime(2026, 12, 1, 8, 30, 5, 123456, tzinfo=dt.UTC)
    row = AlertOutbox(id=41, subject="s", body="b", created_at=created)
    first = build_email(row, "sro@clinic.example.org", ["physics@example.org"], "node-a")
    time.sleep(0.01)
    again = build_email(row, "sro@clinic.example.org", ["physics@example.org"], "node-b")
    assert first["Message-ID"] == again["Message-ID"] == (
        "<sro-alert-41.20261201083005123456@clinic.example.org>")
    assert (first["X-SRO-Decoder-Node"], again["X-SRO-Decoder-Node"]) == ("node-a", "node-b")
    other = AlertOutbox(id=42, subject="s", body="b", created_at=created)
    assert build_email(other, "sro@clinic.example.org", [])["Message-ID"] != first["Message-ID"]
    digest = DigestMessage(id="41-47", subject="s", body="b", created_at=created)
    assert build_email(digest, "sro@x.org", [])["Message-ID"] == (
        "<sro-alert-41-47.20261201083005123456@x.org>")
    assert "X-SRO-Decoder-Node" not in build_email(digest, "sro@x.org", [])
