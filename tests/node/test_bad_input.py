"""Bad input, each case its own test: the failure status on the wire, an audit record where an
object arrived (archived, ``invalid``, the reason, flagged) and the node still serving."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    SpatialRegistrationStorage,
    Verification,
)

from model.dicom.sro import write
from model.dicom.statuses import StoreStatus
from model.errors import InvalidReason
from model.offset import CouchOffset
from node.settings import Settings
from tests.node.conftest import echo_ok, echoscu, export, make_settings, needs_dcmtk, storescu

Mutation = Callable[[Dataset], None]


def rotation(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    m = np.eye(4)
    m[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    m[:3, 3] = [1.0, -2.0, 3.0]
    return m


def base_sro() -> Dataset:
    offset = CouchOffset((1.0, -2.0, 3.0), (0.0, 0.0, 1.5), (0.0, 0.0, 0.0), "CONSOLE")
    return write(rotation(1.5), offset)


def registered_matrix(ds: Dataset) -> Any:
    item = ds.RegistrationSequence[-1].MatrixRegistrationSequence[0].MatrixSequence[0]
    return item


def set_matrix(ds: Dataset, values: list[str]) -> None:
    registered_matrix(ds).FrameOfReferenceTransformationMatrix = values


def matrix_values(m: np.ndarray) -> list[str]:
    return [f"{v:.10g}" for v in m.ravel()]


def _not_orthonormal(ds: Dataset) -> None:
    m = rotation(1.5)
    m[0, :3] *= 1.01
    set_matrix(ds, matrix_values(m))


def _reflection(ds: Dataset) -> None:
    m = rotation(1.5)
    m[:3, 0] *= -1
    set_matrix(ds, matrix_values(m))


def _bottom_row(ds: Dataset) -> None:
    m = rotation(1.5)
    m[3] = [0.0, 0.0, 1.0, 1.0]
    set_matrix(ds, matrix_values(m))


def _no_registered(ds: Dataset) -> None:
    ds.RegistrationSequence[-1].FrameOfReferenceUID = ds.FrameOfReferenceUID
    del ds.RegistrationSequence[0]


def _extra_registered(ds: Dataset) -> None:
    item = Dataset()
    item.FrameOfReferenceUID = generate_uid()
    item.MatrixRegistrationSequence = ds.RegistrationSequence[-1].MatrixRegistrationSequence
    ds.RegistrationSequence.append(item)


def _extra_reference(ds: Dataset) -> None:
    item = Dataset()
    item.FrameOfReferenceUID = ds.FrameOfReferenceUID
    item.MatrixRegistrationSequence = ds.RegistrationSequence[0].MatrixRegistrationSequence
    ds.RegistrationSequence.append(item)


def _bad_offset(ds: Dataset) -> None:
    block = ds.private_block(0x0071, "SRO DECODER RING")
    del ds[block.get_tag(0x02)]


def _missing_sequence(ds: Dataset) -> None:
    del ds.RegistrationSequence


def _not_rigid(ds: Dataset) -> None:
    registered_matrix(ds).FrameOfReferenceTransformationMatrixType = "AFFINE"


def _twelve_values(ds: Dataset) -> None:
    set_matrix(ds, matrix_values(rotation(1.5))[:12])


def _infinite(ds: Dataset) -> None:
    values = matrix_values(rotation(1.5))
    values[3] = "1e999"
    set_matrix(ds, values)


def _wrong_class(ds: Dataset) -> None:
    ds.SOPClassUID = CTImageStorage  # the data set is not what its presentation context says


INVALID_CASES: dict[InvalidReason, tuple[Mutation, StoreStatus]] = {
    InvalidReason.NOT_SPATIAL_REGISTRATION: (
        _wrong_class, StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
    InvalidReason.MISSING_VALUE: (
        _missing_sequence, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.MATRIX_TYPE_NOT_RIGID: (
        _not_rigid, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.MATRIX_NOT_16_VALUES: (
        _twelve_values, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.MATRIX_NOT_FINITE: (
        _infinite, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.ROTATION_NOT_ORTHONORMAL: (
        _not_orthonormal, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.ROTATION_NOT_PROPER: (
        _reflection, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.BOTTOM_ROW_INVALID: (
        _bottom_row, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.NO_REGISTERED_ITEM: (
        _no_registered, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.MULTIPLE_REGISTERED_ITEMS: (
        _extra_registered, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.MULTIPLE_REFERENCE_ITEMS: (
        _extra_reference, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
    InvalidReason.OFFSET_INVALID: (
        _bad_offset, StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION),
}


@pytest.fixture
def raw_sending() -> Iterator[None]:
    """Let pynetdicom send a file's bytes as they are (no decoding, no fixing up)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = old


