"""Elekta XVI inputs (docs/contract.md section 1): labelled registrations, the RPS companion with
its bounded ZIP, pairing in ``decode``, and the declared patient position."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from model.conventions import Convention, PatientPosition, RotationOrder
from model.decision import CauseKind, CheckName, CheckResult, DecisionKind, OffsetSourceKind
from model.decoders.analytic import AnalyticDecoder
from model.dicom import sro
from model.errors import InvalidReason
from model.geometry import forward
from model.inputs import DEFAULT_REGISTRY, CompanionInput, InvalidInput, RegistrationInput
from model.inputs.profiles import DEFAULT_PROFILE, SHIPPED_PROFILES
from model.inputs.xvi_rps import MAX_EXPANDED_BYTES
from model.pipeline import DecodeOptions, decode_datasets, decode_files, expand_paths
from model.training.synth import SynthConfig, generate
from model.training.xvi import (
    XviConfig,
    XviCorruption,
    ini_xvi,
    write_rps,
    write_xvi_set,
    write_xvi_sro,
    zip_members,
)

WHEN = dt.datetime(2024, 5, 6, 9, 30, 0)
XVI = DecodeOptions(profile=SHIPPED_PROFILES["elekta_xvi"])


def _rps(members: dict[str, bytes] | None = None, *, raw: bytes | None = None,
         when: dt.datetime = WHEN, patient: str = "P1", study: str = "1.2.3") -> Dataset:
    if raw is None:
        uid = "1.2.826.0.1.3680043.10.1433.99"
        members = members if members is not None else {f"{uid}.INI.XVI": ini_xvi(
            uid, when, correction="0.12, -0.30, 0.05, 359.8, 0.5, 1.0",
            clip="0.12, -0.30, 0.05, 359.8, 0.5, 1.0", mask="0, 0, 0, 0, 0, 0").encode()}
        raw = zip_members(members)
    return write_rps(raw, patient_id=patient, study_uid=study, when=when, station="XVI1")


def _read(ds: Dataset) -> CompanionInput | InvalidInput | RegistrationInput:
    return DEFAULT_REGISTRY.read(ds, DEFAULT_PROFILE)


def _code(ds: Dataset) -> InvalidReason:
    got = _read(ds)
    assert isinstance(got, InvalidInput), got
    return got.reason


def test_rps_reads_cm_and_wrapped_degrees_in_pitch_roll_rotation_order() -> None:
    got = _read(_rps())
    assert isinstance(got, CompanionInput)
    assert got.offset.translation_mm == pytest.approx((1.2, -3.0, 0.5))
    assert got.offset.rotation_deg == pytest.approx((0.5, 1.0, -0.2))  # pitch, roll, rotation
    assert got.alignment_time == WHEN and got.patient_id == "P1"
    assert got.study_instance_uid == "1.2.3" and got.source == "elekta_xvi_rps"


def test_zip_bomb_is_refused_before_and_while_inflating() -> None:
    big = {"a.INI.XVI": b"\0" * (MAX_EXPANDED_BYTES + 1)}
    assert _code(_rps(big)) is InvalidReason.COMPANION_ZIP_TOO_LARGE
    # the same archive with its declared sizes lying (1000 bytes): never inflated past them
    raw = bytearray(zip_members(big))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.index(signature) + offset
        raw[at:at + 4] = struct.pack("<I", 1000)
    started = time.perf_counter()
    assert _code(_rps(raw=bytes(raw))) in (InvalidReason.COMPANION_ZIP_INVALID,
                                           InvalidReason.COMPANION_ZIP_TOO_LARGE)
    assert time.perf_counter() - started < 1.0
    many = {f"m{k}.txt": b"x" for k in range(101)}
    assert _code(_rps(many)) is InvalidReason.COMPANION_ZIP_TOO_LARGE


@pytest.mark.parametrize("name", ["../x.INI.XVI", "sub/x.INI.XVI", "/abs.INI.XVI",
                                  "C:x.INI.XVI", "..\\x.INI.XVI"])
def test_member_path_traversal_is_refused(name: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(zipfile.ZipInfo(name), b"[ALIGNMENT.20240506; 09:30:00]\n")
    assert _code(_rps(raw=buf.getvalue())) is InvalidReason.COMPANION_ZIP_UNSAFE_NAME


def test_missing_ini_and_missing_or_bad_zip() -> None:
    assert _code(_rps({"x.INI": b"[XVI]\n"})) is InvalidReason.COMPANION_INI_MISSING
    assert _code(_rps(raw=b"not a zip at all")) is InvalidReason.COMPANION_ZIP_INVALID
    ds = _rps()
    del ds[0x0021103A]
    assert _code(ds) is InvalidReason.COMPANION_ZIP_MISSING


@pytest.mark.parametrize("text", [
    "[ALIGNMENT.20240506; 09:30:00]\nAlign.correction=0.1, 0.2, x, 0, 0, 0\n",
    "[ALIGNMENT.20240506; 09:30:00]\nAlign.correction=0.1, 0.2, 0.3, 400, 0, 0\n",
    "[ALIGNMENT.20240506; 09:30:00]\nAlign.correction=0.1, 0.2, 0.3, 0, 0\n",
    "[ALIGNMENT.20240506; 09:30:00]\nAlign.correction=0.1, nan, 0.3, 0, 0, 0\n",
    "[ALIGNMENT.20240506; 09:30:00]\nAlign.mask1=0.1, 0.2, 0.3, 0, 0, 0\n",
    "[OTHER]\nAlign.correction=0.1, 0.2, 0.3, 0, 0, 0\n",
])
def test_malformed_ini_values_are_invalid(text: str) -> None:
    assert _code(_rps({"u.INI.XVI": text.encode()})) is InvalidReason.COMPANION_INI_MALFORMED


def _xvi_sro(labels_ok: bool = True, *, split: bool = False, when: dt.datetime = WHEN,
             position: str = "HFS") -> Dataset:
    # the matrix xyz/direct/HFS predicts for the companion of _rps()
    hfs = Convention(RotationOrder.XYZ, False, PatientPosition.HFS).index
    matrix = forward([(1.2, -3.0, 0.5)], [(0.5, 1.0, -0.2)])[0, hfs]
    ds = write_xvi_sro(matrix, clip=matrix, mask=matrix, frames=2, split_items=split,
                       patient_id="P1", study_uid="1.2.3", ref_frame=sro.new_uid(),
                       cbct_frame=sro.new_uid(), position=position, when=when, station="XVI1")
    if not labels_ok:  # no Correction: Align.Clip1, Align.Mask1 and frames only
        items = ds.RegistrationSequence[1:]
        for item in items:
            for mr in list(item.MatrixRegistrationSequence):
                if getattr(mr, "FrameOfReferenceTransformationComment", "") == "Correction":
                    item.MatrixRegistrationSequence.remove(mr)
        ds.RegistrationSequence = [ds.RegistrationSequence[0],
                                   *(i for i in items if len(i.MatrixRegistrationSequence))]
    return ds


def _roundtrip(ds: Dataset, implicit: bool = False) -> Dataset:
    buf = io.BytesIO()
    if implicit:
        ds = copy.deepcopy(ds)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(buf, enforce_file_format=True, implicit_vr=implicit)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def test_no_selectable_registration_lists_the_labels_found() -> None:
    got = _read(_roundtrip(_xvi_sro(labels_ok=False)))
    assert isinstance(got, InvalidInput)
    assert got.reason is InvalidReason.MULTIPLE_REGISTERED_ITEMS
    for label in ("Align.Clip1", "Align.Mask1", "Align.Clip1.Frame0", "4D Frame 1 of 2"):
        assert label in got.message
    picked = DEFAULT_REGISTRY.read(_roundtrip(_xvi_sro(labels_ok=False)), DecodeOptions(
        profile=SHIPPED_PROFILES["elekta_xvi"].__class__(
            name="mask", registration_selector="align.mask1")).profile)
    assert isinstance(picked, RegistrationInput)
    decoded = [c for c in picked.registration.candidates if c.decoded]
    assert [c.label for c in decoded] == ["Align.Mask1"]


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("implicit", [False, True])
def test_fast_path_and_pydicom_agree_on_xvi_layouts(split: bool, implicit: bool) -> None:
    data = io.BytesIO()
    _roundtrip(_xvi_sro(split=split), implicit).save_as(data)
    fast = pydicom.dcmread(io.BytesIO(data.getvalue()))
    slow = pydicom.dcmread(io.BytesIO(data.getvalue()))
    slow.RegistrationSequence  # noqa: B018 (converted: the pydicom path)
    assert not isinstance(slow.get_item(0x00700308), pydicom.dataelem.RawDataElement)
    assert isinstance(fast.get_item(0x00700308), pydicom.dataelem.RawDataElement)
    a = sro.read(fast, selector="Correction")
    b = sro.read(slow, selector="Correction")
    assert a.candidates == b.candidates and a.effective_matrix == b.effective_matrix
    assert [c.label for c in a.candidates] == ["Correction", "Align.Clip1", "Align.Mask1",
                                               "Align.Clip1.Frame0", "Align.Clip1.Frame1"]
    assert a.candidates[0].decoded and a.candidates[0].comment == "Correction"
    assert a.declared_patient_position == "HFS" and a.content_datetime == WHEN


def test_rigidity_failure_of_a_candidate_not_decoded_is_a_warning() -> None:
    ds = _xvi_sro()
    bad = ds.RegistrationSequence[1].MatrixRegistrationSequence[1].MatrixSequence[0]
    bad.FrameOfReferenceTransformationMatrix = [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    got = sro.read(_roundtrip(ds))
    assert any("Align.Clip1" in w and "orthonormal" in w for w in got.warnings)


def _set(tmp_path: Path, n: int = 24, corrupt: float = 0.0) -> tuple[Path, dict[str, dict]]:
    data = generate(SynthConfig(n=n, seed=3, positions=tuple(
        (p, 1.0) for p in PatientPosition)))
    write_xvi_set(data, tmp_path, XviConfig(frames=1, corrupt_fraction=corrupt, seed=3))
    truth = [json.loads(x) for x in (tmp_path / "truth.jsonl").read_text().splitlines()]
    return tmp_path, {t["sop_instance_uid"]: t for t in truth}


def test_decode_pairs_a_synthetic_xvi_folder(tmp_path: Path) -> None:
    folder, truth = _set(tmp_path)
    records = [r for r, _ in decode_files(expand_paths([folder]), AnalyticDecoder(), XVI)]
    assert len(records) == 2 * len(truth)  # one line per file
    by_uid = {r.sop_instance_uid: r for r in records}
    wrong = 0
    for uid, t in truth.items():
        rec = by_uid[uid]
        assert rec.offset_source is not None
        assert rec.offset_source.kind is OffsetSourceKind.COMPANION
        assert rec.offset_source.sop_instance_uid == t["companion_sop_instance_uid"]
        assert rec.paired_sop_instance_uid == t["companion_sop_instance_uid"]
        companion = by_uid[t["companion_sop_instance_uid"]]
        assert companion.decision is DecisionKind.OFFSET_ONLY and not companion.flagged
        assert companion.paired_sop_instance_uid == uid
        assert rec.decision is not DecisionKind.OUT_OF_DISTRIBUTION
        if t["corruption"] is None and rec.decision is DecisionKind.CONFIDENT:
            assert rec.convention is not None  # the truth is in the (equivalent) credible set
            credible = [rec.convention, *(a.convention for a in rec.alternatives)]
            wrong += t["convention"] not in [c.as_dict() for c in credible]
    assert wrong == 0


def test_clip_box_only_is_explained_by_the_clip_registration(tmp_path: Path) -> None:
    """docs/contract.md section 7, last cause: the companion's clip-box offset fits the SRO's
    Align.Clip1, not the Correction decoded; a clean SRO has no likely causes."""
    data = generate(SynthConfig(n=16, seed=5, positions=tuple((p, 1.0) for p in PatientPosition)))
    write_xvi_set(data, tmp_path, XviConfig(frames=2, corrupt_fraction=0.5, seed=5,
                                            corruptions=(XviCorruption.CLIP_BOX_ONLY,)))
    truth = {t["sop_instance_uid"]: t for t in map(
        json.loads, (tmp_path / "truth.jsonl").read_text().splitlines())}
    records = [r for r, _ in decode_files(expand_paths([tmp_path]), AnalyticDecoder(), XVI)]
    sros = [r for r in records if r.sop_instance_uid in truth]
    clipped = [r for r in sros if truth[str(r.sop_instance_uid)]["corruption"] == "clip_box_only"]
    assert 4 <= len(clipped) <= 12
    for rec in sros:
        line = rec.as_dict()
        if rec not in clipped:
            assert rec.decision is not DecisionKind.OUT_OF_DISTRIBUTION and not rec.likely_causes
            continue
        assert rec.decision is DecisionKind.OUT_OF_DISTRIBUTION
        first = rec.likely_causes[0]
        assert first.kind is CauseKind.OTHER_REGISTRATION and first.registration is not None
        assert first.registration.label == "Align.Clip1" and "Align.Clip1" in first.sentence
        assert line["likely_causes"][0]["registration"]["label"] == "Align.Clip1"
        assert all("registration" not in c for c in line["likely_causes"][1:])


def test_candidate_matrices_are_effective_matrices() -> None:
    """docs/contract.md section 1: each candidate's inv(A_ref) · A_candidate, in order."""
    ds = _xvi_sro()
    clip = forward([(4.0, 1.0, -2.0)], [(1.0, 0.0, 2.0)])[0, 0]
    ds.RegistrationSequence[1].MatrixRegistrationSequence[1].MatrixSequence[0] \
        .FrameOfReferenceTransformationMatrix = sro._ds_values(clip, 15)
    a_ref = forward([(10.0, 0.0, 5.0)], [(0.0, 3.0, 0.0)])[0, 0]
    ds.RegistrationSequence[0].MatrixRegistrationSequence[0].MatrixSequence[0] \
        .FrameOfReferenceTransformationMatrix = sro._ds_values(a_ref, 15)
    got = sro.read(_roundtrip(ds))
    assert len(got.candidate_matrices) == len(got.candidates) == 5
    assert got.candidate_matrices[0] == got.effective_matrix
    assert np.allclose(got.candidate_matrices[1], np.linalg.solve(a_ref, clip), atol=1e-9)
    assert not np.allclose(got.candidate_matrices[1], clip, atol=1e-3)


