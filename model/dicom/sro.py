"""Reading and writing Spatial Registration Storage instances (PS3.3 A.39, C.20.2;
docs/contract.md section 1).

:func:`read` checks every assumption of docs/contract.md section 1.1 and 1.4 and turns a data set
into one frozen :class:`SpatialRegistration` in one step, or raises :class:`SROError` naming the
failed check. It reads the registration only: where the couch offset comes from is an input
adapter's business (:mod:`model.inputs`, docs/contract.md section 1.7). :func:`write` builds a
complete instance with the couch offset in the default private block (section 1.6).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from model.conventions import FloatArray
from model.decision import Candidate
from model.dicom.structure import EncodedItem, NotParsed, encoded_items
from model.errors import InvalidReason, SROError
from model.geometry import rotation_block_error
from model.offset import CouchOffset

SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
#: private creator of the default offset block that :func:`write` fills (docs/contract.md section
#: 1.6); :mod:`model.inputs.profiles` reads it
DEFAULT_PRIVATE_CREATOR = "SRO DECODER RING"
ORTHONORMAL_TOLERANCE = 1e-4
BOTTOM_ROW_TOLERANCE = 1e-6
#: Implementation Class UID (0002,0012) and Version Name (0002,0013) of files this product writes
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1433.1"
IMPLEMENTATION_VERSION_NAME = "SRO_DECODER_01"
UID_PREFIX = "1.2.826.0.1.3680043.10.1433."

Matrix4 = tuple[tuple[float, float, float, float], ...]
_IDENTITY = np.eye(4)


@dataclass(frozen=True, slots=True)
class SpatialRegistration:
    """What the decoder needs of one SRO's registration: identity and the effective matrix
    (docs/contract.md section 1.1); the couch offset comes from an input adapter."""

    sop_instance_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    frame_of_reference_uid: str
    registered_frame_of_reference_uid: str
    effective_matrix: Matrix4  # M = inv(A_ref) · A_reg, row-major, mm
    patient_id: str | None
    patient_name: str | None
    orthonormality_error: float
    warnings: tuple[str, ...] = ()
    #: Content Date (0008,0023) and Time (0008,0033): the registration time (XVI: approval),
    #: naive, in the sender's local time; ``None`` when absent or not a valid DA/TM
    content_datetime: dt.datetime | None = None
    #: Patient Position (0018,5100) as declared (stripped text), ``None`` when absent
    declared_patient_position: str | None = None
    #: every candidate registration found, the decoded one marked (docs/contract.md section 1)
    candidates: tuple[Candidate, ...] = ()
    #: each candidate's effective matrix ``inv(A_ref) · A_candidate``, in the order of
    #: ``candidates`` (``None`` where it fails a check): the likely cause "the matrix of another
    #: registration" (docs/contract.md section 7) is tried with them; never in the JSON record
    candidate_matrices: tuple[Matrix4 | None, ...] = ()

    @property
    def matrix(self) -> FloatArray:
        return np.array(self.effective_matrix, dtype=np.float64)


# Attributes read on the receipt path, by tag (a keyword lookup costs a dictionary search more).
_SOP_CLASS_UID = Tag(0x0008, 0x0016)
_SOP_INSTANCE_UID = Tag(0x0008, 0x0018)
_STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)
_SERIES_INSTANCE_UID = Tag(0x0020, 0x000E)
_FRAME_OF_REFERENCE_UID = Tag(0x0020, 0x0052)
_PATIENT_NAME = Tag(0x0010, 0x0010)
_PATIENT_ID = Tag(0x0010, 0x0020)
_REGISTRATION_SEQUENCE = Tag(0x0070, 0x0308)
_MATRIX_REGISTRATION_SEQUENCE = Tag(0x0070, 0x0309)
_MATRIX_SEQUENCE = Tag(0x0070, 0x030A)
_MATRIX_TYPE = Tag(0x0070, 0x030C)
_MATRIX = Tag(0x3006, 0x00C6)


def _value(ds: Dataset | EncodedItem, tag: BaseTag) -> object:
    """The value of ``tag`` in ``ds`` (``None`` when absent)."""
    elem = ds.get(tag)
    return None if elem is None else elem.value


def _text(ds: Dataset, tag: BaseTag) -> str | None:
    value = _value(ds, tag)
    return None if value is None or value == "" else str(value)


def _ascii(ds: Dataset | EncodedItem, tag: BaseTag) -> str | None:
    """A UI or CS value (default repertoire, PS3.5 section 6.1.2), read from the raw bytes:
    trailing NUL or space padding removed; ``None`` when absent or empty."""
    elem = ds.get_item(tag)
    value = None if elem is None else elem.value
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("ascii", errors="replace").strip("\0 ")
    else:  # a data set built in memory
        text = str(value).strip("\0 ")
    return text or None


def _require_ascii(ds: Dataset | EncodedItem, tag: BaseTag, where: str) -> str:
    text = _ascii(ds, tag)
    if text is None:
        raise SROError(InvalidReason.MISSING_VALUE,
                       f"{keyword_for_tag(tag)} is missing or empty in {where}")
    return text


def _require(ds: Dataset | EncodedItem, tag: BaseTag, where: str) -> object:
    value = _value(ds, tag)
    if value is None or value == "" or (isinstance(value, DicomSequence | list)
                                        and len(value) == 0):
        raise SROError(InvalidReason.MISSING_VALUE,
                       f"{keyword_for_tag(tag)} is missing or empty in {where}")
    return value


_SEQUENCE_NAMES = {
    _REGISTRATION_SEQUENCE: "Registration Sequence (0070,0308)",
    _MATRIX_REGISTRATION_SEQUENCE: "Matrix Registration Sequence (0070,0309)",
    _MATRIX_SEQUENCE: "Matrix Sequence (0070,030A)",
}


def _require_sequence(ds: Dataset | EncodedItem, tag: BaseTag,
                      where: str) -> Sequence[Dataset | EncodedItem]:
    """The items of a sequence docs/contract.md section 1 reads; an element there that is not a
    sequence (its VR changed from SQ, PS3.5 section 7.5) means the data set cannot be
    understood."""
    value = _require(ds, tag, where)
    if not isinstance(value, DicomSequence | list):
        elem = ds.get(tag)
        vr = getattr(elem, "VR", None) or "not SQ"
        raise SROError(InvalidReason.UNREADABLE,
                       f"{_SEQUENCE_NAMES[tag]} in {where} is encoded as {vr}, not as a "
                       "sequence (SQ)")
    return value


def _matrix_values(item: Dataset | EncodedItem, label: str) -> list[float]:
    """Frame of Reference Transformation Matrix (3006,00C6), DS, VM 16 (PS3.3 C.20.2.1.1).

    A DS value is ASCII decimal text padded with spaces, values separated by backslashes
    (PS3.5 section 6.2); the raw bytes are parsed directly, not through pydicom's DS objects.
    """
    elem = item.get_item(_MATRIX)
    raw = None if elem is None else elem.value
    if isinstance(raw, bytes | bytearray):
        text = bytes(raw).strip(b" \0")
        if not text:
            raw = None
        else:
            parts: list[object] = list(text.split(b"\\"))
    if raw is None or raw == "" or (isinstance(raw, Sequence) and len(raw) == 0):
        raise SROError(InvalidReason.MISSING_VALUE,
                       f"FrameOfReferenceTransformationMatrix is missing or empty in {label}")
    if not isinstance(raw, bytes | bytearray):
        parts = list(raw) if isinstance(raw, Sequence | np.ndarray) and not isinstance(
            raw, str) else [raw]
    if len(parts) != 16:
        raise SROError(
            InvalidReason.MATRIX_NOT_16_VALUES,
            f"{label}: Frame of Reference Transformation Matrix has {len(parts)} values, not 16",
        )
    try:
        floats = [float(v) for v in parts]  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise SROError(
            InvalidReason.MATRIX_NOT_FINITE, f"{label}: a matrix value is not a number"
        ) from exc
    if not all(math.isfinite(v) for v in floats):
        raise SROError(InvalidReason.MATRIX_NOT_FINITE, f"{label}: the matrix has NaN or infinity")
    return floats


def _registration_items(ds: Dataset) -> Sequence[Dataset | EncodedItem]:
    """Registration Sequence (0070,0308) items: read from the encoded bytes when the element
    is still raw (:func:`model.dicom.structure.encoded_items`), through pydicom otherwise."""
    elem = ds.get_item(_REGISTRATION_SEQUENCE)
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) and elem.VR in (
        None, "SQ"
    ):
        try:
            items = encoded_items(
                elem.value, implicit_vr=elem.is_implicit_VR,
                little_endian=elem.is_little_endian,
                sequences=(_MATRIX_REGISTRATION_SEQUENCE, _MATRIX_SEQUENCE),
            )
        except NotParsed:
            pass  # pydicom reads it, and says what is wrong if anything is
        else:
            if items:
                return items
    return _require_sequence(ds, _REGISTRATION_SEQUENCE, "the dataset")


def _matrix_sequence(mr: Dataset | EncodedItem, where: str) -> FloatArray:
    """One Matrix Registration Sequence item's matrix: its Matrix Sequence (0070,030A) composed
    in sequence order (PS3.3 C.20.2.1.1), each matrix checked (docs/contract.md section 1)."""
    matrices = _require_sequence(mr, _MATRIX_SEQUENCE, where)
    out: FloatArray | None = None
    for m_index, m_item in enumerate(matrices):
        label = f"{where} Matrix Sequence item {m_index + 1}"
        mtype = _require_ascii(m_item, _MATRIX_TYPE, label)
        if mtype.strip() != "RIGID":
            raise SROError(
                InvalidReason.MATRIX_TYPE_NOT_RIGID,
                f"{label}: Frame of Reference Transformation Matrix Type is {mtype!r}, "
                "only RIGID is decoded",
            )
        matrix = np.array(_matrix_values(m_item, label)).reshape(4, 4)
        _check_rigid(matrix, label)
        out = matrix if out is None else matrix @ out  # items apply in sequence order
    return np.eye(4) if out is None else out


def _item_matrix(item: Dataset | EncodedItem, index: int) -> FloatArray:
    """The composed matrix of a reference Registration Sequence item (its Matrix Registration
    Sequence items in order)."""
    where = f"Registration Sequence item {index + 1}"
    out = np.eye(4)
    for mr in _require_sequence(item, _MATRIX_REGISTRATION_SEQUENCE, where):
        out = _matrix_sequence(mr, f"{where} Matrix Registration Sequence") @ out
    return out


@dataclass(frozen=True, slots=True)
class LabelElement:
    """Where a sender writes a Matrix Registration Sequence item's label: a private element
    (``group``, element offset ``element`` in the block) of the block whose creator is
    ``creator``; ``creator`` of ``None``: any creator of that group holding the element. The
    default is Elekta XVI's "matrix registration label" (0021,xx39) (docs/contract.md section
    1); XVI's creator string for it is not documented, hence any."""

    group: int = 0x0021
    element: int = 0x39
    creator: str | None = None


