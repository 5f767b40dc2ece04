"""model.dicom.structure: the one walker of encoded data sets (PS3.5 sections 7.1, 7.5)."""

from __future__ import annotations

import contextlib
import struct
import sys

import pytest
from pydicom.dataset import Dataset

from model.dicom.structure import (
    MAX_DEPTH,
    NotParsed,
    StructureError,
    check_structure,
    encoded_items,
)
from tests.fuzz.mutants import (
    TRANSFER_SYNTAXES,
    deflate,
    encode,
    flags,
    headers,
    nested_sequences,
)

TS_IDS = [ts.name for ts in TRANSFER_SYNTAXES]


def check(body: bytes, ts: str) -> None:
    implicit, little, deflated = flags(ts)
    check_structure(deflate(body) if deflated else body, implicit=implicit, little=little,
                    deflated=deflated)


@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES, ids=TS_IDS)
def test_valid_sros_pass(valid_sro: Dataset, ts: str) -> None:
    check(encode(valid_sro, ts), ts)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000, 50_000])
@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES, ids=TS_IDS)
def test_deep_nesting_is_refused_precisely_not_by_recursion(valid_sro: Dataset, ts: str,
                                                             depth: int) -> None:
    """Issue 9 defect 3: 500 levels and more raised RecursionError; now a precise error."""
    implicit, little, _ = flags(ts)
    body = encode(valid_sro, ts) + nested_sequences(depth, implicit, little)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # an iterative walker needs no stack of its own
    try:
        with pytest.raises(StructureError, match=f"nested more than {MAX_DEPTH} deep"):
            check(body, ts)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES, ids=TS_IDS)
def test_nesting_up_to_the_limit_passes(valid_sro: Dataset, ts: str) -> None:
    implicit, little, _ = flags(ts)
    # the SRO itself nests 3 deep; a separate element may nest up to the limit
    check(encode(valid_sro, ts) + nested_sequences(MAX_DEPTH, implicit, little), ts)


@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES, ids=TS_IDS)
def test_every_cut_inside_an_element_is_refused(valid_sro: Dataset, ts: str) -> None:
    body = encode(valid_sro, ts)
    implicit, little, _ = flags(ts)
    boundaries = {h.pos for h in headers(body, implicit, little) if h.depth == 0}
    for cut in range(1, len(body), 7):
        if cut in boundaries:
            continue
        with pytest.raises(StructureError):
            check(body[:cut], ts)


def _explicit_element(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    long = vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC")
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    head += b"\0\0" + struct.pack("<I", n) if long else struct.pack("<H", n)
    return head + value


@pytest.mark.parametrize(("extra", "message"), [
    (_explicit_element(0x00091010, b"ZZ", b"ab"), "unknown VR"),
    (_explicit_element(0x00091010, b"LT", b"", 0xFFFF) , "runs past"),
    (_explicit_element(0x00091010, b"UT", b"", 0xFFFFFFFF), "undefined length"),
    (struct.pack("<HHI", 0xFFFE, 0xE000, 0), "item"),
    (struct.pack("<HHI", 0xFFFE, 0xE00D, 0), "delimiter"),
    (_explicit_element(0x00091010, b"SQ", struct.pack("<HHI", 0x0008, 0x0018, 0)),
     "expected an item"),
    (_explicit_element(0x00091010, b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
                       + struct.pack("<HHI", 0xFFFE, 0xE00D, 4), 0xFFFFFFFF), "length 4"),
])
def test_malformed_structure_is_refused(valid_sro: Dataset, extra: bytes, message: str) -> None:
    body = encode(valid_sro, TRANSFER_SYNTAXES[0])
    with pytest.raises(StructureError, match=message):
        check(body + extra, TRANSFER_SYNTAXES[0])


def test_a_damaged_deflate_stream_is_refused(valid_sro: Dataset) -> None:
    stream = deflate(encode(valid_sro, TRANSFER_SYNTAXES[2]))
    with pytest.raises(StructureError, match="deflated"):
        check_structure(stream[:-10], implicit=False, little=True, deflated=True)


def test_a_deflate_bomb_is_refused_before_it_is_inflated(valid_sro: Dataset) -> None:
    body = encode(valid_sro, TRANSFER_SYNTAXES[2])
    # a valid data set followed by a long private OB value of zeros: 1,000 times smaller deflated
    padding = b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<I", 4_000_000) + bytes(4_000_000)
    stream = deflate(body + padding)
    assert len(stream) < 10_000
    check_structure(stream, implicit=False, little=True, deflated=True)  # whole, under the bound
    with pytest.raises(StructureError, match="inflates to more than 1000000 bytes"):
        check_structure(stream, implicit=False, little=True, deflated=True,
                        max_inflated=1_000_000)


@pytest.mark.parametrize("junk", [b"", b"\xfe\xff\x00\xe0", b"\xfe\xff\x00\xe0\xff\xff\xff\xff",
                                  b"\x00" * 7, bytes(range(256))])
def test_the_fast_reader_only_ever_hands_over(junk: bytes) -> None:
    for implicit in (False, True):
        for little in (False, True):
            with contextlib.suppress(NotParsed):
                encoded_items(junk, implicit_vr=implicit, little_endian=little,
                              sequences=(0x00700309,))


def test_the_fast_reader_refuses_deep_nesting_without_recursion() -> None:
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    seq = struct.pack("<HH", 0x0070, 0x0309) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
    value = item + (seq + item) * 10_000
    with pytest.raises(NotParsed, match="nested more than"):
        encoded_items(value, implicit_vr=False, little_endian=True, sequences=(0x00700309,))
