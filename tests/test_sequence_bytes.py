"""model.sequence_bytes: the Registration Sequence read from its bytes gives what pydicom gives."""

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

import model.sro as sro
from model.errors import SROError
from model.offset import CouchOffset
from model.sequence_bytes import NotParsed, encoded_items
from model.sro import read, write
from model.synth import SynthConfig, generate
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
    try:
        return read(ds)
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
