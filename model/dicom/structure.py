"""The structure of an encoded data set, walked from its bytes (PS3.5 sections 7.1, 7.5, 6.2.2).

One walker serves the two raw-bytes paths:

- :func:`check_structure`, the completeness check of a received data set: every declared length
  fits its container, every undefined-length sequence and item is closed by its delimiter
  (PS3.5 section 7.5), every VR is one of PS3.5 Table 6.2-1 and allows the length it has
  (PS3.5 section 7.1), sequences nest at most :data:`MAX_DEPTH` deep. pydicom reads a damaged
  data set without complaint (a sequence just ends early, a wrong item tag is a debug message),
  so whatever fails here is refused as a whole: :class:`StructureError`.
- :func:`encoded_items`, the fast reader of the Registration Sequence: its items as
  :class:`EncodedItem` objects that answer ``get`` and ``get_item`` like a data set whose
  elements are still raw (values stay bytes; nested sequences named by the caller become lists
  of items, and must be encoded as SQ). Anything it does not expect (a damaged structure, a
  named sequence whose VR is not SQ, an element encoded as UN) raises :class:`NotParsed` and the
  caller reads the element through pydicom instead; never the reverse.

The walk is iterative (an explicit stack), so no depth of nesting can exhaust Python's stack.

Which elements are sequences, as pydicom reads them: in Explicit VR, VR SQ; UN with undefined
length (its items in Implicit VR Little Endian, PS3.5 section 6.2.2) or UN with a defined length
for a tag the data dictionary has as SQ; OB/OW with undefined length are encapsulated fragments
(PS3.5 section A.4), not descended into. In Implicit VR, undefined length (fragments for Pixel
Data and OB/OW tags) or a dictionary VR of SQ.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass

from pydicom.datadict import DicomDictionary

#: VRs with a 2-byte reserved field and a 4-byte length in Explicit VR (PS3.5 Table 7.1-1)
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
#: the other VRs of PS3.5 Table 6.2-1, with a 2-byte length (PS3.5 Table 7.1-2)
SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
     b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
#: how many sequences may nest inside each other (an SRO needs 3)
MAX_DEPTH = 32
#: the most bytes a deflated data set may inflate to (an SRO is a few kilobytes)
MAX_INFLATED_BYTES = 64 * 1024 * 1024
_PIXEL_DATA = 0x7FE00010
_FRAGMENT_VRS = (b"OB", b"OW")

# what a frame on the walker's stack holds
_ELEMENTS, _ITEMS, _FRAGMENTS = 0, 1, 2


class StructureError(ValueError):
    """The bytes are not a complete, well-formed data set; the message says where and why."""


class NotParsed(ValueError):
    """The bytes are not a sequence the fast reader handles; read them with pydicom instead."""


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

    def keys(self) -> list[int]:
        """The tags of the item's elements, in encoded order (as ``Dataset.keys``)."""
        return list(self._elements)


class _Frame:
    """A sequence, item or data set being walked; ``end`` ``None``: closed by a delimiter."""

    __slots__ = ("elements", "end", "implicit", "items", "kind", "little", "name")

    def __init__(self, kind: int, end: int | None, implicit: bool, little: bool, name: str,
                 items: list[EncodedItem] | None = None,
                 elements: dict[int, EncodedElement] | None = None) -> None:
        self.kind = kind
        self.end = end
        self.implicit = implicit
        self.little = little
        self.name = name
        self.items = items
        self.elements = elements


_U16 = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_U32 = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_TAG_LENGTH = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _dictionary_vr(tag: int) -> str | None:
    entry = DicomDictionary.get(tag)
    return None if entry is None else entry[0]


#: text VRs whose backslash separates values (PS3.5 section 6.4): pydicom then reads several
#: values, which the fast reader does not; DS and IS are split by their readers
_MULTI_VALUED_TEXT = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "PN", "SH", "TM", "UC",
                                "UI"})


