"""A structural check of an encoded data set (PS3.5 section 7): is every element complete?

pydicom reads a data set cut short without complaint (a sequence simply ends early, a value is
short), so a truncated transfer would be reported as "missing value" instead of "cannot be
understood". This walks the element headers of the received bytes, checks that every declared
length fits in what remains, and that every undefined-length sequence and item is closed by its
delimiter (PS3.5 section 7.5). It does not interpret values.
"""

from __future__ import annotations

import struct
import zlib

#: VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 Table 7.1-1)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQ_END = (0xFFFE, 0xE0DD)


class EncodingError(ValueError):
    """The bytes are not a complete data set; the message says where."""


class _Reader:
    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.endian = "<" if little else ">"

    def _need(self, pos: int, size: int, what: str) -> None:
        if pos + size > len(self.data):
            raise EncodingError(
                f"{what} at byte {pos} needs {size} bytes but only {len(self.data) - pos} remain"
            )

    def _tag(self, pos: int) -> tuple[int, int]:
        self._need(pos, 4, "an element tag")
        group, elem = struct.unpack_from(self.endian + "HH", self.data, pos)
        return int(group), int(elem)

    def _u32(self, pos: int) -> int:
        return int(struct.unpack_from(self.endian + "I", self.data, pos)[0])

    def elements(self, pos: int, end: int | None, until: tuple[int, int] | None) -> int:
        """Walk elements from ``pos`` to ``end`` (or to the ``until`` delimiter); new position."""
        stop = len(self.data) if end is None else end
        while pos < stop:
            tag = self._tag(pos)
            if until is not None and tag == until:
                self._need(pos, 8, "a delimiter")
                return pos + 8
            if tag[0] == 0xFFFE:
                raise EncodingError(f"unexpected delimiter ({tag[0]:04X},{tag[1]:04X}) at {pos}")
            pos = self.element(pos, tag)
            if pos > stop:
                raise EncodingError(f"element ({tag[0]:04X},{tag[1]:04X}) runs past its container")
        if until is not None:
            raise EncodingError(
                f"the data set ends before the delimiter ({until[0]:04X},{until[1]:04X})"
            )
        return pos

    def element(self, pos: int, tag: tuple[int, int]) -> int:
        name = f"element ({tag[0]:04X},{tag[1]:04X})"
        if self.implicit:
            self._need(pos, 8, f"the header of {name}")
            length = self._u32(pos + 4)
            vr = b""
            value = pos + 8
        else:
            self._need(pos, 8, f"the header of {name}")
            vr = self.data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                self._need(pos, 12, f"the header of {name}")
                length = self._u32(pos + 8)
                value = pos + 12
            else:
                length = int(struct.unpack_from(self.endian + "H", self.data, pos + 6)[0])
                value = pos + 8
        if length == _UNDEFINED:
            if vr == b"UN":  # its content is in Implicit VR Little Endian (PS3.5 6.2.2)
                inner = _Reader(self.data, True, True)
                return inner.items(value, None, name)
            return self.items(value, None, name)
        self._need(value, length, f"the value of {name}")
        if vr == b"SQ":
            self.items(value, value + length, name)
        return value + length

    def items(self, pos: int, end: int | None, name: str) -> int:
        """Items of a sequence (or fragments) up to ``end`` or the sequence delimiter."""
        stop = len(self.data) if end is None else end
        while pos < stop:
            tag = self._tag(pos)
            if end is None and tag == _SEQ_END:
                self._need(pos, 8, "a sequence delimiter")
                return pos + 8
            if tag != _ITEM:
                raise EncodingError(f"{name}: expected an item at byte {pos}, found "
                                    f"({tag[0]:04X},{tag[1]:04X})")
            self._need(pos, 8, f"an item header of {name}")
            length = self._u32(pos + 4)
            if length == _UNDEFINED:
                pos = self.elements(pos + 8, None, _ITEM_END)
            else:
                self._need(pos + 8, length, f"an item of {name}")
                pos = pos + 8 + length
        if end is None:
            raise EncodingError(f"{name}: the data set ends before the sequence delimiter")
        return pos


def check_complete(data: bytes, *, implicit: bool, little: bool, deflated: bool = False) -> None:
    """Raise :class:`EncodingError` unless ``data`` is a complete encoded data set."""
    if deflated:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(data) + inflater.flush()
        except zlib.error as exc:
            raise EncodingError(f"the deflated data set cannot be inflated: {exc}") from exc
        if not inflater.eof:
            raise EncodingError("the deflated data set ends before its end")
    _Reader(data, implicit, little).elements(0, None, None)
