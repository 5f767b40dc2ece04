"""The REST API (decode byte for byte as `decode --json`, records), STOW-RS through the C-STORE
path, /readyz and /metrics (issue 13 items 4-6)."""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from model.training.synth import SynthConfig, generate, write_set
from node.audit.users import Role
from node.metrics import parse_exposition
from tests.node.conftest import export, needs_dcmtk, sro_files, storescu


def _decode_cli_lines(folder: Path, names: list[str], *flags: str) -> list[bytes]:
    """What `sro-decoder decode --json` prints for these files (run in ``folder``)."""
    from node.cli.main import main

    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out):
            assert main(["decode", "--json", *flags, *names]) == 0
    finally:
        os.chdir(cwd)
    return [line.encode() + b"\n" for line in out.getvalue().splitlines()]


def test_rest_decode_is_byte_for_byte_decode_json(web_factory: Any, sro_dir: Path) -> None:
    w = web_factory()
    token = w.user("view", Role.VIEWER)
    names = [p.name for p in sro_files(sro_dir)]
    expected = _decode_cli_lines(sro_dir, names)
    auth = {"Authorization": f"Bearer {token}"}
    with w.client() as c:
        for name, line in zip(names, expected, strict=True):
            r = c.post("/api/v1/decode", headers=auth,
                       files={"file": (name, (sro_dir / name).read_bytes())})
            assert r.status_code == 200 and r.content == line, name
        # and with flags: the analytic model, a coarser display step, an offset override
        name = names[0]
        flags = ["--model", "analytic", "--rotation-step", "0.5", "--offset",
                 "1,2,3,0.5,0.5,0.5"]
        line = _decode_cli_lines(sro_dir, [name], *flags)[0]
        r = c.post("/api/v1/decode", headers=auth, files={"file": (name, (sro_dir / name)
                                                                  .read_bytes())},
                   params={"model": "analytic", "rotation_step": 0.5,
                           "offset": "1,2,3,0.5,0.5,0.5"})
        assert r.content == line
        r = c.post("/api/v1/decode", headers=auth, files={"file": ("junk.dcm", b"no DICOM")})
        assert r.status_code == 200 and r.json()["decision"] == "invalid"
        assert r.json()["reason_code"] == "unreadable"
        assert c.get("/api/v1/openapi.json", headers=auth).json()["paths"]["/api/v1/decode"]


