"""Injection through text a sender controls (issue 9, defects 5, 6 and 8): nothing in a UID, AE
title, patient name, console or reason forges a header or a line in an e-mail or a log, breaks the
``audit list`` table, or becomes a formula in the CSV export; ``audit ack`` refuses input it
cannot store (overlong names and notes, notes that are not UTF-8) with a clear message."""

from __future__ import annotations

import csv
import datetime as dt
import email
import email.policy
import io
import json
import logging
import shlex
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from model.decision import DecisionKind, DecodeRecord
from model.decoder import ModelInfo
from model.errors import InvalidReason
from model.offset import CouchOffset
from node.alerts.compose import ReceiptContext, compose_alert
from node.alerts.sender import build_email
from node.audit.models import AlertOutbox, utcnow
from node.audit.store import open_database, record_receipts
from node.logs import JsonFormatter, TextFormatter
from node.records import AlertMessage, Placement, Receipt, Source
from tests.node.conftest import cli

MODEL = ModelInfo("analytic", "test")
#: What a hostile sender appends to every field: a header and a line of its own
FORGE = "\r\nBcc: x@y\r\nFORGED line\n"


def hostile_record(uid: str) -> DecodeRecord:
    return DecodeRecord(
        decision=DecisionKind.OUT_OF_DISTRIBUTION,
        reason="nothing explains the data" + FORGE,
        model=MODEL,
        sop_instance_uid=uid,
        offset=CouchOffset((1.0, 2.0, 3.0), (0.5, 0.0, -0.5), console="CONSOLE" + FORGE),
    )


def hostile_context(uid: str) -> ReceiptContext:
    return ReceiptContext(
        sop_instance_uid=uid, calling_ae_title="EVIL" + FORGE, called_ae_title="SRO" + FORGE,
        peer_address="127.0.0.1" + FORGE, received_at=utcnow(),
        archive_path="/data/archive/x.dcm" + FORGE,
        patient_name="DOE^JOHN" + FORGE, patient_id="123" + FORGE,
    )


def test_alert_e_mail_has_no_forged_header_or_line() -> None:
    uid = "1.2.3.4.6" + FORGE
    alert = compose_alert(hostile_record(uid), hostile_context(uid), ("physics@example.org",),
                          include_patient_identity=True)
    assert not any(c in alert.subject for c in "\r\n\t\x00")
    for line in alert.body.split("\n"):
        assert "\r" not in line
        assert not line.startswith(("FORGED", "Bcc")), line
    assert alert.body.count("\nDecision: ") == 0 and alert.body.startswith("Decision: ")
    # the values are still there, visibly
    assert "DOE^JOHN\\r\\nBcc: x@y\\r\\nFORGED line\\n" in alert.body
    # the acknowledgement command is safe to paste into a shell and names the UID as shown
    ack = next(line for line in alert.body.splitlines() if "audit ack" in line)
    assert shlex.split(ack)[3] == "1.2.3.4.6\\r\\nBcc: x@y\\r\\nFORGED line\\n"

    row = AlertOutbox(id=7, subject=alert.subject, body=alert.body, created_at=utcnow())
    raw = build_email(row, "sro@example.org", ["physics@example.org"]).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert sorted(k.lower() for k in parsed) == sorted(
        ["from", "to", "subject", "date", "message-id", "x-sro-decoder-alert",
         "content-type", "content-transfer-encoding", "mime-version"])
    assert "1.2.3.4.6\\r\\nBcc: x@y" in str(parsed["Subject"])


def test_shell_metacharacters_in_the_uid_stay_one_argument() -> None:
    uid = "1.2.3'; touch /tmp/pwned; echo '"
    alert = compose_alert(hostile_record(uid), hostile_context(uid), ("physics@example.org",))
    ack = next(line for line in alert.body.splitlines() if "audit ack" in line)
    assert shlex.split(ack)[3] == uid