def _raw_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    text = str(value).strip("\0 ")
    return text or None


def _label(item: Dataset | EncodedItem, where: LabelElement) -> str | None:
    """The label of ``item`` (:class:`LabelElement`), ``None`` when it has none."""
    group = where.group
    for tag in item.keys():  # noqa: SIM118 (an EncodedItem is no mapping)
        tag = int(tag)
        if tag >> 16 != group or not 0x10 <= (tag & 0xFFFF) <= 0xFF:
            continue
        elem = item.get(tag)
        creator = _raw_text(None if elem is None else elem.value)
        if where.creator is not None and creator != where.creator:
            continue
        label = item.get((group << 16) | ((tag & 0xFF) << 8) | where.element)
        if label is not None:
            return _raw_text(label.value)
    return None


@dataclass(frozen=True, slots=True)
class _Found:
    candidate: Candidate
    matrix: FloatArray | None
    error: SROError | None


def _select(found: list[_Found], selector: str | None) -> tuple[int | None, str]:
    """The candidate to decode (docs/contract.md section 1): the profile's selector, else the
    one labelled or commented ``Correction``, else the only one; ``(None, why)`` otherwise."""

    def matching(text: str) -> list[int]:
        want = text.strip().casefold()
        return [k for k, f in enumerate(found)
                if want in {(f.candidate.label or "").strip().casefold(),
                            (f.candidate.comment or "").strip().casefold()}]

    if selector:
        picked = matching(selector)
        if len(picked) == 1:
            return picked[0], f"selected by the profile ({selector!r})"
    picked = matching("Correction")
    if len(picked) == 1:
        return picked[0], "the one labelled Correction"
    if len(found) == 1:
        return 0, "the only registration"
    return None, ""


