"""The fast reader (model.dicom.structure.encoded_items): the Registration Sequence read from
its bytes gives what pydicom gives."""

from __future__ import annotations

import copy
from collections.abc import Callable
from io import BytesIO

import numpy as np
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

import model.dicom.sro as sro
from model.dicom.sro import read, write
from model.dicom.structure import NotParsed, encoded_items
from model.errors import InvalidReason, SROError
from model.inputs import PRIVATE_BLOCK
from model.inputs.profiles import DEFAULT_PROFILE
from model.offset import CouchOffset
from model.training.synth import SynthConfig, generate
from tests.test_sro import INVALID_CASES

REGISTRATION_SEQUENCE = 0x00700308


def encode(ds: Dataset, *, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


def decode(data: bytes, *, implicit: bool, little: bool) -> Dataset:
    from pydicom.filereader import read_dataset

    return read_dataset(BytesIO(data), implicit, little)


def outcome(ds: Dataset) -> object:
    try:  # the registration and the offset block, as the pipeline reads them
        return PRIVATE_BLOCK.read(ds, DEFAULT_PROFILE)
    except SROError as exc:
        return (exc.code, exc.message)


def both_paths(data: bytes, implicit: bool, little: bool, calls: list[int],
               reaches_sequence: bool = True) -> tuple[object, object]:
    raw = decode(data, implicit=implicit, little=little)
    converted = decode(data, implicit=implicit, little=little)
    assert isinstance(raw.get_item(REGISTRATION_SEQUENCE), RawDataElement)
    before = len(calls)
    got = outcome(raw)  # read from the bytes
    assert len(calls) == before + int(reaches_sequence), "the encoded-bytes path was not taken"
    _ = converted.get("RegistrationSequence")  # converted by pydicom first: its path
    assert not isinstance(converted.get_item(REGISTRATION_SEQUENCE), RawDataElement)
    return got, outcome(converted)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    original = sro.encoded_items

    def counting(*args: object, **kwargs: object) -> object:
        seen.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sro, "encoded_items", counting)
    return seen


@pytest.mark.parametrize(("implicit", "little"), [(False, True), (True, True), (False, False)])
def test_synthetic_sros_read_the_same(implicit: bool, little: bool, calls: list[int]) -> None:
    data = generate(SynthConfig(n=40, seed=77, isocenter_fraction=0.5, corrupt_fraction=0.3))
    for k in range(len(data)):
        ds = write(data.batch.matrix[k], CouchOffset(
            tuple(data.batch.translation_mm[k]), tuple(data.batch.rotation_deg[k]),
            tuple(data.batch.isocenter_mm[k]) if data.batch.has_isocenter[k] else None))
        got, expected = both_paths(encode(ds, implicit=implicit, little=little), implicit, little,
                                   calls)
        assert got == expected


#: every invalid case that still has a Registration Sequence to read
WITH_SEQUENCE = [(f, c) for f, c in INVALID_CASES if f.__name__ != "_missing_registration_sequence"]


@pytest.mark.parametrize(
    ("corrupt", "code"), WITH_SEQUENCE, ids=[f.__name__.strip("_") for f, _ in WITH_SEQUENCE]
)
@pytest.mark.parametrize("implicit", [False, True])
def test_every_invalid_case_reads_the_same(valid_sro: Dataset, corrupt: Callable[[Dataset], None],
                                           code: object, implicit: bool,
                                           calls: list[int]) -> None:
    ds = copy.deepcopy(valid_sro)
    corrupt(ds)
    data = encode(ds, implicit=implicit, little=True)
    # wrong SOP class and a missing Frame of Reference are found before the sequence is read
    reaches = corrupt.__name__ not in ("_wrong_sop_class", "_deformable", "_missing_frame")
    got, expected = both_paths(data, implicit, True, calls, reaches)
    assert got == expected
    assert isinstance(got, tuple) and got[0] is code


def test_undefined_lengths_inside_read_the_same(valid_sro: Dataset, calls: list[int]) -> None:
    """Nested sequences and items of undefined length, delimited (PS3.5 section 7.5.2)."""
    for item in valid_sro.RegistrationSequence:
        item.is_undefined_length_sequence_item = True
        elem = item["MatrixRegistrationSequence"]
        elem.is_undefined_length = True
        for mr in elem.value:
            mr.is_undefined_length_sequence_item = True
            mr["MatrixSequence"].is_undefined_length = True
    data = encode(valid_sro, implicit=False, little=True)
    assert data.count(b"\xfe\xff\xdd\xe0") >= 2  # sequence delimiters are there
    got, expected = both_paths(data, False, True, calls)
    assert got == expected and not isinstance(got, tuple)


@pytest.mark.parametrize("cut", [1, 7, 20, 100])
def test_truncated_bytes_are_not_parsed(valid_sro: Dataset, cut: int) -> None:
    elem = decode(encode(valid_sro, implicit=False, little=True), implicit=False,
                  little=True).get_item(REGISTRATION_SEQUENCE)
    assert isinstance(elem, RawDataElement)
    with pytest.raises(NotParsed):
        encoded_items(elem.value[:-cut], implicit_vr=False, little_endian=True, sequences=())


