"""``sro-decoder decode`` as docs/contract.md section 5 describes it, run as a real subprocess."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from model.conventions import N_HYPOTHESES, Convention, PatientPosition, RotationOrder
from model.dicom.sro import write
from model.geometry import forward
from model.offset import CouchOffset
from model.training.synth import SynthConfig, generate, write_set

CLI = [sys.executable, "-m", "node.cli.main"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=False, timeout=120)


def _lines(out: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_set(generate(SynthConfig(n=40, seed=7, corrupt_fraction=0.25)), out)
    return out


def test_folder_gives_one_line_per_sro_in_name_order(synth_dir: Path) -> None:
    proc = _run("decode", "--json", "--model", "analytic", str(synth_dir))
    assert proc.returncode == 0, proc.stderr
    records = _lines(proc.stdout)
    truth = [json.loads(x) for x in (synth_dir / "truth.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in records] == [t["file"] for t in truth]
    assert [r["sop_instance_uid"] for r in records] == [t["sop_instance_uid"] for t in truth]
    for rec, t in zip(records, truth, strict=True):
        assert rec["model"]["name"] == "analytic"
        if t["corruption"] is None:
            assert rec["decision"] == "confident"
            # docs/contract.md section 4: a confident decision's reason names what is open
            assert (rec["reason"] is None) == (rec["open"] == [])
            assert rec["reason"] is None or "not determined" in rec["reason"]
            assert rec["convention"]["inverse"] == t["convention"]["inverse"]
            assert rec["convention"]["patient_position"] == t["convention"]["patient_position"]
            assert rec["residual"]["rotation_deg"] <= 0.05 + 1e-3
        elif rec["decision"] != "confident":
            assert rec["decision"] == "out_of_distribution"
            assert rec["reason"]


def test_record_fields(sro_file: Path) -> None:
    proc = _run("decode", "--json", "--model", "analytic", str(sro_file))
    assert proc.returncode == 0, proc.stderr
    (rec,) = _lines(proc.stdout)
    for key in (
        "path",
        "sop_instance_uid",
        "decision",
        "reason",
        "convention",
        "probability",
        "alternatives",
        "energy",
        "residual",
        "model",
    ):
        assert key in rec
    assert rec["decision"] == "confident"
    conv = Convention.from_dict(rec["convention"])
    assert conv.patient_position is PatientPosition.HFS and not conv.inverse
    assert rec["convention"]["intrinsic_order"] == conv.order.value[::-1].upper()
    # at 0.1° the six orders all round to this offset: equal shares, clinically equivalent
    assert rec["probability"] == pytest.approx(1 / 6, rel=1e-3)
    assert {a["convention"]["order"] for a in rec["alternatives"]} | {conv.order.value} == {
        o.value for o in RotationOrder
    }
    assert all(a["displacement_mm"] < 1.0 for a in rec["alternatives"])


def test_unreadable_and_invalid_files_are_records_not_tracebacks(
    tmp_path: Path, valid_sro: Dataset
) -> None:
    garbage = tmp_path / "a_garbage.dcm"
    garbage.write_bytes(b"not dicom at all" * 10)
    bad = copy.deepcopy(valid_sro)
    bad.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[
        0
    ].FrameOfReferenceTransformationMatrixType = "AFFINE"
    bad.save_as(tmp_path / "b_affine.dcm", enforce_file_format=True)
    valid_sro.save_as(tmp_path / "c_valid.dcm", enforce_file_format=True)
    proc = _run("decode", "--json", "--model", "analytic", str(tmp_path))
    assert proc.returncode == 1  # one file could not be read at all
    assert "Traceback" not in proc.stderr
    a, b, c = _lines(proc.stdout)
    assert (
        a["decision"] == "invalid" and a["reason_code"] == "unreadable" and a["convention"] is None
    )
    assert b["decision"] == "invalid" and b["reason_code"] == "matrix_type_not_rigid"
    assert "AFFINE" in b["reason"] and b["residual"] is None and b["probability"] is None
    assert c["decision"] == "confident"


def test_invalid_sro_alone_exits_zero(tmp_path: Path, valid_sro: Dataset) -> None:
    valid_sro.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    valid_sro.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    proc = _run("decode", "--json", "--model", "analytic", str(tmp_path / "ct.dcm"))
    assert proc.returncode == 0
    assert _lines(proc.stdout)[0]["reason_code"] == "not_spatial_registration"


def test_no_offset_lists_implied_offsets(tmp_path: Path) -> None:
    m = forward([[1.0, 2.0, 3.0]], [[1.0, -2.0, 0.5]])[0, 7]
    write(m, None).save_as(tmp_path / "n.dcm", enforce_file_format=True)
    proc = _run("decode", "--json", "--model", "analytic", str(tmp_path / "n.dcm"))
    (rec,) = _lines(proc.stdout)
    assert rec["decision"] == "no_offset"
    assert rec["convention"] is None and rec["probability"] is None and rec["residual"] is None
    assert len(rec["implied_offsets"]) == N_HYPOTHESES == 96
    assert np.allclose(rec["implied_offsets"][7]["rotation_deg"], [1.0, -2.0, 0.5], atol=1e-6)


def test_offset_flag_overrides_private_block(tmp_path: Path, offset: CouchOffset) -> None:
    m = forward([offset.translation_mm], [offset.rotation_deg], [offset.isocenter_mm])[0, 0]
    write(m, None).save_as(tmp_path / "x.dcm", enforce_file_format=True)
    t, r, c = offset.translation_mm, offset.rotation_deg, offset.isocenter_mm
    assert c is not None
    proc = _run(
        "decode",
        "--json",
        "--model",
        "analytic",
        str(tmp_path / "x.dcm"),
        "--offset",
        ",".join(map(str, (*t, *r))),
        "--isocenter",
        ",".join(map(str, c)),
    )
    (rec,) = _lines(proc.stdout)
    assert rec["decision"] == "confident"
    assert rec["convention"]["order"] == "xyz"
    # the wrong isocenter makes the translation disagree: nothing explains it
    proc = _run(
        "decode",
        "--json",
        "--model",
        "analytic",
        str(tmp_path / "x.dcm"),
        "--offset",
        ",".join(map(str, (*t, *r))),
        "--isocenter",
        "0,0,0",
    )
    assert _lines(proc.stdout)[0]["decision"] == "out_of_distribution"


def test_wrapped_angles_and_centimetres(tmp_path: Path) -> None:
    """An XVI-like sender: cm and [0, 360) angles, decoded through the profile flags."""
    t, r, c = (12.0, -4.0, 3.0), (-0.2, 1.5, -2.0), (0.0, 50.0, -100.0)
    m = forward([t], [r], [c])[0, 10]
    reported = CouchOffset((1.2, -0.4, 0.3), (359.8, 1.5, 358.0), c)
    write(m, reported).save_as(tmp_path / "xvi.dcm", enforce_file_format=True)
    proc = _run(
        "decode",
        "--json",
        "--model",
        "analytic",
        "--translation-unit",
        "cm",
        "--translation-step",
        "1.0",
        str(tmp_path / "xvi.dcm"),
    )
    (rec,) = _lines(proc.stdout)
    assert rec["decision"] == "confident", rec["reason"]
    assert rec["offset"]["rotation_deg"] == pytest.approx([-0.2, 1.5, -2.0])
    assert rec["offset"]["translation_mm"] == pytest.approx([12.0, -4.0, 3.0])
    # read as mm, the same file is out of distribution
    proc = _run("decode", "--json", "--model", "analytic", str(tmp_path / "xvi.dcm"))
    assert _lines(proc.stdout)[0]["decision"] == "out_of_distribution"


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "nonsense"],
        ["--offset", "1,2,3"],
        ["--rotation-step", "0"],
        ["--tolerance-mm", "-1"],
    ],
)
def test_usage_errors_exit_2(sro_file: Path, args: list[str]) -> None:
    proc = _run("decode", *args, str(sro_file))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_synth_command_writes_files_and_truth(tmp_path: Path) -> None:
    proc = _run(
        "synth",
        "--n",
        "12",
        "--out",
        str(tmp_path),
        "--seed",
        "5",
        "--corrupt-fraction",
        "0.5",
        "--rotation-range",
        "10",
        "--no-isocenter",
    )
    assert proc.returncode == 0, proc.stderr
    truth = [json.loads(x) for x in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert len(truth) == 12 == len(list(tmp_path.glob("*.dcm")))
    assert all(t["offset"]["isocenter_mm"] is None for t in truth)
    assert any(t["corruption"] for t in truth)
    assert {"file", "sop_instance_uid", "convention", "offset", "precision"} <= set(truth[0])
    # same seed, same data
    again = tmp_path / "again"
    _run(
        "synth",
        "--n",
        "12",
        "--out",
        str(again),
        "--seed",
        "5",
        "--corrupt-fraction",
        "0.5",
        "--rotation-range",
        "10",
        "--no-isocenter",
    )
    truth2 = [json.loads(x) for x in (again / "truth.jsonl").read_text().splitlines()]
    assert [t["offset"] for t in truth] == [t["offset"] for t in truth2]


def _damaged_files(folder: Path, valid_sro: Dataset) -> dict[str, bytes]:
    """One file per defect of issue 9 that ``decode`` mishandled, plus a valid one last."""
    from pydicom.uid import ExplicitVRLittleEndian

    from tests.fuzz.mutants import encode, nested_sequences, part10

    body = encode(valid_sro, ExplicitVRLittleEndian)
    uid_header = b"\x08\x00\x18\x00UI"
    ms_header = b"\x70\x00\x0a\x03SQ"
    last_ms = body.rindex(ms_header)
    files = {
        "a_bad_vr_in_uid.dcm": body.replace(uid_header, b"\x08\x00\x18\x00ZZ", 1),
        "b_truncated.dcm": body[:-300],
        "c_deep.dcm": body + nested_sequences(600, False, True),
        "d_matrix_sequence_as_ob.dcm": body[:last_ms + 4] + b"OB" + body[last_ms + 6:],
        "e_valid.dcm": body,
    }
    for name, data in files.items():
        (folder / name).write_bytes(part10(data, ExplicitVRLittleEndian,
                                           str(valid_sro.SOPInstanceUID)))
    return files


def test_a_folder_of_damaged_files_gives_a_record_for_each(tmp_path: Path,
                                                           valid_sro: Dataset) -> None:
    """Issue 9 defect 4: one bad file stopped the folder; truncated files were decoded."""
    names = list(_damaged_files(tmp_path, valid_sro))
    proc = _run("decode", "--json", "--model", "analytic", str(tmp_path))
    assert "Traceback" not in proc.stderr, proc.stderr
    records = _lines(proc.stdout)
    assert [Path(r["path"]).name for r in records] == names
    *bad, good = records
    for rec in bad:
        assert (rec["decision"], rec["reason_code"]) == ("invalid", "unreadable"), rec["path"]
        assert rec["reason"]
    assert good["decision"] == "confident"
    assert proc.returncode == 1  # some files could not be read at all


def test_text_summary_says_what_confident_rests_on(synth_dir: Path) -> None:
    """docs/contract.md section 4: never "confident, p = 0.33" alone; sections 7: the causes."""
    records = _lines(_run("decode", "--json", "--model", "analytic", str(synth_dir)).stdout)
    proc = _run("decode", "--model", "analytic", str(synth_dir))
    assert proc.returncode == 0, proc.stderr
    blocks = proc.stdout.split(str(synth_dir))[1:]
    assert len(blocks) == len(records)
    for rec, text in zip(records, blocks, strict=True):
        if rec["decision"] == "confident" and rec["open"]:
            assert f"p={rec['equivalent_probability']:.3f} with the equivalent ones" in text
            assert "open: " + ", ".join(rec["open"]) in text
        for cause in rec["likely_causes"]:
            assert cause["sentence"] in text
    assert any(r["decision"] == "confident" and r["open"] for r in records)
