"""End to end: real senders push SROs to an in-process node; the audit export and the e-mails
say what ``sro-decoder decode`` says about the same files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import SpatialRegistrationStorage  # type: ignore[attr-defined]

from tests.node.conftest import (
    echo_ok,
    echoscu,
    export,
    make_settings,
    needs_dcmtk,
    sro_files,
    storescu,
    storescu_results,
)


def decode_cli(folder: Path, *model: str) -> dict[str, dict[str, Any]]:
    """What ``sro-decoder decode --json`` (a separate process) says about each file."""
    proc = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "decode", "--json", *model, str(folder)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return {row["sop_instance_uid"]: row for row in rows}


@needs_dcmtk
def test_storescu_push_matches_decode_and_flags_arrive_by_email(
    tmp_path: Path, sro_dir: Path, smtp: Any, node_factory: Any
) -> None:
    sink, smtp_port = smtp
    node = node_factory(make_settings(tmp_path / "data", smtp_port, model={"name": ""}))
    port = node.address[1]
    files = sro_files(sro_dir)

    assert echoscu(port).returncode == 0
    proc = storescu(port, files)
    assert proc.returncode == 0, proc.stderr
    results = storescu_results(proc.stdout + proc.stderr)
    assert len(results) == len(files)
    assert all(status.startswith("(Success)") for _, status in results), results

    expected = decode_cli(sro_dir)
    got = export(tmp_path / "data")
    assert set(got) == set(expected)
    for uid, row in got.items():
        assert row["decision"] == expected[uid]["decision"], uid
        assert row["convention"] == expected[uid]["convention"], uid
        assert row["calling_ae_title"] == "CONSOLE1"
        assert row["received_at"]
        assert row["acknowledgements"] == []
        assert Path(row["path"]).is_file()
        assert row["path"].endswith(row["archive_path"])
    flagged = {uid for uid, row in expected.items()
               if row["decision"] in ("ambiguous", "out_of_distribution", "invalid")}
    assert flagged, "the synthetic set must hold flagged cases"
    assert len(flagged) < len(expected)

    messages = sink.wait_for(len(flagged))
    time.sleep(0.3)  # no extra e-mail may follow
    assert len(sink.messages) == len(flagged)
    by_uid = {}
    for msg in messages:
        body = msg.get_payload(decode=True).decode()
        uid = next(u for u in flagged if u in msg["Subject"])
        by_uid[uid] = body
        assert msg["To"] == "physics@example.org"
        assert "CONSOLE1" in body
        assert f"Decision: {expected[uid]['decision']}" in body
        assert "Most probable conventions" in body
        assert "What to check" in body
        assert "SYNTHETIC" not in body and "SYNTH0" not in body  # no patient identity
    assert set(by_uid) == flagged
    # the export shows the alerts as sent
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = {export(tmp_path / "data")[u]["alert_state"] for u in flagged}
        if states == {"sent"}:
            break
        time.sleep(0.1)
    assert states == {"sent"}
    assert {got[u]["alert_state"] for u in set(got) - flagged} == {"none"}


def test_pynetdicom_push_and_duplicate(tmp_path: Path, sro_dir: Path, node_factory: Any) -> None:
    node = node_factory(make_settings(tmp_path / "data"))
    port = node.address[1]
    files = sro_files(sro_dir)[:4]
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(SpatialRegistrationStorage)
    ae.dimse_timeout = 10

    def send(ds: pydicom.Dataset) -> int:
        # pynetdicom 3.0.4 can lose a fast C-STORE response (DOMAIN.md); resend on a new
        # association then: the node answers a second copy as it answered the first
        for _ in range(3):
            assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
            assert assoc.is_established
            status = assoc.send_c_store(ds)
            assoc.release()
            if status:
                return int(status.Status)
        raise AssertionError("no C-STORE response after three tries")

    datasets = [pydicom.dcmread(f) for f in files]
    statuses = [send(ds) for ds in datasets]
    assert statuses == [0] * len(files)
    assert send(datasets[0]) == 0  # the same object again

    expected = decode_cli(sro_dir, "--model", "analytic")
    got = export(tmp_path / "data")
    uids = {str(ds.SOPInstanceUID) for ds in datasets}
    assert set(got) == uids
    for uid in uids:
        assert got[uid]["decision"] == expected[uid]["decision"]
        assert got[uid]["calling_ae_title"] == "PACS1"
    first = str(datasets[0].SOPInstanceUID)
    assert got[first]["duplicates"] >= 1
    assert sum(row["duplicates"] for row in got.values()) >= 1
    # the second copy is kept on disk, apart from the first
    assert list((tmp_path / "data" / "archive" / "duplicates").rglob(f"{first}.*.dcm"))
    assert echo_ok(port)


def test_sro_without_offset_is_recorded_not_flagged(
    tmp_path: Path, node_factory: Any, smtp: Any
) -> None:
    import numpy as np

    from model.dicom.sro import write

    sink, smtp_port = smtp
    node = node_factory(make_settings(tmp_path / "data", smtp_port))
    ds = write(np.eye(4), None)
    ae = AE(ae_title="CONSOLE9")
    ae.add_requested_context(SpatialRegistrationStorage)
    ae.dimse_timeout = 10
    status = None
    for _ in range(3):  # pynetdicom can lose a fast response (DOMAIN.md)
        assoc = ae.associate("127.0.0.1", node.address[1], ae_title="SRO_DECODER")
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assoc.release()
        if status:
            break
    assert status and int(status.Status) == 0
    row = export(tmp_path / "data")[str(ds.SOPInstanceUID)]
    assert row["decision"] == "no_offset"
    assert len(row["implied_offsets"]) == 96  # one per hypothesis (docs/contract.md section 2)
    assert row["alert_state"] == "none" and row["flagged"] is False
    time.sleep(0.5)
    assert sink.messages == []