def send_file(port: int, path: Path, aet: str = "CONSOLE1") -> Dataset:
    """One C-STORE of ``path`` as Spatial Registration Storage; the response status data set."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(SpatialRegistrationStorage, ExplicitVRLittleEndian)
    ae.dimse_timeout = 10
    for _ in range(3):  # pynetdicom can lose a fast response (DOMAIN.md): resend then
        assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
        assert assoc.is_established
        try:
            status = assoc.send_c_store(path)
        finally:
            assoc.release()
        if status:
            return status
    raise AssertionError("no C-STORE response after three tries")


def invalid_file(tmp_path: Path, mutate: Mutation) -> tuple[Path, str]:
    ds = base_sro()
    mutate(ds)
    ds.file_meta.MediaStorageSOPClassUID = SpatialRegistrationStorage  # what it is sent as
    ds.preamble = b"\x00" * 128
    path = tmp_path / "bad.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=False)
    return path, str(ds.SOPInstanceUID)


def check_recorded_invalid(settings: Settings, uid: str, code: str, status: int) -> dict[str, Any]:
    rows = export(settings.data_dir)
    assert uid in rows
    row = rows[uid]
    assert row["decision"] == "invalid"
    assert row["reason_code"] == code
    assert row["reason"]
    assert row["flagged"] is True
    assert row["alert_state"] in ("pending", "sent")
    assert row["dimse_status"] == status
    return row


@pytest.mark.parametrize("reason", list(INVALID_CASES), ids=lambda r: r.value)
def test_invalid_sro(
    reason: InvalidReason, tmp_path: Path, node_factory: Any, raw_sending: None
) -> None:
    mutate, expected = INVALID_CASES[reason]
    settings = make_settings(tmp_path / "data")
    port = node_factory(settings).address[1]
    path, uid = invalid_file(tmp_path, mutate)
    status = send_file(port, path)
    assert int(status.Status) == expected
    assert status.ErrorComment  # the reason, in short, on the wire
    row = check_recorded_invalid(settings, uid, reason.value, expected)
    assert Path(row["path"]).read_bytes()[128:132] == b"DICM"  # archived in Part 10 form
    assert echo_ok(port)


def test_truncated_dataset(tmp_path: Path, node_factory: Any, raw_sending: None) -> None:
    settings = make_settings(tmp_path / "data")
    port = node_factory(settings).address[1]
    path, uid = invalid_file(tmp_path, lambda ds: None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])  # cut inside the Registration Sequence
    status = send_file(port, path)
    assert int(status.Status) == StoreStatus.CANNOT_UNDERSTAND
    check_recorded_invalid(settings, uid, InvalidReason.UNREADABLE.value,
                           StoreStatus.CANNOT_UNDERSTAND)
    assert echo_ok(port)


def test_dataset_over_size_limit(tmp_path: Path, node_factory: Any, raw_sending: None) -> None:
    settings = make_settings(tmp_path / "data", node={"max_dataset_bytes": 1000})
    port = node_factory(settings).address[1]
    path, uid = invalid_file(tmp_path, lambda ds: None)
    assert path.stat().st_size > 1000
    status = send_file(port, path)
    assert int(status.Status) == StoreStatus.OUT_OF_RESOURCES
    row = check_recorded_invalid(settings, uid, "dataset_too_large", StoreStatus.OUT_OF_RESOURCES)
    assert row["archive_path"] is None  # refused, not kept
    assert not list(settings.archive_dir.rglob("*.dcm"))
    assert echo_ok(port)


def test_ct_image_rejected_at_negotiation(tmp_path: Path, node_factory: Any) -> None:
    settings = make_settings(tmp_path / "data")
    port = node_factory(settings).address[1]
    ae = AE(ae_title="CONSOLE1")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
    assoc.release()
    assert CTImageStorage in rejected and CTImageStorage not in accepted
    assert Verification in accepted

    ae2 = AE(ae_title="CONSOLE1")
    ae2.add_requested_context(CTImageStorage)
    assoc = ae2.associate("127.0.0.1", port, ae_title="SRO_DECODER")
    assert not assoc.is_established  # no acceptable presentation context: aborted
    assert export(settings.data_dir) == {}  # nothing arrived
    assert echo_ok(port)


@needs_dcmtk
def test_calling_ae_not_allowed(tmp_path: Path, node_factory: Any, sro_dir: Path) -> None:
    settings = make_settings(tmp_path / "data",
                             node={"allowed_calling_ae_titles": ["CONSOLE1"]})
    port = node_factory(settings).address[1]
    files = sorted(sro_dir.glob("*.dcm"))[:1]
    proc = storescu(port, files, "INTRUDER")
    assert proc.returncode != 0
    assert "Calling AE Title Not Recognized" in proc.stdout + proc.stderr
    assert echoscu(port, aet="INTRUDER").returncode != 0
    assert export(settings.data_dir) == {}
    assert echoscu(port, aet="CONSOLE1").returncode == 0
    assert storescu(port, files, "CONSOLE1").returncode == 0
    assert len(export(settings.data_dir)) == 1


def test_association_limits(tmp_path: Path, node_factory: Any) -> None:
    settings = make_settings(tmp_path / "data",
                             node={"max_associations": 1, "max_pdu_bytes": 8192})
    port = node_factory(settings).address[1]
    ae = AE(ae_title="CONSOLE1")
    ae.add_requested_context(Verification)
    first = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
    assert first.is_established
    assert first.acceptor.maximum_length == 8192  # our maximum PDU, announced at negotiation
    second = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
    assert second.is_rejected  # over the limit: rejected (transient), not queued
    first.release()
    # a released association counts against the limit until its thread has ended (shortly
    # after the release), so the next one may need a retry
    deadline = time.monotonic() + 5
    ok = echo_ok(port)
    while not ok and time.monotonic() < deadline:
        time.sleep(0.05)
        ok = echo_ok(port)
    assert ok


def _damaged_bodies(ts: str) -> dict[str, bytes]:
    """Issue 9's damaged structures (defects 2-4 and 8) in transfer syntax ``ts``."""
    from tests.fuzz.mutants import encode, flags, nested_sequences

    implicit, little, _ = flags(ts)
    ds = base_sro()
    body = encode(ds, ts)
    no_uid = base_sro()
    del no_uid.SOPInstanceUID
    out = {
        "truncated": body[:-300],
        "deep_600": body + nested_sequences(600, implicit, little),
        "unclosed_nest": body + nested_sequences(40, implicit, little, closed=False),
        "no_uid_in_data_set": encode(no_uid, ts),
        "valid": body,
    }
    if not implicit:
        uid_header = (b"\x08\x00\x18\x00" if little else b"\x00\x08\x00\x18") + b"UI"
        out["bad_vr_in_uid"] = body.replace(uid_header, uid_header[:4] + b"ZZ", 1)
        for name, tag in (("matrix_sequence", b"\x70\x00\x0a\x03"),
                          ("matrix_registration_sequence", b"\x70\x00\x09\x03")):
            header = (tag if little else tag[1::-1] + tag[:1:-1]) + b"SQ"
            at = body.rindex(header)
            for vr in (b"OB", b"UT"):
                out[f"{name}_as_{vr.decode()}"] = body[:at + 4] + vr + body[at + 6:]
    return out