def _check_rigid(matrix: np.ndarray, label: str) -> float:
    bottom = matrix[3]
    if np.abs(bottom - np.array([0.0, 0.0, 0.0, 1.0])).max() > BOTTOM_ROW_TOLERANCE:
        raise SROError(
            InvalidReason.BOTTOM_ROW_INVALID,
            f"{label}: bottom row is {bottom.tolist()}, not (0, 0, 0, 1)",
        )
    err, det = rotation_block_error(matrix)
    if float(err) > ORTHONORMAL_TOLERANCE:
        raise SROError(
            InvalidReason.ROTATION_NOT_ORTHONORMAL,
            f"{label}: rotation block is not orthonormal (max |RᵀR − I| = {float(err):.3g} "
            f"> {ORTHONORMAL_TOLERANCE:g})",
        )
    if float(det) <= 0:
        raise SROError(
            InvalidReason.ROTATION_NOT_PROPER,
            f"{label}: rotation block has determinant {float(det):.6g} ≤ 0 (a reflection)",
        )
    return float(err)


def ascii_value(ds: Dataset | EncodedItem, tag: BaseTag) -> str | None:
    """A UI or CS value read from its raw bytes, padding removed; ``None`` when absent, empty
    or unreadable. Never raises."""
    try:
        return _ascii(ds, tag)
    except Exception:
        return None


