"""The Elekta XVI RPS companion over the network (docs/contract.md section 1, offset sources 3).

Real DCMTK ``storescu``, a real node in-process on port 0, a real SQLite audit database. SROs
as XVI writes them (no offset of their own) and their RPS companions (Raw Data Storage, a ZIP
holding the ``.INI.XVI``) are sent in both orders, with a restart in the middle; every SRO must
end with the decision ``sro-decoder decode`` gives for the same folder, from its companion's
offset.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from model.conventions import HYPOTHESES
from model.dicom import sro
from model.training.synth import SynthConfig, generate
from node.dimse.service import Node
from node.settings import Settings
from tests.node.conftest import STORESCU, cli, export, make_settings, storescu, storescu_results

pytestmark = pytest.mark.skipif(STORESCU is None, reason="DCMTK storescu not installed")

RAW_DATA_STORAGE = "1.2.840.10008.5.1.4.1.1.66"
BASE_TIME = dt.datetime(2026, 11, 30, 9, 0, 0)


def ini_xvi(when: dt.datetime, t_mm: tuple[float, ...], r_deg: tuple[float, ...],
            values: str | None = None) -> bytes:
    """An ``.INI.XVI`` alignment section as XVI writes it: cm, angles in [0, 360)."""
    lat, lon, vert = (v / 10.0 for v in t_mm)
    pitch, roll, rotation = (v % 360.0 for v in r_deg)
    line = values or (f"{lat:.4f}, {lon:.4f}, {vert:.4f}, {rotation:.4f}, {pitch:.4f}, "
                      f"{roll:.4f}")
    return (f"[ALIGNMENT.{when:%Y%m%d}; {when:%H:%M:%S}]\r\n"
            f"Align.clip1={line}\r\nAlign.correction={line}\r\n"
            f"CouchShiftLat={-lat:.4f}\r\nCouchShiftLong={-lon:.4f}\r\n"
            f"CouchShiftHeight={-vert:.4f}\r\nIECAngleConvention=1\r\n").encode()


def rps_zip(uid: str, ini: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{uid}.INI.XVI", ini)
        z.writestr(f"{uid}.INI", b"[GENERAL]\r\n")
    return buf.getvalue()


def companion(patient_id: str, study_uid: str, when: dt.datetime, archive: bytes,
              uid: str | None = None) -> Dataset:
    """An XVI RPS object: Raw Data Storage (PS3.3 A.37) with the ZIP in (0021,xx3A)."""
    uid = uid or sro.new_uid()
    ds = Dataset()
    ds.SOPClassUID = RAW_DATA_STORAGE
    ds.SOPInstanceUID = uid
    ds.PatientName = "SYNTHETIC^XVI"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = sro.new_uid()
    ds.Modality = "REG"
    ds.Manufacturer = "ELEKTA"
    ds.ManufacturerModelName = "Elekta XVI"
    ds.StationName = "XVI_LINAC1"
    ds.SeriesDescription = "RPS"
    ds.ContentDate = f"{when:%Y%m%d}"
    ds.ContentTime = f"{when:%H%M%S}"
    block = ds.private_block(0x0021, "Elekta: zip file", create=True)
    block.add_new(0x3A, "UN", archive)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RAW_DATA_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def xvi_set(folder: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` XVI-layout cases: an SRO without an offset and its RPS companion each, written
    to ``folder``; returns per case the two files, UIDs and the true convention."""
    data = generate(SynthConfig(n=n, seed=seed, isocenter_fraction=0.0))
    b = data.batch
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for j in range(n):
        pid, study = f"XVI{seed:02d}{j:04d}", sro.new_uid()
        when = BASE_TIME + dt.timedelta(minutes=3 * j)
        s = sro.write(b.matrix[j], None, patient_id=pid, study_instance_uid=study,
                      content_datetime=when, station_name="XVI_LINAC1")
        t = tuple(float(v) for v in b.translation_mm[j])
        r = tuple(float(v) for v in b.rotation_deg[j])
        c_uid = sro.new_uid()
        c = companion(pid, study, when + dt.timedelta(seconds=20),
                      rps_zip(c_uid, ini_xvi(when + dt.timedelta(seconds=20), t, r)), c_uid)
        sro_path, comp_path = folder / f"case{j:03d}_sro.dcm", folder / f"case{j:03d}_rps.dcm"
        s.save_as(sro_path, enforce_file_format=True)
        c.save_as(comp_path, enforce_file_format=True)
        truth = HYPOTHESES[int(data.truth[j])] if data.truth[j] >= 0 else None
        cases.append({"sro": sro_path, "rps": comp_path, "sro_uid": str(s.SOPInstanceUID),
                      "rps_uid": c_uid, "truth": truth})
    return cases