def _check_plain_value(tag: int, vr: bytes | None, data: bytes, start: int, stop: int) -> None:
    """For the fast reader: hand an element to pydicom (:class:`NotParsed`) when pydicom would
    read it otherwise than as the raw bytes the reader keeps: a standard element whose explicit
    VR is not its dictionary VR (PS3.6), or a multi-valued text with a backslash in it."""
    standard = not tag >> 16 & 1
    dict_vr = _dictionary_vr(tag) if standard else None
    if vr is not None and dict_vr is not None and vr.decode("ascii", "replace") not in \
            dict_vr.split(" or "):
        raise NotParsed(f"{_name(tag)} is encoded as {vr!r}, not as its {dict_vr}")
    text_vr = dict_vr if vr is None else vr.decode("ascii", "replace")
    if text_vr in _MULTI_VALUED_TEXT and data.find(b"\\", start, stop) != -1:
        raise NotParsed(f"{_name(tag)} holds several values")


def _walk(data: bytes, root: _Frame, max_depth: int,
          collect: frozenset[int] | None) -> None:
    """Walk ``data`` from ``root`` to its end; raise :class:`StructureError` where it is damaged.

    ``collect``: the fast reader's mode: fill the frames' items and elements, with the tags of
    the nested sequences to return as items; :class:`NotParsed` for what it leaves to pydicom.
    """
    size = len(data)
    stack = [root]
    depth = 1 if root.kind == _ITEMS else 0  # sequences on the stack
    pos = 0
    while stack:
        frame = stack[-1]
        end = frame.end
        if end is not None and pos >= end:
            if pos > end:
                raise StructureError(f"{frame.name}: its content runs past its length")
            if stack.pop().kind != _ELEMENTS:
                depth -= 1
            continue
        limit = size if end is None else end
        if pos + 8 > limit:
            if end is None and pos >= size:
                raise StructureError(f"{frame.name}: the data set ends before its delimiter")
            raise StructureError(f"{frame.name}: a header at byte {pos} needs 8 bytes, "
                                 f"{limit - pos} remain")
        little = frame.little
        group, element, length = _TAG_LENGTH[little].unpack_from(data, pos)
        tag = group << 16 | element

        if frame.kind != _ELEMENTS:  # a sequence's items, or encapsulated fragments
            if tag == SEQUENCE_END and end is None:
                if length:
                    raise StructureError(f"{frame.name}: sequence delimiter with length "
                                         f"{length}, not 0")
                pos += 8
                stack.pop()
                depth -= 1
                continue
            if tag != ITEM:
                raise StructureError(f"{frame.name}: expected an item at byte {pos}, found "
                                     f"{_name(tag)}")
            pos += 8
            if length == UNDEFINED:
                if frame.kind == _FRAGMENTS:
                    raise StructureError(f"{frame.name}: a fragment of undefined length")
                item_end = None
            else:
                item_end = pos + length
                if item_end > limit:
                    raise StructureError(f"{frame.name}: an item of {length} bytes at byte "
                                         f"{pos - 8} runs past its container")
                if frame.kind == _FRAGMENTS:
                    pos = item_end
                    continue
            elements: dict[int, EncodedElement] | None = None
            if frame.items is not None:
                elements = {}
                frame.items.append(EncodedItem(elements))
            stack.append(_Frame(_ELEMENTS, item_end, frame.implicit, little,
                                f"{frame.name} item", elements=elements))
            continue

        # an element of a data set or item
        if group == 0xFFFE:
            if tag == ITEM_END and end is None and len(stack) > 1:
                if length:
                    raise StructureError(f"{frame.name}: item delimiter with length {length}, "
                                         "not 0")
                pos += 8
                stack.pop()
                continue
            raise StructureError(f"{frame.name}: unexpected item or delimiter {_name(tag)} "
                                 f"at byte {pos}")
        if frame.implicit:
            vr = None
            value = pos + 8
        else:
            vr = data[pos + 4:pos + 6]
            if vr in LONG_VRS:
                if pos + 12 > limit:
                    raise StructureError(f"{_name(tag)}: its header at byte {pos} needs 12 bytes")
                length = _U32[little].unpack_from(data, pos + 8)[0]
                value = pos + 12
            elif vr in SHORT_VRS:
                length = _U16[little].unpack_from(data, pos + 6)[0]
                value = pos + 8
            else:
                raise StructureError(f"{_name(tag)}: unknown VR {vr!r} at byte {pos + 4} "
                                     "(PS3.5 Table 6.2-1)")
        # what the value is: a sequence (with its items' encoding), fragments, or bytes
        kind = -1
        items_implicit, items_little = frame.implicit, little
        if length == UNDEFINED:
            if vr is None:
                dict_vr = _dictionary_vr(tag)
                if tag == _PIXEL_DATA or dict_vr in ("OB", "OW", "OB or OW"):
                    kind = _FRAGMENTS
                elif dict_vr in (None, "SQ", "UN"):
                    kind = _ITEMS
                else:
                    raise StructureError(f"{_name(tag)}: undefined length for VR {dict_vr} "
                                         "(PS3.5 section 7.1)")
            elif vr == b"SQ":
                kind = _ITEMS
            elif vr == b"UN":
                kind, items_implicit, items_little = _ITEMS, True, True
            elif vr in _FRAGMENT_VRS:
                kind = _FRAGMENTS
            else:
                raise StructureError(f"{_name(tag)}: undefined length for VR {vr.decode()} "
                                     "(PS3.5 section 7.1)")
            stop = None
        else:
            stop = value + length
            if stop > limit:
                raise StructureError(f"{_name(tag)}: its value of {length} bytes at byte {value}"
                                     f" runs past its container ({limit - value} bytes remain)")
            if vr == b"SQ":
                kind = _ITEMS
            elif vr is None:
                if _dictionary_vr(tag) == "SQ":
                    kind = _ITEMS
            elif vr == b"UN" and _dictionary_vr(tag) == "SQ":
                kind, items_implicit, items_little = _ITEMS, True, True
        if collect is not None:
            if vr == b"UN":
                raise NotParsed(f"{_name(tag)} is encoded as UN")
            if tag in collect and kind != _ITEMS:
                raise NotParsed(f"{_name(tag)} is encoded as {vr!r}, not as a sequence")
            if kind == -1 and stop is not None:
                _check_plain_value(tag, vr, data, value, stop)
        if kind == -1 or (stop is not None and stop == value):
            if frame.elements is not None:
                frame.elements[tag] = EncodedElement(
                    [] if kind == _ITEMS else data[value:value if stop is None else stop])
            pos = value if stop is None else stop
            continue
        if depth >= max_depth:
            raise StructureError(f"{_name(tag)}: sequences nested more than {max_depth} deep")
        depth += 1
        items: list[EncodedItem] | None = None
        if frame.elements is not None and kind == _ITEMS and collect is not None \
                and tag in collect:
            items = []
            frame.elements[tag] = EncodedElement(items)
        stack.append(_Frame(kind, stop, items_implicit, items_little, _name(tag), items=items))
        pos = value