def test_matrix_values_come_back_exactly(valid_sro: Dataset) -> None:
    data = encode(valid_sro, implicit=False, little=True)
    raw = read(decode(data, implicit=False, little=True))
    assert np.array_equal(raw.matrix, read(valid_sro).matrix)


def test_an_element_without_a_vr_is_not_parsed(valid_sro: Dataset) -> None:
    elem = decode(encode(valid_sro, implicit=False, little=True), implicit=False,
                  little=True).get_item(REGISTRATION_SEQUENCE)
    assert isinstance(elem, RawDataElement)
    value = bytearray(elem.value)
    at = value.index(b"UI")  # the first item's Frame of Reference UID
    value[at : at + 2] = b"\x00\x01"
    with pytest.raises(NotParsed):
        encoded_items(bytes(value), implicit_vr=False, little_endian=True, sequences=())


SEQUENCE_TAGS = {"MatrixRegistrationSequence": b"\x70\x00\x09\x03",
                 "MatrixSequence": b"\x70\x00\x0a\x03", "RegistrationSequence": b"\x70\x00\x08\x03"}


@pytest.mark.parametrize("vr", [b"OB", b"OW", b"UT", b"UC"])
@pytest.mark.parametrize("keyword", list(SEQUENCE_TAGS))
@pytest.mark.parametrize("which", [0, -1], ids=["reference_item", "registered_item"])
def test_a_sequence_whose_vr_is_not_sq_is_never_read_as_items(
        valid_sro: Dataset, vr: bytes, keyword: str, which: int) -> None:
    """Issue 9 defect 2: a nested sequence re-labelled OB/OW/UT/UC (same header size, so the
    bytes still parse) is not a sequence any more; neither path may decode it."""
    data = encode(valid_sro, implicit=False, little=True)
    header = SEQUENCE_TAGS[keyword] + b"SQ"
    starts = [i for i in range(len(data)) if data.startswith(header, i)]
    at = starts[which]
    mutant = data[:at + 4] + vr + data[at + 6:]
    raw = decode(mutant, implicit=False, little=True)
    converted = decode(mutant, implicit=False, little=True)
    _ = converted.get("RegistrationSequence")
    fast, slow = outcome(raw), outcome(converted)
    assert fast == slow
    assert isinstance(fast, tuple), "a damaged structure was decoded"
    assert fast[0] is InvalidReason.UNREADABLE
    assert keyword_text(keyword) in fast[1] and vr.decode() in fast[1]


def keyword_text(keyword: str) -> str:
    return {"MatrixRegistrationSequence": "Matrix Registration Sequence",
            "MatrixSequence": "Matrix Sequence",
            "RegistrationSequence": "Registration Sequence"}[keyword]


def test_a_named_sequence_encoded_as_un_is_handed_to_pydicom(valid_sro: Dataset) -> None:
    data = encode(valid_sro, implicit=False, little=True)
    at = data.index(SEQUENCE_TAGS["MatrixSequence"] + b"SQ")
    mutant = data[:at + 4] + b"UN" + data[at + 6:]
    elem = decode(mutant, implicit=False, little=True).get_item(REGISTRATION_SEQUENCE)
    assert isinstance(elem, RawDataElement)
    with pytest.raises(NotParsed):
        encoded_items(elem.value, implicit_vr=False, little_endian=True,
                      sequences=(0x00700309, 0x0070030A))


def test_a_comment_whose_vr_is_wrong_is_left_to_pydicom(valid_sro: Dataset) -> None:
    """Fuzz finding: (3006,00C8) re-labelled UL (same 2-byte length) reads as text from the raw
    bytes, while pydicom refuses the value; the fast reader must hand it over."""
    elem = decode(encode(valid_sro, implicit=False, little=False), implicit=False,
                  little=False).get_item(REGISTRATION_SEQUENCE)
    assert isinstance(elem, RawDataElement)
    value = bytearray(elem.value)
    at = value.index(b"\x30\x06\x00\xc8LO")  # the first Frame of Reference Transformation Comment
    value[at + 4 : at + 6] = b"UL"
    with pytest.raises(NotParsed, match="not as its LO"):
        encoded_items(bytes(value), implicit_vr=False, little_endian=False,
                      sequences=(0x00700309, 0x0070030A))


@pytest.mark.parametrize(("implicit", "little"), [(False, True), (True, True), (False, False)])
def test_a_comment_with_several_values_reads_the_same(valid_sro: Dataset, implicit: bool,
                                                      little: bool, calls: list[int]) -> None:
    """Fuzz finding: a backslash in a Transformation Comment makes pydicom read several values;
    both paths must give the same record (the fast reader hands over)."""
    ds = copy.deepcopy(valid_sro)
    for item in ds.RegistrationSequence:
        for mr in item.MatrixRegistrationSequence:
            mr.FrameOfReferenceTransformationComment = "Correc\\ion"
    got, expected = both_paths(encode(ds, implicit=implicit, little=little), implicit, little,
                               calls)
    assert got == expected