def test_node_and_decode_agree_on_damaged_structures(tmp_path: Path, node_factory: Any,
                                                     raw_sending: None) -> None:
    """Issue 9 defects 2, 3, 4 and 8 over the network in every accepted transfer syntax: the
    node records what ``decode`` gives for the same bytes (decision and reason code), never
    decodes a damaged structure, records the request's SOP Instance UID when the data set
    cannot say it, and keeps serving."""
    from pydicom.uid import UID

    from model.decoders.registry import load_decoder
    from model.pipeline import DecodeOptions, decode_files
    from node.dimse.service import TRANSFER_SYNTAXES
    from tests.fuzz.mutants import part10

    settings = make_settings(tmp_path / "data")
    port = node_factory(settings).address[1]
    decoder = load_decoder(settings.model.name or None)
    files: dict[str, tuple[Path, str, str]] = {}
    for t, ts in enumerate(TRANSFER_SYNTAXES):
        for name, body in _damaged_bodies(str(ts)).items():
            uid = f"1.2.826.0.1.3680043.10.1433.9.{t}.{len(files)}"
            path = tmp_path / f"{UID(ts).name.replace(' ', '_')}-{name}.dcm"
            path.write_bytes(part10(body, str(ts), uid))
            files[path.name] = (path, uid, str(ts))
    ae = AE(ae_title="CONSOLE1")
    for ts in TRANSFER_SYNTAXES:
        ae.add_requested_context(SpatialRegistrationStorage, ts)
    ae.dimse_timeout = 10
    statuses = {}
    assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
    assert assoc.is_established
    try:
        for key, (path, _, _) in files.items():
            statuses[key] = assoc.send_c_store(path)
    finally:
        assoc.release()
    rows = export(settings.data_dir)
    expected = {Path(r.path or "").name: r for r, _ in
                decode_files([p for p, _, _ in files.values()], decoder, DecodeOptions())}
    for key, (_, uid, _) in files.items():
        assert statuses[key], key
        assert uid in rows, f"{key}: no record under the request's UID"
        row, rec = rows[uid], expected[key]
        assert (row["decision"], row["reason_code"]) == (rec.decision.value, rec.reason_code), key
        assert int(statuses[key].Status) == row["dimse_status"], key
        if key.endswith("-valid.dcm"):
            assert row["decision"] != "invalid", key
            continue
        assert row["decision"] == "invalid", f"{key}: a damaged structure was decoded"
        if "no_uid" in key:
            assert row["reason_code"] == InvalidReason.MISSING_VALUE.value
        else:
            assert row["reason_code"] == InvalidReason.UNREADABLE.value, key
            assert row["dimse_status"] == StoreStatus.CANNOT_UNDERSTAND, key
    assert echo_ok(port)


@pytest.mark.parametrize(("sent", "recorded"), [
    ("1.2.826.0.1.3680043.10.1433.5", "1.2.826.0.1.3680043.10.1433.5"),
    ("1.2.3.4.6\r\nBcc: x@y", "INVALID:1.2.3.4.6\\r\\nBcc: x@y"),
    ("=HYPERLINK(1)\x1b", "INVALID:=HYPERLINK(1)\\x1b"),
    ("1.02.3", "INVALID:1.02.3"),  # a leading zero is not a UID (PS3.5 section 9.1)
    ("1." + "2" * 80, "INVALID:1." + "2" * 53 + "…"),
    (None, None),
])
def test_request_uid_recorded_only_valid_or_marked(sent: str | None,
                                                   recorded: str | None) -> None:
    """Issue 9 defect 8: the request's UID is sender text; it is recorded as sent only when it
    is a valid UID, otherwise marked, escaped (no CR/LF) and at most 64 characters."""
    from node.ingest.receipt import recorded_uid

    got = recorded_uid(sent)
    assert got == recorded
    assert got is None or (len(got) <= 64 and got.isprintable())