def dicom_datetime(date: str | None, time: str | None) -> dt.datetime | None:
    """A DA (YYYYMMDD) and TM (HHMMSS[.FFFFFF], or HH, HHMM; PS3.5 section 6.2) pair as a naive
    datetime (the sender's local time); ``None`` when the date is absent or either is not a
    valid value. A missing time is midnight."""
    if not date:
        return None
    try:
        day = dt.datetime.strptime(date.strip(), "%Y%m%d")
    except ValueError:
        return None
    text = (time or "").strip().replace(":", "")
    if not text:
        return day
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    try:
        return day.replace(hour=int(whole[:2]), minute=int(whole[2:4] or 0),
                           second=min(int(whole[4:6] or 0), 59),
                           microsecond=int((fraction + "000000")[:6]) if fraction else 0)
    except ValueError:
        return None


def sop_instance_uid_of(ds: Dataset) -> str | None:
    """The data set's SOP Instance UID (0008,0018) as text, read from its raw bytes; ``None``
    when absent, empty or unreadable. Never raises: records of data sets that fail every other
    check still name the object."""
    try:
        return _ascii(ds, _SOP_INSTANCE_UID)
    except Exception:
        return None


def sop_class_uid_of(ds: Dataset) -> str | None:
    """The data set's SOP Class UID (0008,0016) as text, read from its raw bytes; ``None`` when
    absent, empty or unreadable. Never raises: input adapters are chosen by it
    (:class:`model.inputs.adapter.AdapterRegistry`)."""
    try:
        return _ascii(ds, _SOP_CLASS_UID)
    except Exception:
        return None


_PATIENT_POSITION = Tag(0x0018, 0x5100)
_TRANSFORMATION_COMMENT = Tag(0x3006, 0x00C8)
_CONTENT_DATE = Tag(0x0008, 0x0023)
_CONTENT_TIME = Tag(0x0008, 0x0033)
DEFAULT_LABEL_ELEMENT = LabelElement()