def decode_folder(folder: Path) -> dict[str, dict[str, Any]]:
    rc, out = cli("decode", "--json", "--model", "analytic", str(folder))
    assert rc == 0, out
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {row["sop_instance_uid"]: row for row in rows}


def settings_for(data_dir: Path) -> Settings:
    return make_settings(data_dir)


def sent_ok(port: int, paths: list[Path]) -> None:
    proc = storescu(port, paths)
    results = storescu_results(proc.stdout + proc.stderr)
    assert len(results) == len(paths), proc.stdout + proc.stderr
    assert all("Success" in status for _, status in results), results


def test_xvi_sets_pair_in_either_order_across_a_restart(
        tmp_path: Path, node_factory: Callable[[Settings], Node]) -> None:
    cases = xvi_set(tmp_path / "xvi", 24, seed=5)
    half = len(cases) // 2
    data_dir = tmp_path / "node"
    node = node_factory(settings_for(data_dir))
    port = node.address[1]
    # first half: SROs first; second half: companions first; then a restart; then the rest
    sent_ok(port, [c["sro"] for c in cases[:half]])
    sent_ok(port, [c["rps"] for c in cases[half:]])
    node.stop(grace_s=2.0)
    node = node_factory(settings_for(data_dir))
    port = node.address[1]
    sent_ok(port, [c["rps"] for c in cases[:half]])
    sent_ok(port, [c["sro"] for c in cases[half:]])

    records = export(data_dir)
    expected = decode_folder(tmp_path / "xvi")
    wrong = 0
    for c in cases:
        got, want = records[c["sro_uid"]], expected[c["sro_uid"]]
        assert got["offset_source"] is not None, got
        assert got["offset_source"]["kind"] == "companion"
        assert got["offset_source"]["sop_instance_uid"] == c["rps_uid"]
        assert got["decision"] == want["decision"], (got["reason"], want["reason"])
        assert got["convention"] == want["convention"]
        assert got["pairing"]["companion_sop_instance_uids"] == [c["rps_uid"]]
        comp = records[c["rps_uid"]]
        assert comp["decision"] == "offset_only"
        assert comp["pairing"]["sro_sop_instance_uids"] == [c["sro_uid"]]
        if got["decision"] == "confident" and c["truth"] is not None:
            top = got["convention"]
            equivalent = top == c["truth"].as_dict() or any(
                a["convention"] == c["truth"].as_dict() for a in got["alternatives"])
            wrong += not equivalent
    assert wrong == 0
    confident = sum(records[c["sro_uid"]]["decision"] == "confident" for c in cases)
    assert confident >= len(cases) // 2
    # the SROs sent first keep their no_offset decision as history
    for c in cases[:half]:
        history = records[c["sro_uid"]]["pairing"]["earlier_decisions"]
        assert [h["decision"] for h in history] == ["no_offset"]


def test_two_companions_for_one_sro_are_flagged_never_guessed(
        tmp_path: Path, node_factory: Callable[[Settings], Node]) -> None:
    cases = xvi_set(tmp_path / "xvi", 1, seed=7)
    c = cases[0]
    # a second companion for the same SRO, as near in time as the first
    rps = pydicom.dcmread(c["rps"])
    twin_uid = sro.new_uid()
    twin = companion(str(rps.PatientID), str(rps.StudyInstanceUID), BASE_TIME,
                     rps_zip(twin_uid, ini_xvi(BASE_TIME + dt.timedelta(seconds=20),
                                               (1.0, 2.0, 3.0), (0.5, 0.2, 359.8))), twin_uid)
    twin_path = tmp_path / "xvi" / "case000_rps_twin.dcm"
    twin.save_as(twin_path, enforce_file_format=True)
    data_dir = tmp_path / "node"
    node = node_factory(settings_for(data_dir))
    sent_ok(node.address[1], [c["sro"], c["rps"], twin_path])
    records = export(data_dir)
    s = records[c["sro_uid"]]
    assert s["decision"] == "no_offset" and s["flagged"], s
    checks = {k["name"]: k for k in s["checks"]}
    assert checks["pairing"]["result"] == "ambiguous"
    assert sorted(checks["pairing"]["details"]["competitors"]) == sorted(
        [c["rps_uid"], twin_uid])
    assert s["offset_source"] is None
    for uid in (c["rps_uid"], twin_uid):
        comp = records[uid]
        assert comp["decision"] == "offset_only"
        assert comp["pairing"]["state"] == "ambiguous"
    twin_record = records[twin_uid]
    assert twin_record["flagged"] and twin_record["alert_state"] != "none"
    # history: no_offset, then decoded from the first companion, then flagged ambiguous
    history = [h["decision"] for h in s["pairing"]["earlier_decisions"]]
    assert history[0] == "no_offset" and len(history) == 2