def _multipart(parts: list[tuple[str, bytes]], boundary: str) -> bytes:
    out = b""
    for content_type, data in parts:
        out += (f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@needs_dcmtk
def test_stow_rs_records_each_once_with_the_decisions_of_c_store(
        web_factory: Any, tmp_path: Path) -> None:
    folder = tmp_path / "sros100"
    write_set(generate(SynthConfig(n=100, seed=23, corrupt_fraction=0.3)), folder)
    files = sro_files(folder)
    assert len(files) == 100
    stow_node = web_factory(name="stow")
    token = stow_node.user("sender", Role.VIEWER)
    boundary = uuid.uuid4().hex
    body = _multipart([("application/dicom", f.read_bytes()) for f in files]
                      + [("application/dicom", b"this is not DICOM at all")], boundary)
    headers = {"Authorization": f"Bearer {token}",
               "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    with stow_node.client() as c:
        r = c.post("/dicomweb/studies", content=body, headers=headers)
        assert r.status_code == 202, r.text  # some stored, one failed
        assert r.headers["content-type"].startswith("application/dicom+json")
        answer = r.json()
        # a session cookie is no STOW-RS credential; other media types are refused
        bad = c.post("/dicomweb/studies", content=body,
                     headers={**headers, "Content-Type": "application/json"})
        assert bad.status_code == 415
    failed = answer["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed if "00081155" not in f] == [0xC000]

    cstore_node = web_factory(name="cstore", with_web=False)
    assert storescu(cstore_node.dicom_port, files).returncode == 0
    via_stow, via_cstore = export(stow_node.data_dir), export(cstore_node.data_dir)
    assert set(via_cstore) <= set(via_stow) and len(via_stow) == 101
    for uid, row in via_cstore.items():
        assert via_stow[uid]["decision"] == row["decision"], uid
        assert via_stow[uid]["convention"] == row["convention"], uid
        assert via_stow[uid]["source"] == "stow-rs"
    junk = [r for u, r in via_stow.items() if u not in via_cstore]
    assert len(junk) == 1 and junk[0]["reason_code"] == "unreadable"
    stored = {i["00081155"]["Value"][0] for i in answer.get("00081199", {}).get("Value", [])}
    failed_uids = {i["00081155"]["Value"][0] for i in failed if "00081155" in i}
    assert stored | failed_uids == set(via_cstore)
    assert failed_uids == {u for u, r in via_cstore.items() if r["dimse_status"] != 0}


@needs_dcmtk
def test_metrics_match_the_audit_export_and_readyz_follows_the_database(
        web_factory: Any, sro_dir: Path) -> None:
    w = web_factory()
    token = w.user("monitor", Role.VIEWER)
    auth = {"Authorization": f"Bearer {token}"}
    files = sro_files(sro_dir)
    assert storescu(w.dicom_port, files[:20], "CONSOLE1").returncode == 0
    assert storescu(w.dicom_port, files[20:], "CONSOLE2").returncode == 0
    assert storescu(w.dicom_port, files[:3], "CONSOLE2").returncode == 0  # duplicates
    with w.client() as c:
        samples = list(parse_exposition(c.get("/metrics", headers=auth).text))
        ready = c.get("/readyz", headers=auth)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        database = Path(w.settings.data_dir / "audit.db")
        mode = database.stat().st_mode
        os.chmod(database, 0)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                r = c.get("/readyz", headers=auth)
                if r.status_code == 503:
                    break
                time.sleep(0.2)
            assert r.status_code == 503 and r.json()["checks"]["database"]["ok"] is False
            assert r.json()["checks"]["archive"]["ok"] is True
        finally:
            os.chmod(database, mode)
        assert c.get("/readyz", headers=auth).status_code == 200
    got = Counter({(s[1]["decision"], s[1]["calling_ae_title"]): s[2] for s in samples
                   if s[0] == "sro_decoder_objects_received_total"})
    rows = export(w.data_dir).values()
    assert got == Counter((r["decision"], r["calling_ae_title"]) for r in rows)
    value = {s[0]: s[2] for s in samples if not s[1]}
    assert value["sro_decoder_cstore_duration_seconds_count"] == len(files) + 3
    assert value["sro_decoder_associations_open"] == 0
    assert value["sro_decoder_outbox_depth"] >= 0
    dups = [s for s in samples if s[0] == "sro_decoder_duplicates_received_total"]
    assert [(s[1]["calling_ae_title"], s[2]) for s in dups] == [("CONSOLE2", 3)]


@pytest.mark.parametrize("query", ["decision=nonsense", "since=yesterday"])
def test_bad_filters_are_refused(web_factory: Any, query: str) -> None:
    w = web_factory()
    token = w.user("v", Role.VIEWER)
    with w.client() as c:
        r = c.get(f"/api/v1/records?{query}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 422


@needs_dcmtk
def test_a_paired_sro_is_listed_once_with_its_current_decision(web_factory: Any,
                                                               tmp_path: Path) -> None:
    """An SRO recorded ``no_offset`` before its companion, then decoded from the companion's
    offset: the earlier decision is history, so the list and the counts show the SRO once."""
    from node.cli.main import main

    folder = tmp_path / "xvi"
    assert main(["synth", "--layout", "xvi", "--n", "2", "--out", str(folder),
                 "--seed", "5"]) == 0
    sros, companions = sorted(folder.glob("sro_*.dcm")), sorted(folder.glob("rps_*.dcm"))
    node = web_factory(name="paired")
    token = node.user("viewer", Role.VIEWER)
    assert storescu(node.dicom_port, sros).returncode == 0
    assert storescu(node.dicom_port, companions).returncode == 0
    uids = {uid for uid, row in export(node.data_dir).items() if row["decision"] != "offset_only"}
    assert len(uids) == len(sros)
    with node.client() as c:
        for uid in uids:
            page = c.get("/api/v1/records", params={"sop_instance_uid": uid},
                         headers={"Authorization": f"Bearer {token}"}).json()
            assert page["total"] == 1, page
            assert page["records"][0]["decision"] != "no_offset", page