def read(ds: Dataset, *, selector: str | None = None,
         label: LabelElement = DEFAULT_LABEL_ELEMENT) -> SpatialRegistration:
    """Check ``ds`` against docs/contract.md section 1 and return the registration to decode, or
    raise :class:`SROError`.

    Every Matrix Registration Sequence item of a registered Registration Sequence item (its
    frame is not the SRO's own) is a candidate, its matrix its own Matrix Sequence composed in
    order; ``selector`` (the profile's, matched case-insensitively against the label of
    ``label`` and the Frame of Reference Transformation Comment) picks one, else the one called
    ``Correction``, else the only one (``multiple_registered_items`` names those found). The
    chosen candidate's failed checks raise; the others' are warnings.
    """
    sop_class = _ascii(ds, _SOP_CLASS_UID) or ""
    if sop_class != SPATIAL_REGISTRATION_STORAGE:
        raise SROError(
            InvalidReason.NOT_SPATIAL_REGISTRATION,
            f"SOP Class UID is {sop_class or 'absent'!r}, not Spatial Registration Storage "
            f"({SPATIAL_REGISTRATION_STORAGE})",
        )
    sop_uid = _require_ascii(ds, _SOP_INSTANCE_UID, "the dataset")
    own_frame = _require_ascii(ds, _FRAME_OF_REFERENCE_UID, "the dataset")
    items = _registration_items(ds)

    reference: list[FloatArray] = []
    found: list[_Found] = []
    for index, item in enumerate(items):
        where = f"Registration Sequence item {index + 1}"
        frame = _require_ascii(item, _FRAME_OF_REFERENCE_UID, where)
        if frame == own_frame:
            reference.append(_item_matrix(item, index))
            continue
        mrs = _require_sequence(item, _MATRIX_REGISTRATION_SEQUENCE, where)
        for m_index, mr in enumerate(mrs):
            candidate = Candidate(frame, _label(mr, label),
                                  _raw_text(_value(mr, _TRANSFORMATION_COMMENT)),
                                  index + 1, m_index + 1)
            try:
                found.append(_Found(candidate, _matrix_sequence(
                    mr, f"{where} Matrix Registration Sequence item {m_index + 1}"), None))
            except SROError as exc:
                found.append(_Found(candidate, None, exc))
    if not found:
        raise SROError(
            InvalidReason.NO_REGISTERED_ITEM,
            "no Registration Sequence item has a Frame of Reference UID other than the SRO's own",
        )
    chosen, _why = _select(found, selector)
    if chosen is None:
        names = "; ".join(
            f"label {f.candidate.label or '(none)'!r}, comment {f.candidate.comment or '(none)'!r}"
            for f in found)
        wanted = f"the profile's selector {selector!r}, " if selector else ""
        raise SROError(
            InvalidReason.MULTIPLE_REGISTERED_ITEMS,
            f"{len(found)} registrations and none can be selected ({wanted}a single one "
            f"labelled Correction, or a single one): {names}",
        )
    if len(reference) > 1:
        raise SROError(
            InvalidReason.MULTIPLE_REFERENCE_ITEMS,
            f"{len(reference)} items carry the SRO's own Frame of Reference UID; at most one is "
            "expected",
        )
    picked = found[chosen]
    if picked.error is not None:
        raise picked.error
    assert picked.matrix is not None
    frame, a_reg = picked.candidate.frame_of_reference_uid, picked.matrix
    if reference and not np.array_equal(reference[0], _IDENTITY):
        effective = np.linalg.solve(reference[0], a_reg)
        effective[3] = (0.0, 0.0, 0.0, 1.0)
        err = _check_rigid(effective, "effective matrix inv(A_ref)·A_reg")
    else:  # A_ref = I (the usual reference item, or none): M = A_reg, checked above
        effective = a_reg
        err = float(rotation_block_error(effective)[0])

    warnings: list[str] = []
    if not reference:
        warnings.append("no reference item: A_ref taken as identity")
    for f in found:
        if f.error is not None:
            name = f.candidate.label or f.candidate.comment or f"item {f.candidate.item}"
            warnings.append(f"registration {name!r} (not decoded) fails a check: "
                            f"{f.error.message}")
    candidates = tuple(dataclasses.replace(f.candidate, decoded=k == chosen)
                       for k, f in enumerate(found))
    matrices = tuple(_as_matrix4(effective) if k == chosen else _candidate_effective(
        f.matrix, reference[0] if reference else None) for k, f in enumerate(found))
    return SpatialRegistration(
        sop_instance_uid=sop_uid,
        study_instance_uid=_ascii(ds, _STUDY_INSTANCE_UID),
        series_instance_uid=_ascii(ds, _SERIES_INSTANCE_UID),
        frame_of_reference_uid=own_frame,
        registered_frame_of_reference_uid=frame,
        effective_matrix=tuple(tuple(float(v) for v in row) for row in effective),  # type: ignore[misc]
        patient_id=_text(ds, _PATIENT_ID),
        patient_name=_text(ds, _PATIENT_NAME),
        orthonormality_error=err,
        warnings=tuple(warnings),
        content_datetime=dicom_datetime(_raw_text(_value(ds, _CONTENT_DATE)),
                                        _raw_text(_value(ds, _CONTENT_TIME))),
        declared_patient_position=_raw_text(_value(ds, _PATIENT_POSITION)),
        candidates=candidates,
        candidate_matrices=matrices,
    )


def _as_matrix4(matrix: np.ndarray) -> Matrix4:
    return tuple(tuple(float(v) for v in row) for row in matrix)  # type: ignore[misc]


def _candidate_effective(a_candidate: FloatArray | None,
                         a_ref: FloatArray | None) -> Matrix4 | None:
    """A candidate's effective matrix ``inv(A_ref) · A_candidate`` (docs/contract.md section 1),
    ``None`` when its own matrix failed a check (a warning) or the composition is not rigid."""
    if a_candidate is None:
        return None
    if a_ref is None or np.array_equal(a_ref, _IDENTITY):
        return _as_matrix4(a_candidate)
    effective = np.linalg.solve(a_ref, a_candidate)
    effective[3] = (0.0, 0.0, 0.0, 1.0)
    try:
        _check_rigid(effective, "effective matrix")
    except SROError:
        return None
    return _as_matrix4(effective)


