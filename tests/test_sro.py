"""docs/contract.md section 1: reading SROs, each invalid check with its code, and writing valid
ones."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from model.dicom.sro import SPATIAL_REGISTRATION_STORAGE, read, write
from model.errors import InvalidReason, SROError
from model.geometry import forward
from model.inputs import PRIVATE_BLOCK
from model.inputs.profiles import DEFAULT_PROFILE
from model.offset import CouchOffset


def _matrix_item(ds: Dataset, item: int = 1) -> Dataset:
    return ds.RegistrationSequence[item].MatrixRegistrationSequence[0].MatrixSequence[0]


def _set_matrix(ds: Dataset, values: list[str], item: int = 1) -> None:
    _matrix_item(ds, item).FrameOfReferenceTransformationMatrix = values


def _identity_values() -> list[str]:
    return [str(v) for v in np.eye(4).ravel()]


def test_read_round_trip(valid_sro: Dataset, offset: CouchOffset) -> None:
    reg = read(valid_sro)
    expected = forward([offset.translation_mm], [offset.rotation_deg], [offset.isocenter_mm])[0, 0]
    assert np.allclose(reg.matrix, expected, atol=1e-9)
    assert PRIVATE_BLOCK.read(valid_sro, DEFAULT_PROFILE).offset == offset
    assert reg.sop_instance_uid == valid_sro.SOPInstanceUID
    assert reg.registered_frame_of_reference_uid != reg.frame_of_reference_uid
    assert reg.warnings == ()


def test_result_is_frozen(valid_sro: Dataset) -> None:
    reg = read(valid_sro)
    with pytest.raises(AttributeError):
        reg.sop_instance_uid = "1.2"  # type: ignore[misc]


def test_effective_matrix_uses_reference_item(valid_sro: Dataset) -> None:
    """M = inv(A_ref) · A_reg when the reference item is not the identity."""
    a_ref = forward([[5.0, 0.0, 0.0]], [[0.0, 0.0, 10.0]])[0, 0]
    a_reg = np.array(read(valid_sro).matrix)
    ds = copy.deepcopy(valid_sro)
    _set_matrix(ds, [repr(float(v)) for v in a_ref.ravel()], item=0)
    _set_matrix(ds, [repr(float(v)) for v in (a_ref @ a_reg).ravel()], item=1)
    assert np.allclose(read(ds).matrix, a_reg, atol=1e-9)


def test_missing_reference_item_is_identity_with_warning(offset: CouchOffset) -> None:
    m = forward([offset.translation_mm], [offset.rotation_deg], [offset.isocenter_mm])[0, 0]
    reg = read(write(m, offset, include_reference_item=False))
    assert np.allclose(reg.matrix, m, atol=1e-9)
    assert any("A_ref" in w for w in reg.warnings)


def test_no_offset_is_none(offset: CouchOffset) -> None:
    assert PRIVATE_BLOCK.read(write(np.eye(4), None), DEFAULT_PROFILE).offset is None


def _wrong_sop_class(ds: Dataset) -> None:
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage


def _deformable(ds: Dataset) -> None:
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.3"


def _rigid_scale(ds: Dataset) -> None:
    _matrix_item(ds).FrameOfReferenceTransformationMatrixType = "RIGID_SCALE"


def _affine(ds: Dataset) -> None:
    _matrix_item(ds).FrameOfReferenceTransformationMatrixType = "AFFINE"


def _missing_matrix(ds: Dataset) -> None:
    del _matrix_item(ds).FrameOfReferenceTransformationMatrix


def _missing_matrix_type(ds: Dataset) -> None:
    del _matrix_item(ds).FrameOfReferenceTransformationMatrixType


def _missing_registration_sequence(ds: Dataset) -> None:
    del ds.RegistrationSequence


def _missing_frame(ds: Dataset) -> None:
    del ds.FrameOfReferenceUID


def _twelve_values(ds: Dataset) -> None:
    _set_matrix(ds, _identity_values()[:12])


def _nan(ds: Dataset) -> None:
    values = _identity_values()
    values[5] = "NaN"
    _set_matrix(ds, values)


def _infinite(ds: Dataset) -> None:
    values = _identity_values()
    values[3] = "Infinity"
    _set_matrix(ds, values)


def _empty_matrix(ds: Dataset) -> None:
    _matrix_item(ds).FrameOfReferenceTransformationMatrix = None


def _not_orthonormal(ds: Dataset) -> None:
    values = _identity_values()
    values[0] = "1.001"
    _set_matrix(ds, values)


def _reflection(ds: Dataset) -> None:
    values = _identity_values()
    values[10] = "-1.0"
    _set_matrix(ds, values)


def _bottom_row(ds: Dataset) -> None:
    values = _identity_values()
    values[12] = "0.5"
    _set_matrix(ds, values)


def _no_registered_item(ds: Dataset) -> None:
    ds.RegistrationSequence = pydicom.Sequence([ds.RegistrationSequence[0]])


def _two_registered_items(ds: Dataset) -> None:
    extra = copy.deepcopy(ds.RegistrationSequence[1])
    extra.FrameOfReferenceUID = "1.2.3.4.5.6"
    ds.RegistrationSequence.append(extra)


def _two_reference_items(ds: Dataset) -> None:
    ds.RegistrationSequence.append(copy.deepcopy(ds.RegistrationSequence[0]))


def _offset_nan(ds: Dataset) -> None:
    ds.add_new(0x00711002, "FD", [1.0, float("nan"), 0.0])


def _offset_two_values(ds: Dataset) -> None:
    ds.add_new(0x00711001, "FD", [1.0, 2.0])


INVALID_CASES: list[tuple[Callable[[Dataset], None], InvalidReason]] = [
    (_wrong_sop_class, InvalidReason.NOT_SPATIAL_REGISTRATION),
    (_deformable, InvalidReason.NOT_SPATIAL_REGISTRATION),
    (_rigid_scale, InvalidReason.MATRIX_TYPE_NOT_RIGID),
    (_affine, InvalidReason.MATRIX_TYPE_NOT_RIGID),
    (_missing_matrix, InvalidReason.MISSING_VALUE),
    (_missing_matrix_type, InvalidReason.MISSING_VALUE),
    (_missing_registration_sequence, InvalidReason.MISSING_VALUE),
    (_missing_frame, InvalidReason.MISSING_VALUE),
    (_twelve_values, InvalidReason.MATRIX_NOT_16_VALUES),
    (_nan, InvalidReason.MATRIX_NOT_FINITE),
    (_infinite, InvalidReason.MATRIX_NOT_FINITE),
    (_empty_matrix, InvalidReason.MISSING_VALUE),
    (_not_orthonormal, InvalidReason.ROTATION_NOT_ORTHONORMAL),
    (_reflection, InvalidReason.ROTATION_NOT_PROPER),
    (_bottom_row, InvalidReason.BOTTOM_ROW_INVALID),
    (_no_registered_item, InvalidReason.NO_REGISTERED_ITEM),
    (_two_registered_items, InvalidReason.MULTIPLE_REGISTERED_ITEMS),
    (_two_reference_items, InvalidReason.MULTIPLE_REFERENCE_ITEMS),
    (_offset_nan, InvalidReason.OFFSET_INVALID),
    (_offset_two_values, InvalidReason.OFFSET_INVALID),
]


#: pytest parameters of every invalid case (``corrupt``, ``code``)
each_invalid_case = pytest.mark.parametrize(
    ("corrupt", "code"), INVALID_CASES, ids=[f.__name__.strip("_") for f, _ in INVALID_CASES]
)


def corrupted_through_a_file(valid_sro: Dataset, tmp_path: Path,
                             corrupt: Callable[[Dataset], None]) -> Dataset:
    """A corrupted copy of ``valid_sro``, written and read back as the decoder sees it."""
    ds = copy.deepcopy(valid_sro)
    corrupt(ds)
    path = tmp_path / "bad.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


@each_invalid_case
def test_each_invalid_check_has_its_code(
    valid_sro: Dataset, tmp_path: Path, corrupt: Callable[[Dataset], None], code: InvalidReason
) -> None:
    ds = corrupted_through_a_file(valid_sro, tmp_path, corrupt)
    with pytest.raises(SROError) as info:  # the registration's checks, then the offset block's
        PRIVATE_BLOCK.read(ds, DEFAULT_PROFILE)
    assert info.value.code is code
    assert info.value.message  # a sentence for people
    assert code.value in str(info.value)


def test_matrix_text_that_is_not_a_number(valid_sro: Dataset, tmp_path: Path) -> None:
    values = _identity_values()
    values[6] = "7.25"
    _set_matrix(valid_sro, values)
    path = tmp_path / "bad.dcm"
    valid_sro.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert data.count(b"7.25") == 1
    path.write_bytes(data.replace(b"7.25", b"7.2x"))  # pydicom itself refuses to write it
    with pytest.raises(SROError) as info:
        read(pydicom.dcmread(path))
    assert info.value.code is InvalidReason.MATRIX_NOT_FINITE


def test_read_from_bytes_equals_read_in_memory(valid_sro: Dataset, tmp_path: Path) -> None:
    """The matrix's DS text is parsed from the raw bytes; the result is pydicom's numbers."""
    _set_matrix(valid_sro, [f" {v:.9g}" for v in read(valid_sro).matrix.ravel()])
    path = tmp_path / "sro.dcm"
    valid_sro.save_as(path, enforce_file_format=True)
    from_file, in_memory = read(pydicom.dcmread(path)), read(valid_sro)
    assert from_file.effective_matrix == in_memory.effective_matrix
    assert from_file == in_memory


def test_orthonormality_within_tolerance_is_accepted(valid_sro: Dataset) -> None:
    """Real matrices written with 6-8 digits are orthonormal only to about 1e-6."""
    m = np.array(read(valid_sro).matrix)
    _set_matrix(valid_sro, [f"{v:.7g}" for v in m.ravel()])
    assert read(valid_sro).orthonormality_error > 1e-9


def test_write_sets_required_attributes(valid_sro: Dataset) -> None:
    assert valid_sro.SOPClassUID == SPATIAL_REGISTRATION_STORAGE
    assert valid_sro.Modality == "REG"
    assert valid_sro.file_meta.MediaStorageSOPInstanceUID == valid_sro.SOPInstanceUID
    for value in _matrix_item(valid_sro).FrameOfReferenceTransformationMatrix:
        assert len(str(value)) <= 16


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed")
def test_dciodvfy_reports_no_errors(sro_file: Path) -> None:
    out = subprocess.run(["dciodvfy", str(sro_file)], capture_output=True, text=True, check=False)
    text = out.stdout + out.stderr
    assert "SpatialRegistration" in text  # it recognised the IOD
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert errors == []
    warnings = [line for line in text.splitlines() if "Warning" in line]
    # the only warnings are dciodvfy not knowing our private block's tags (README lists them)
    assert all("0x0071" in line for line in warnings), warnings


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed")
def test_dciodvfy_catches_a_broken_file(valid_sro: Dataset, tmp_path: Path) -> None:
    """The check above can fail: a file missing a Type 1 attribute is reported."""
    del valid_sro.SeriesInstanceUID
    path = tmp_path / "broken.dcm"
    valid_sro.save_as(path, enforce_file_format=True)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    assert any(line.startswith("Error") for line in (out.stdout + out.stderr).splitlines())


def test_offset_read_from_implicit_vr_file(
    valid_sro: Dataset, offset: CouchOffset, tmp_path: Path
) -> None:
    """Private FD elements arrive as raw bytes in Implicit VR Little Endian; they still decode."""
    from pydicom.uid import ImplicitVRLittleEndian

    valid_sro.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "implicit.dcm"
    valid_sro.save_as(path, enforce_file_format=True)
    assert PRIVATE_BLOCK.read(pydicom.dcmread(path), DEFAULT_PROFILE).offset == offset