def test_a_companion_with_a_bad_zip_is_invalid_and_the_node_keeps_serving(
        tmp_path: Path, node_factory: Callable[[Settings], Node]) -> None:
    cases = xvi_set(tmp_path / "xvi", 1, seed=9)
    c = cases[0]
    bad_uid = sro.new_uid()
    bad = companion("XVIBAD", sro.new_uid(), BASE_TIME, b"PK\x03\x04 not a zip at all", bad_uid)
    bad_path = tmp_path / "bad_rps.dcm"
    bad.save_as(bad_path, enforce_file_format=True)
    data_dir = tmp_path / "node"
    node = node_factory(settings_for(data_dir))
    proc = storescu(node.address[1], [bad_path])
    results = storescu_results(proc.stdout + proc.stderr)
    assert len(results) == 1 and "Success" not in results[0][1], results
    sent_ok(node.address[1], [c["sro"], c["rps"]])  # still serving, still pairing
    records = export(data_dir)
    r = records[bad_uid]
    assert r["decision"] == "invalid" and r["reason_code"] == "companion_zip_invalid"
    assert r["flagged"] and r["dimse_status"] != 0
    assert records[c["sro_uid"]]["offset_source"]["sop_instance_uid"] == c["rps_uid"]


def test_restart_between_sro_and_companion_loses_nothing(
        tmp_path: Path, node_factory: Callable[[Settings], Node]) -> None:
    cases = xvi_set(tmp_path / "xvi", 2, seed=13)
    data_dir = tmp_path / "node"
    node = node_factory(settings_for(data_dir))
    sent_ok(node.address[1], [cases[0]["sro"], cases[1]["rps"]])
    before = export(data_dir)
    assert before[cases[0]["sro_uid"]]["decision"] == "no_offset"
    assert before[cases[0]["sro_uid"]]["pairing"]["state"] == "awaiting_offset"
    assert before[cases[1]["rps_uid"]]["pairing"]["state"] == "awaiting_sro"
    node.stop(grace_s=2.0)
    node = node_factory(settings_for(data_dir))
    sent_ok(node.address[1], [cases[0]["rps"], cases[1]["sro"]])
    after = export(data_dir)
    expected = decode_folder(tmp_path / "xvi")
    for c in cases:
        assert after[c["sro_uid"]]["offset_source"]["sop_instance_uid"] == c["rps_uid"]
        assert after[c["sro_uid"]]["decision"] == expected[c["sro_uid"]]["decision"]
        assert after[c["rps_uid"]]["pairing"]["state"] == "paired"
    # audit show and the CSV export name the pair both ways
    c = cases[0]
    rc, out = cli("audit", "--data-dir", str(data_dir), "show", c["rps_uid"])
    assert rc == 0 and json.loads(out)["pairing"]["sro_sop_instance_uids"] == [c["sro_uid"]]
    rc, out = cli("audit", "--data-dir", str(data_dir), "show", c["sro_uid"])
    shown = json.loads(out)
    assert shown["offset_source"]["sop_instance_uid"] == c["rps_uid"]
    assert shown["pairing"]["companion_sop_instance_uids"] == [c["rps_uid"]]
    rc, out = cli("audit", "--data-dir", str(data_dir), "export", "--format", "csv")
    rows = {r["sop_instance_uid"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows[c["sro_uid"]]["offset_source"] == f"companion:{c['rps_uid']}"
    assert rows[c["rps_uid"]]["paired_sop_instance_uids"] == c["sro_uid"]
    assert rows[c["rps_uid"]]["decision"] == "offset_only"


def test_reconciliation_pairs_objects_archived_but_not_recorded(
        tmp_path: Path, node_factory: Callable[[Settings], Node]) -> None:
    """An SRO and its companion archived while the database was gone are paired at start-up."""
    cases = xvi_set(tmp_path / "xvi", 1, seed=17)
    c = cases[0]
    data_dir = tmp_path / "node"
    node = node_factory(settings_for(data_dir))
    sent_ok(node.address[1], [c["sro"], c["rps"]])
    node.stop(grace_s=2.0)
    (data_dir / "audit.db").unlink()
    for extra in ("audit.db-wal", "audit.db-shm"):
        (data_dir / extra).unlink(missing_ok=True)
    node = node_factory(settings_for(data_dir))
    assert node.reconciled == 2
    records = export(data_dir)
    assert records[c["sro_uid"]]["offset_source"]["sop_instance_uid"] == c["rps_uid"]
    assert records[c["rps_uid"]]["pairing"]["sro_sop_instance_uids"] == [c["sro_uid"]]
    assert np.isfinite(records[c["sro_uid"]]["probability"])