def ds_round(matrix: FloatArray, digits: int = 15) -> FloatArray:
    """The values a reader gets back from :func:`write`'s DS strings (the matrix's DS noise)."""
    m = np.asarray(matrix, dtype=np.float64)
    return np.array([float(v) for v in _ds_values(m, digits)]).reshape(m.shape)


def _ds_values(matrix: FloatArray, digits: int) -> list[str]:
    """Format matrix values as DS strings of at most 16 characters (PS3.5 6.2)."""
    out = []
    for v in np.asarray(matrix, dtype=np.float64).ravel():
        value = float(f"{v:.{digits}g}")
        text = format_number_as_ds(0.0 if value == 0 else value)
        out.append(text)
    return out


def _matrix_item(frame_uid: str, matrix: FloatArray, digits: int, comment: str) -> Dataset:
    m_item = Dataset()
    m_item.FrameOfReferenceTransformationMatrix = _ds_values(matrix, digits)
    m_item.FrameOfReferenceTransformationMatrixType = "RIGID"
    mr = Dataset()
    mr.MatrixSequence = DicomSequence([m_item])
    mr.RegistrationTypeCodeSequence = DicomSequence([])
    mr.FrameOfReferenceTransformationComment = comment
    item = Dataset()
    item.FrameOfReferenceUID = frame_uid
    item.MatrixRegistrationSequence = DicomSequence([mr])
    return item


def new_uid() -> str:
    return str(generate_uid(prefix=UID_PREFIX))


def write(
    matrix: FloatArray,
    offset: CouchOffset | None,
    *,
    sop_instance_uid: str | None = None,
    patient_id: str = "SYNTH0001",
    patient_name: str = "SYNTHETIC^PATIENT",
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    registered_frame_of_reference_uid: str | None = None,
    include_reference_item: bool = True,
    matrix_digits: int = 15,
    content_datetime: dt.datetime | None = None,
    station_name: str | None = None,
    translation_scale: float = 1.0,
    private_creator: str = DEFAULT_PRIVATE_CREATOR,
) -> Dataset:
    """A complete Spatial Registration Storage instance (PS3.3 A.39.1) with file meta.

    ``matrix`` maps the registered (CBCT) frame into the SRO's own (planning) frame. The offset,
    if any, goes into the private block of docs/contract.md section 1, its translation multiplied by
    ``translation_scale`` (0.1 writes centimetres for a cm profile).
    """
    when = content_datetime or dt.datetime.now(dt.UTC)
    sop_uid = str(sop_instance_uid or new_uid())
    own_frame = str(frame_of_reference_uid or new_uid())
    reg_frame = str(registered_frame_of_reference_uid or new_uid())

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SPATIAL_REGISTRATION_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    # Patient (C.7.1.1)
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = study_instance_uid or new_uid()
    ds.StudyDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    # General Series (C.7.3.1) and Spatial Registration Series (C.20.1)
    ds.Modality = "REG"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = 1
    ds.BodyPartExamined = "HEAD"
    # Frame of Reference (C.7.4.1)
    ds.FrameOfReferenceUID = own_frame
    ds.PositionReferenceIndicator = ""
    # General Equipment (C.7.5.1)
    ds.Manufacturer = "SRO Decoder Ring"
    if station_name:
        ds.StationName = station_name
    # Spatial Registration (C.20.2)
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.InstanceNumber = 1
    ds.ContentLabel = "IGRT_CORRECTION"
    ds.ContentDescription = "Couch correction registration"
    ds.ContentCreatorName = ""
    items = []
    if include_reference_item:
        items.append(_matrix_item(own_frame, np.eye(4), matrix_digits, "Reference"))
    items.append(_matrix_item(reg_frame, np.asarray(matrix), matrix_digits, "Correction"))
    ds.RegistrationSequence = DicomSequence(items)

    if offset is not None:
        block = ds.private_block(0x0071, private_creator, create=True)
        block.add_new(0x01, "FD", [v * translation_scale for v in offset.translation_mm])
        block.add_new(0x02, "FD", list(offset.rotation_deg))
        if offset.isocenter_mm is not None:
            block.add_new(0x03, "FD", list(offset.isocenter_mm))
        if offset.console:
            block.add_new(0x04, "LO", offset.console)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SPATIAL_REGISTRATION_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds
