"""Alert e-mails: delivered after an SMTP outage and a restart; STARTTLS with login; patient
identity only when a setting asks for it."""

from __future__ import annotations

import contextlib
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

from node.audit.models import AlertOutbox
from node.audit.store import open_database
from tests.node.conftest import (
    SmtpSink,
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
    assert all(r.state == "pending" and r.attempts >= 1 and r.last_error for r in rows)
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
        while time.monotonic() < deadline and any(r.state != "sent" for r in outbox(data)):
            time.sleep(0.1)
        assert all(r.state == "sent" and r.sent_at is not None for r in outbox(data))


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
        assert rows and all(r.state == "pending" and r.attempts >= 1 and r.last_error
                            for r in rows)
        assert sink.messages == []