def test_two_companions_for_one_sro_and_a_wrong_declared_position_are_flagged() -> None:
    sro_ds = _roundtrip(_xvi_sro(position="FFDL"))
    first = _roundtrip(_rps(when=WHEN - dt.timedelta(seconds=30)))
    second = _roundtrip(_rps(when=WHEN - dt.timedelta(seconds=40)))
    second.SOPInstanceUID = sro.new_uid()
    records = decode_datasets([(sro_ds, "s", None), (first, "a", None), (second, "b", None)],
                              AnalyticDecoder(), XVI)
    assert records[0].decision is DecisionKind.NO_OFFSET and records[0].flagged
    assert [c.name for c in records[0].checks] == [CheckName.PAIRING]
    for rec in records[1:]:
        assert rec.decision is DecisionKind.OFFSET_ONLY and rec.flagged
        assert rec.paired_sop_instance_uid is None
        assert rec.checks[0].result is CheckResult.AMBIGUOUS
    alone = decode_datasets([(sro_ds, "s", None), (first, "a", None)], AnalyticDecoder(), XVI)
    position = [c for c in alone[0].checks if c.name is CheckName.DECLARED_POSITION]
    assert alone[0].offset_source is not None
    assert position and position[0].result is CheckResult.FAILED and alone[0].flagged
