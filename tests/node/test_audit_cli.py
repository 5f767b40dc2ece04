"""``sro-decoder audit``: list, show, ack (added rows, never edits) and export, on the database
``serve`` wrote, found through the same ``--config``/``--data-dir``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.node.conftest import cli, export, make_settings, needs_dcmtk, sro_files, storescu

FLAGGED = {"ambiguous", "out_of_distribution", "invalid"}


@pytest.fixture
def filled(tmp_path: Path, sro_dir: Path, node_factory: Any) -> Path:
    data = tmp_path / "data"
    node = node_factory(make_settings(data))
    assert storescu(node.address[1], sro_files(sro_dir)).returncode == 0
    node.stop()
    return data


@needs_dcmtk
def test_list_filters(filled: Path) -> None:
    rows = export(filled)
    flagged = [r for r in rows.values() if r["decision"] in FLAGGED]
    confident = [r for r in rows.values() if r["decision"] == "confident"]
    assert flagged and confident

    rc, out = cli("audit", "--data-dir", str(filled), "list")
    assert rc == 0
    assert f"{len(rows)} decision(s)" in out
    rc, out = cli("audit", "--data-dir", str(filled), "list", "--flagged")
    assert rc == 0 and f"{len(flagged)} decision(s)" in out
    assert all(r["sop_instance_uid"][-12:] in out.replace("\n", "").replace(" ", "").replace(
        "│", "") for r in flagged)
    rc, out = cli("audit", "--data-dir", str(filled), "list", "--decision", "confident")
    assert f"{len(confident)} decision(s)" in out
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    rc, out = cli("audit", "--data-dir", str(filled), "list", "--since", future)
    assert rc == 0 and "0 decision(s)" in out
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    rc, out = cli("audit", "--data-dir", str(filled), "list", "--since", past)
    assert f"{len(rows)} decision(s)" in out


@needs_dcmtk
def test_ack_adds_records_and_show_tells_all(filled: Path) -> None:
    rows = export(filled)
    uid = next(u for u, r in rows.items() if r["decision"] in FLAGGED)
    rc, out = cli("audit", "--data-dir", str(filled), "ack", uid, "--by", "J. Physicist",
                  "--note", "console set to cm; profile fixed")
    assert rc == 0 and "acknowledged" in out
    rc, _ = cli("audit", "--data-dir", str(filled), "ack", uid, "--by", "Second Reader")
    assert rc == 0
    acks = export(filled)[uid]["acknowledgements"]
    assert [a["by"] for a in acks] == ["J. Physicist", "Second Reader"]
    assert acks[0]["note"] == "console set to cm; profile fixed"
    assert acks[1]["note"] is None

    rc, out = cli("audit", "--data-dir", str(filled), "show", uid)
    assert rc == 0
    shown = json.loads(out)
    assert shown["sop_instance_uid"] == uid
    assert shown["decision"] == rows[uid]["decision"]
    assert len(shown["acknowledgements"]) == 2
    assert shown["alerts"] and shown["alerts"][0]["subject"]

    rc, _ = cli("audit", "--data-dir", str(filled), "show", "1.2.3.999")
    assert rc == 1
    rc, _ = cli("audit", "--data-dir", str(filled), "ack", "1.2.3.999", "--by", "x")
    assert rc == 1


@needs_dcmtk
def test_export_csv_matches_jsonl(filled: Path, tmp_path: Path) -> None:
    rows = export(filled)
    rc, out = cli("audit", "--data-dir", str(filled), "export", "--format", "csv")
    assert rc == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == len(rows)
    for line in table:
        row = rows[line["sop_instance_uid"]]
        assert line["decision"] == row["decision"]
        assert line["calling_ae_title"] == "CONSOLE1"
        assert line["alert_state"] == row["alert_state"]
        assert line["received_at"] == row["received_at"]

    # --config finds the same database as --data-dir
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{filled}"\n')
    rc, out = cli("audit", "--config", str(config), "export")
    assert rc == 0 and len(out.splitlines()) == len(rows)


def test_audit_without_a_database_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = cli("audit", "--data-dir", str(tmp_path / "nowhere"), "list")
    assert rc == 1
    assert "no audit database" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_equivalent_probability_and_open_components_in_list_show_export(
    tmp_path: Path, sro_dir: Path
) -> None:
    """docs/contract.md section 4: the equivalent probability, settled and open components and
    the reason of a confident decision with open components, in every view of the record."""
    from sqlalchemy.orm import Session

    from model.decoders.analytic import AnalyticDecoder
    from model.pipeline import decode_files, decode_options
    from node.audit.store import open_database, record_receipts
    from node.records import Placement, Receipt, Source

    records = [r for r, _ in decode_files(sro_files(sro_dir), AnalyticDecoder(),
                                          decode_options())]
    now = dt.datetime.now(dt.UTC)
    engine = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    with Session(engine) as session, session.begin():
        record_receipts(session, [Receipt(
            sop_instance_uid=r.sop_instance_uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.66.1",
            transfer_syntax_uid="1.2.840.10008.1.2.1", archive_path=f"archive/{i}.dcm",
            placement=Placement.PRIMARY, size_bytes=100, calling_ae_title="CONSOLE1",
            called_ae_title="SRO", peer_address="127.0.0.1", association_id=None,
            source=Source.C_STORE, status=0, received_at=now, record=r)
            for i, r in enumerate(records)])
    engine.dispose()
    open_ = next(r for r in records if r.decision.value == "confident" and r.open)
    uid = str(open_.sop_instance_uid)
    assert open_.reason and "not determined" in open_.reason

    rc, out = cli("audit", "--data-dir", str(tmp_path), "list")
    assert rc == 0 and max(len(line) for line in out.splitlines()) <= 120
    assert "p≡" in out and "open" in out
    letters = "".join(c.value[0].upper() for c in open_.open)
    line = next(x for x in out.splitlines() if x.strip().startswith(now.strftime("%Y-%m-%d"))
                and f"{open_.equivalent_probability:.3f} {letters}" in x)
    assert "confident" in line

    rc, out = cli("audit", "--data-dir", str(tmp_path), "show", uid)
    shown = json.loads(out)
    assert shown["equivalent_probability"] == open_.equivalent_probability
    assert shown["open"] == [c.value for c in open_.open]
    assert shown["settled"] == [c.value for c in open_.settled]
    assert shown["reason"] == open_.reason

    rc, out = cli("audit", "--data-dir", str(tmp_path), "export", "--format", "csv")
    row = next(x for x in csv.DictReader(io.StringIO(out)) if x["sop_instance_uid"] == uid)
    assert float(row["equivalent_probability"]) == pytest.approx(open_.equivalent_probability)
    assert row["open"] == " ".join(c.value for c in open_.open)
    assert row["settled"] == " ".join(c.value for c in open_.settled)
    assert row["reason"] == open_.reason
    ood = [r for r in records if r.likely_causes]
    for r in ood:
        line_ = next(x for x in csv.DictReader(io.StringIO(out))
                     if x["sop_instance_uid"] == r.sop_instance_uid)
        assert json.loads(line_["likely_causes"])[0] == r.likely_causes[0].sentence