def check_structure(data: bytes, *, implicit: bool, little: bool, deflated: bool = False,
                    max_depth: int = MAX_DEPTH, max_inflated: int = MAX_INFLATED_BYTES) -> None:
    """Raise :class:`StructureError` unless ``data`` is a complete, well-formed data set.

    ``data``: the data set's bytes as transferred (deflated for Deflated Explicit VR Little
    Endian, PS3.5 section A.5, which is Explicit VR Little Endian once inflated). A deflated
    data set that would inflate to more than ``max_inflated`` bytes is refused before it is
    inflated further (a "deflate bomb": zlib inflates up to about 1,000 times its input).
    """
    if deflated:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(data, max_inflated + 1)
        except zlib.error as exc:
            raise StructureError(f"the deflated data set cannot be inflated: {exc}") from exc
        if len(data) > max_inflated:
            raise StructureError(f"the deflated data set inflates to more than {max_inflated} "
                                 "bytes")
        if not inflater.eof:
            raise StructureError("the deflated data set ends before its end")
    _walk(data, _Frame(_ELEMENTS, len(data), implicit, little, "the data set"), max_depth, None)


def encoded_items(
    value: bytes, *, implicit_vr: bool, little_endian: bool, sequences: Collection[int],
    max_depth: int = MAX_DEPTH,
) -> list[EncodedItem]:
    """The items of a defined-length sequence value (the bytes after its length field).

    ``sequences``: tags of nested sequences to read as items too (others are walked, checked
    and left out). Raises :class:`NotParsed` for anything it leaves to pydicom.
    """
    data = bytes(value)
    items: list[EncodedItem] = []
    root = _Frame(_ITEMS, len(data), implicit_vr, little_endian, "the sequence", items=items)
    try:
        _walk(data, root, max_depth, frozenset(int(t) for t in sequences))
    except StructureError as exc:
        raise NotParsed(str(exc)) from exc
    return items