def _log_record(message: str, fields: dict[str, object], exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad UID 1.2" + FORGE)
        except ValueError:
            import sys
            exc_info = sys.exc_info()
    record = logging.LogRecord("node.test", logging.WARNING, __file__, 1, message, None, exc_info)
    record.fields = fields
    return record


def test_text_log_lines_cannot_be_forged() -> None:
    formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = formatter.format(_log_record("received 1.2" + FORGE, {
        "sop_instance_uid": "1.2" + FORGE, "calling_ae_title": "A alert_id=9"}))
    assert "\n" not in out and "\r" not in out
    # a value with a space cannot pose as a second field
    assert " alert_id=9" not in out.replace('"A alert_id=9"', "")
    # a traceback keeps its lines, but every one is marked as the record's continuation
    out = formatter.format(_log_record("decoder failed", {}, exc=True))
    first, *rest = out.split("\n")
    assert "decoder failed" in first and rest
    assert all(line.startswith("  | ") for line in rest)
    assert not any(line.startswith(("FORGED", "Bcc")) for line in out.splitlines())
    assert "\r" not in out


def test_json_log_lines_keep_the_value_exactly() -> None:
    out = JsonFormatter().format(_log_record("received", {"uid": "1.2" + FORGE}, exc=True))
    assert "\n" not in out and "\r" not in out
    assert json.loads(out)["uid"] == "1.2" + FORGE


# ---------------------------------------------------------------------------------------------
# The audit database as a hostile sender leaves it, read by the audit commands


def _fill(data: Path, rows: list[tuple[str, str]]) -> None:
    """One flagged decision per ``(sop_instance_uid, calling_ae_title)``."""
    engine = open_database(f"sqlite:///{data / 'audit.db'}")
    now = dt.datetime.now(dt.UTC)
    receipts = [Receipt(
        sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.66.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1", archive_path=f"archive/{i}.dcm",
        placement=Placement.PRIMARY, size_bytes=100, calling_ae_title=aet, called_ae_title="SRO",
        peer_address="127.0.0.1", association_id=None, source=Source.C_STORE, status=0xC001,
        received_at=now,
        record=DecodeRecord(decision=DecisionKind.INVALID, reason="bad" + FORGE,
                            reason_code=InvalidReason.UNREADABLE, model=MODEL,
                            sop_instance_uid=uid),
        alert=AlertMessage("s", "b", ("physics@example.org",)),
    ) for i, (uid, aet) in enumerate(rows)]
    with Session(engine) as session, session.begin():
        record_receipts(session, receipts)
    engine.dispose()


HOSTILE = [("1.2.3.1", "[/]"), ("1.2.3.2", "[bold red]X[/bold red]"),
           ("=HYPERLINK(\"http://x\")", "+SUM(A1)"), ("-1+2", "@cmd"),
           ("\tTAB", "\rCR"), ("1.2.3.3", "ESC\x1b[2J")]


def test_audit_list_shows_markup_literally(tmp_path: Path) -> None:
    _fill(tmp_path, HOSTILE)
    rc, out = cli("audit", "--data-dir", str(tmp_path), "list")
    assert rc == 0
    assert f"{len(HOSTILE)} decision(s)" in out
    assert "[/]" in out and "[bold red]X[/bold red]" in out
    assert "\x1b[2J" not in out and "ESC\\x1b[2J" in out


def test_csv_export_has_no_formula(tmp_path: Path) -> None:
    _fill(tmp_path, HOSTILE)
    rc, out = cli("audit", "--data-dir", str(tmp_path), "export", "--format", "csv")
    assert rc == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == len(HOSTILE)
    for line in table:
        for key, value in line.items():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (key, value)
    got = {(line["sop_instance_uid"], line["calling_ae_title"]) for line in table}
    # the value is kept after the quote mark that makes it text
    assert ("'=HYPERLINK(\"http://x\")", "'+SUM(A1)") in got
    assert ("'-1+2", "'@cmd") in got
    assert ("'\tTAB", "'\rCR") in got
    # numbers stay numbers (a negative number is no formula)
    assert all(line["dimse_status"] == str(0xC001) for line in table)


def test_ack_refuses_what_it_cannot_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(tmp_path, [("1.2.3.1", "CONSOLE1")])
    base = ("audit", "--data-dir", str(tmp_path), "ack", "1.2.3.1")
    for extra, words in [
        (("--by", "x" * 100_000), "--by"),
        (("--by", "J. Physicist\nroot"), "--by"),
        (("--by", "J. Physicist", "--note", "y" * 100_000), "--note"),
        # argv arrives with surrogateescape: the bytes b"caf\xe9" of a Latin-1 terminal
        (("--by", "J. Physicist", "--note", b"caf\xe9".decode("utf-8", "surrogateescape")),
         "UTF-8"),
        (("--by", b"J\xe9".decode("utf-8", "surrogateescape")), "UTF-8"),
    ]:
        capsys.readouterr()
        rc, _ = cli(*base, *extra)
        err = capsys.readouterr().err
        assert rc == 2, extra[:2]
        assert words in err and "Traceback" not in err
    rows = json.loads(cli("audit", "--data-dir", str(tmp_path), "show", "1.2.3.1")[1])
    assert rows["acknowledgements"] == []
    # a multi-line note in UTF-8 is fine and kept exactly
    rc, _ = cli(*base, "--by", "J. Physicist", "--note", "checked\nprofile fixed: café")
    assert rc == 0
    acks = json.loads(cli("audit", "--data-dir", str(tmp_path), "show", "1.2.3.1")[1])[
        "acknowledgements"]
    assert [(a["by"], a["note"]) for a in acks] == [("J. Physicist",
                                                     "checked\nprofile fixed: café")]


def test_show_and_ack_of_a_uid_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(tmp_path, [("1.2.3.1", "CONSOLE1")])
    bad = b"1.2.\xff".decode("utf-8", "surrogateescape")
    for action in (("show", bad), ("ack", bad, "--by", "J. Physicist")):
        rc, _ = cli("audit", "--data-dir", str(tmp_path), *action)
        err = capsys.readouterr().err
        assert rc == 2 and "UTF-8" in err and "Traceback" not in err
