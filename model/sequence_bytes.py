"""Sequence items read directly from their encoded bytes (PS3.5 sections 7.1 and 7.5).

pydicom converts a sequence by building a :class:`~pydicom.dataset.Dataset` per item and a data
element per attribute, which is most of the time :func:`model.sro.read` spends on a received SRO.
The Registration Sequence's items are read here instead, as :class:`EncodedItem` objects that
answer ``get`` and ``get_item`` like a data set whose elements are still raw: values stay bytes
(text is decoded by the reader that asks for it), nested sequences named by the caller become
lists of items, and other sequences are skipped. Anything this reader does not expect (a
malformed length, an undefined length outside a sequence, an element encoded as UN) raises
:class:`NotParsed`, and the caller reads the element through pydicom as before.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass

#: VRs with a 4-byte length in Explicit VR (PS3.5 Table 7.1-1); the others have 2 bytes
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


class NotParsed(ValueError):
    """The bytes are not a sequence this reader handles; read them with pydicom instead."""


@dataclass(frozen=True, slots=True)
class EncodedElement:
    """One element's value: raw bytes, or a list of items for a sequence the caller named."""

    value: bytes | list[EncodedItem]


class EncodedItem:
    """One sequence item: ``get(tag)`` and ``get_item(tag)`` as on a pydicom data set."""

    __slots__ = ("_elements",)

    def __init__(self, elements: dict[int, EncodedElement]) -> None:
        self._elements = elements

    def get(self, tag: int) -> EncodedElement | None:
        return self._elements.get(int(tag))

    def get_item(self, tag: int) -> EncodedElement | None:
        return self._elements.get(int(tag))


@dataclass(frozen=True, slots=True)
class _Reader:
    data: bytes
    implicit: bool
    little: bool
    sequences: Collection[int]

    def header(self, pos: int) -> tuple[int, int, int]:
        """``(tag, length, position of the value)`` of the element or item at ``pos``."""
        data, little = self.data, self.little
        if pos + 8 > len(data):
            raise NotParsed("truncated element header")
        group, element = struct.unpack_from("<HH" if little else ">HH", data, pos)
        tag = (group << 16) | element
        if self.implicit or group == 0xFFFE:  # items and delimiters: tag and 4-byte length
            (length,) = struct.unpack_from("<I" if little else ">I", data, pos + 4)
            return tag, length, pos + 8
        vr = data[pos + 4 : pos + 6]
        if not (vr.isalpha() and vr.isupper()):
            raise NotParsed(f"({group:04X},{element:04X}) has no VR")
        if vr == b"UN":
            raise NotParsed(f"({group:04X},{element:04X}) is encoded as UN")
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise NotParsed("truncated element header")
            (length,) = struct.unpack_from("<I" if little else ">I", data, pos + 8)
            return tag, length, pos + 12
        (length,) = struct.unpack_from("<H" if little else ">H", data, pos + 6)
        return tag, length, pos + 8

    def items(self, pos: int, end: int | None) -> tuple[list[EncodedItem], int]:
        """The items from ``pos`` to ``end`` (``None``: up to the sequence delimiter)."""
        out: list[EncodedItem] = []
        while end is None or pos < end:
            tag, length, pos = self.header(pos)
            if tag == _SEQUENCE_END and end is None:
                return out, pos
            if tag != _ITEM:
                raise NotParsed(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item belongs")
            if length == _UNDEFINED:
                item, pos = self.item(pos, None)
            else:
                item, after = self.item(pos, pos + length)
                if after != pos + length:
                    raise NotParsed("an item's elements overrun its length")
                pos = after
            out.append(item)
        if pos != end:
            raise NotParsed("a sequence's items overrun its length")
        return out, pos

    def item(self, pos: int, end: int | None) -> tuple[EncodedItem, int]:
        """One item's elements from ``pos`` to ``end`` (``None``: up to the item delimiter)."""
        elements: dict[int, EncodedElement] = {}
        while end is None or pos < end:
            tag, length, pos = self.header(pos)
            if tag == _ITEM_END and end is None:
                return EncodedItem(elements), pos
            if length == _UNDEFINED:  # only a sequence has an undefined length here
                nested, pos = self.items(pos, None)
                if tag in self.sequences:
                    elements[tag] = EncodedElement(nested)
                continue
            stop = pos + length
            if stop > len(self.data) or (end is not None and stop > end):
                raise NotParsed("an element's value overruns its item")
            if tag in self.sequences:
                nested, _ = self.items(pos, stop)
                elements[tag] = EncodedElement(nested)
            else:
                elements[tag] = EncodedElement(self.data[pos:stop])
            pos = stop
        return EncodedItem(elements), pos


def encoded_items(
    value: bytes, *, implicit_vr: bool, little_endian: bool, sequences: Collection[int]
) -> list[EncodedItem]:
    """The items of a defined-length sequence value (the bytes after its length field).

    ``sequences``: tags of nested sequences to read as items too (others are skipped).
    """
    reader = _Reader(bytes(value), implicit_vr, little_endian, frozenset(int(t) for t in sequences))
    items, _ = reader.items(0, len(reader.data))
    return items
