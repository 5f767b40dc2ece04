"""Offset profiles: where and how a sender reports its couch offset (docs/contract.md section 5).

A profile says where the values are (a private block found through its creator, PS3.5 section
7.8.1, or fixed tags; one element per triple or one element with six values), how they are
encoded (VR ``FD``, ``FL``, ``DS`` or a backslash-separated string, :class:`ValueVR`), in which
component order and with which signs (``+tx,-tz,+ty``), in which units (mm or cm; degrees or
radians), which registration of an SRO to decode (``registration_selector``, docs/contract.md
section 1), where the SRO's registrations carry their labels, whether a companion object (the
XVI RPS export) supplies the offset, and the console's display precision. Values are converted
to mm and wrapped degrees here, once, into the pydicom-free :class:`model.offset.CouchOffset`.

A profile's private elements are registered with pydicom's private dictionary
(:func:`register_private_entries`), so that pydicom decodes them with their VR when the
transfer syntax does not carry it (Implicit VR Little Endian, or UN; PS3.5 section 6.2.2);
values still in bytes are decoded by the profile's VR.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from pydicom.dataset import Dataset

from model.dicom.sro import DEFAULT_PRIVATE_CREATOR, LabelElement
from model.errors import InvalidReason, SROError
from model.inputs.pairing import DEFAULT_PAIR_WINDOW_S
from model.offset import CouchOffset, Precision, TranslationUnit, Vector3, wrap_angle

__all__ = ["DEFAULT_PRIVATE_CREATOR", "DEFAULT_PROFILE", "OffsetLayout", "OffsetProfile",
           "RotationUnit", "ValueVR", "parse_components"]


class ValueVR(str, Enum):
    """How the offset's values are encoded (PS3.5 section 6.2)."""

    FD = "FD"  # 8-byte IEEE floats
    FL = "FL"  # 4-byte IEEE floats
    DS = "DS"  # decimal strings, backslash-separated
    STRING = "string"  # any text VR (LO, SH, LT, UT) holding backslash-separated numbers

    @property
    def dictionary_vr(self) -> str:
        return "LO" if self is ValueVR.STRING else self.value


class OffsetLayout(str, Enum):
    """One element per triple (translation, rotation, isocenter), or one element with the six
    values: the translation then the rotation, each in its component order."""

    TRIPLES = "triples"
    SIX = "six"


class RotationUnit(str, Enum):
    DEGREES = "degrees"
    RADIANS = "radians"

    @property
    def to_degrees(self) -> float:
        return 180.0 / math.pi if self is RotationUnit.RADIANS else 1.0


Components = tuple[tuple[int, float], tuple[int, float], tuple[int, float]]
_COMPONENT = re.compile(r"^([+-]?)\s*[a-z]?([xyz])$")
IDENTITY_COMPONENTS: Components = ((0, 1.0), (1, 1.0), (2, 1.0))


def parse_components(text: str) -> Components:
    """A component order with signs, e.g. ``+dx,-dz,+dy``: the k-th value written is the named
    axis (x, y or z, with any one-letter prefix such as ``t``, ``d`` or ``r``) times the sign.
    Returns, for each written value, ``(axis index, sign)``; ``ValueError`` unless it names each
    of x, y and z once."""
    parts = [p.strip().lower() for p in text.split(",")]
    out = []
    for part in parts:
        m = _COMPONENT.match(part)
        if m is None:
            raise ValueError(f"{part!r} is not a signed axis such as +x, -dz or +ry")
        out.append(("xyz".index(m[2]), -1.0 if m[1] == "-" else 1.0))
    if len(out) != 3 or sorted(axis for axis, _ in out) != [0, 1, 2]:
        raise ValueError(f"{text!r} does not name each of x, y and z once")
    return (out[0], out[1], out[2])


def _reorder(values: Sequence[float], components: Components) -> list[float]:
    true = [0.0, 0.0, 0.0]
    for written, (axis, sign) in zip(values, components, strict=True):
        true[axis] = sign * written
    return true


def _vector(values: Sequence[float], what: str) -> Vector3:
    if len(values) != 3:
        raise SROError(InvalidReason.OFFSET_INVALID, f"{what} has {len(values)} values, not 3")
    out = (float(values[0]), float(values[1]), float(values[2]))
    if not all(math.isfinite(v) for v in out):
        raise SROError(InvalidReason.OFFSET_INVALID, f"{what} has NaN or infinity")
    return out


def _decode_bytes(raw: bytes, vr: ValueVR, where: str) -> list[float]:
    if vr in (ValueVR.FD, ValueVR.FL):
        size, code = (8, "d") if vr is ValueVR.FD else (4, "f")
        if len(raw) % size:
            raise SROError(InvalidReason.OFFSET_INVALID,
                           f"{where} has {len(raw)} bytes, not a whole number of {vr.value} values")
        return list(struct.unpack(f"<{len(raw) // size}{code}", raw))
    text = raw.decode("latin-1").strip("\0 ")
    try:
        return [float(v) for v in text.split("\\")] if text else []
    except ValueError as exc:
        raise SROError(InvalidReason.OFFSET_INVALID,
                       f"{where} is not {vr.value} numbers: {text[:60]!r}") from exc


@dataclass(frozen=True, slots=True)
class OffsetProfile:
    """How one sender reports its couch offset (module docstring; docs/contract.md section 5).

    ``private_creator`` names the block (``group`` of ``None``: any odd group, PS3.5 section
    7.8.1); an empty creator means fixed tags: ``(group, block << 8 | element)``, no creator
    checked. Element numbers are offsets within the block. With ``layout`` SIX the six values
    are in ``translation_element`` and ``rotation_element`` is not read.
    ``translation_components``/``rotation_components`` are as :func:`parse_components` reads
    them. ``companion``: whether a companion object may supply the offset of this sender's SROs
    (paired within ``pair_window_s``, :mod:`model.inputs.pairing`).
    """

    name: str = "default"
    private_creator: str = DEFAULT_PRIVATE_CREATOR
    group: int | None = None
    translation_element: int = 0x01
    rotation_element: int = 0x02
    isocenter_element: int | None = 0x03
    console_element: int | None = 0x04
    translation_unit: TranslationUnit = TranslationUnit.MM
    wrap_angles: bool = True
    precision: Precision = field(default_factory=Precision)
    vr: ValueVR = ValueVR.FD
    layout: OffsetLayout = OffsetLayout.TRIPLES
    translation_components: str = "+x,+y,+z"
    rotation_components: str = "+x,+y,+z"
    rotation_unit: RotationUnit = RotationUnit.DEGREES
    block: int = 0x10
    registration_selector: str | None = None
    label_group: int = 0x0021
    label_element: int = 0x39
    label_creator: str | None = None
    companion: bool = True
    pair_window_s: float = DEFAULT_PAIR_WINDOW_S

    def __post_init__(self) -> None:
        parse_components(self.translation_components)
        parse_components(self.rotation_components)
        if not (self.pair_window_s > 0 and math.isfinite(self.pair_window_s)):
            raise ValueError(f"pair_window_s must be positive, got {self.pair_window_s!r}")
        if not self.private_creator and self.group is None:
            raise ValueError("a profile without a private creator needs its group")
        if self.private_creator:
            elements = {self.translation_element: self.vr.dictionary_vr}
            if self.layout is OffsetLayout.TRIPLES:
                elements[self.rotation_element] = self.vr.dictionary_vr
                if self.isocenter_element is not None:
                    elements[self.isocenter_element] = self.vr.dictionary_vr
            if self.console_element is not None:
                elements[self.console_element] = "LO"
            group = self.group if self.group is not None else 0x0009
            register_private_entries(self.private_creator, {
                (group << 16) | 0x1000 | e: (vr, "1-n", f"{self.name} couch offset", "")
                for e, vr in elements.items()})

    @property
    def labels(self) -> LabelElement:
        """Where this sender's SROs label their registrations (docs/contract.md section 1)."""
        return LabelElement(self.label_group, self.label_element, self.label_creator)

    def convert(
        self,
        translation: Sequence[float],
        rotation: Sequence[float],
        isocenter: Sequence[float] | None = None,
        console: str | None = None,
    ) -> CouchOffset:
        """Apply the profile's unit and angle wrap to values already in (x, y, z) order."""
        t = _vector(translation, "the couch translation")
        r = _vector(rotation, "the couch rotation")
        scale = self.translation_unit.to_mm
        c = None if isocenter is None else _vector(isocenter, "the isocenter")
        to_deg = self.rotation_unit.to_degrees
        r = (r[0] * to_deg, r[1] * to_deg, r[2] * to_deg)
        if self.wrap_angles:
            r = (wrap_angle(r[0]), wrap_angle(r[1]), wrap_angle(r[2]))
        return CouchOffset(
            translation_mm=(t[0] * scale, t[1] * scale, t[2] * scale),
            rotation_deg=r,
            isocenter_mm=c,  # patient coordinates (mm), as written
            console=console,
        )

    def convert_written(self, translation: Sequence[float], rotation: Sequence[float],
                        isocenter: Sequence[float] | None = None,
                        console: str | None = None) -> CouchOffset:
        """:meth:`convert` of table-top values in the sender's written component order and
        signs; the isocenter is a point in the SRO's patient coordinates (mm), read as is."""
        t = _reorder(_vector(translation, "the couch translation"),
                     parse_components(self.translation_components))
        r = _reorder(_vector(rotation, "the couch rotation"),
                     parse_components(self.rotation_components))
        return self.convert(t, r, isocenter, console)

    def extract(self, ds: Dataset) -> CouchOffset | None:
        """The offset carried in ``ds``, or ``None`` when the private block is absent.

        Raises :class:`SROError` (``OFFSET_INVALID``) when the block is present but malformed.
        """
        base = self._find_base(ds)
        if base is None:
            return None

        def values(element: int | None) -> list[float] | None:
            if element is None:
                return None
            elem = ds.get(base | element)
            if elem is None or elem.value is None or elem.VM == 0:
                return None
            where = f"private element ({elem.tag.group:04X},{elem.tag.element:04X})"
            raw = elem.value
            if isinstance(raw, bytes):  # implicit VR or UN (PS3.5 6.2.2): the profile's VR
                return _decode_bytes(raw, self.vr, where)
            try:
                if isinstance(raw, str):  # a text VR pydicom did not split
                    return [float(v) for v in raw.strip("\0 ").split("\\")]
                return [float(v) for v in raw] if elem.VM > 1 else [float(raw)]
            except (TypeError, ValueError) as exc:
                raise SROError(InvalidReason.OFFSET_INVALID,
                               f"{where} is not numeric: {exc}") from exc

        if not self.private_creator and ds.get(base | self.translation_element) is None:
            return None  # fixed tags: no block means the elements are absent
        translation = values(self.translation_element)
        if self.layout is OffsetLayout.SIX:
            if translation is not None and len(translation) != 6:
                raise SROError(InvalidReason.OFFSET_INVALID,
                               f"the couch offset element has {len(translation)} values, not 6")
            rotation = None if translation is None else translation[3:]
            translation = None if translation is None else translation[:3]
        else:
            rotation = values(self.rotation_element)
        if translation is None or rotation is None:
            missing = "translation" if translation is None else "rotation"
            raise SROError(
                InvalidReason.OFFSET_INVALID,
                f"private block '{self.private_creator or self.name}' has no couch {missing}",
            )
        isocenter = values(self.isocenter_element) if self.layout is OffsetLayout.TRIPLES else None
        console = None
        if self.console_element is not None and (base | self.console_element) in ds:
            value = ds[base | self.console_element].value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            console = str(value).strip() or None
        return self.convert_written(translation, rotation, isocenter, console)

    def _find_base(self, ds: Dataset) -> int | None:
        if not self.private_creator:
            assert self.group is not None
            return (self.group << 16) | (self.block << 8)
        return find_private_base(ds, self.private_creator, self.group)


def find_private_base(ds: Dataset, creator: str, group: int | None = None) -> int | None:
    """The base tag ``(gggg,xx00)`` of the private block whose Private Creator (gggg,00xx) is
    ``creator`` (padding ignored) in ``group``, or in any odd group when ``group`` is ``None``
    (PS3.5 section 7.8.1); ``None`` when no such block."""
    groups = [group] if group is not None else sorted(
        {tag >> 16 for tag in ds.keys() if (tag >> 16) % 2 == 1})  # noqa: SIM118
    for g in groups:
        for slot in range(0x10, 0x100):
            elem = ds.get((g << 16) | slot)
            if elem is None:
                continue
            value = elem.value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if str(value).strip("\0 ") == creator:
                return (g << 16) | (slot << 8)
    return None


def register_private_entries(creator: str, entries: dict[int, tuple[str, str, str, str]]) -> None:
    """Register a sender's private elements with pydicom's private dictionary
    (``pydicom.datadict.add_private_dict_entries``), so pydicom gives them their VR when the
    transfer syntax does not (Implicit VR, or UN; PS3.5 section 6.2.2). ``entries`` are keyed
    by any tag of the block (only the element's low byte counts)."""
    from pydicom.datadict import add_private_dict_entries

    add_private_dict_entries(creator, entries)


DEFAULT_PROFILE = OffsetProfile()

#: Profiles for known senders, shipped with the product (docs/contract.md section 5); a site
#: selects one by listing its calling AE titles (``[profiles.elekta_xvi] calling_ae_titles``),
#: ``sro-decoder decode --profile NAME`` applies one. node/settings.py builds the shipped
#: ``[profiles.*]`` tables from these (config/default.toml documents them).
SHIPPED_PROFILES: dict[str, OffsetProfile] = {
    "default": DEFAULT_PROFILE,
    # Elekta XVI: several labelled registrations in the SRO (the one labelled Correction is
    # decoded); the correction comes from the RPS companion (model.inputs.xvi_rps), paired by
    # time; the labels are XVI's (0021,xx39), whose private creator string is not documented
    # (any creator of group 0021 is accepted).
    "elekta_xvi": OffsetProfile(
        name="elekta_xvi", registration_selector="Correction", label_group=0x0021,
        label_element=0x39, label_creator=None, companion=True,
        pair_window_s=DEFAULT_PAIR_WINDOW_S),
    # A worked example of a vendor's own private tags (the VoxTox research data layout): DS
    # values at the fixed tags (0099,1011) (translation, written +dx, -dz, +dy) and (0099,1012)
    # (rotation), no private creator checked.
    "voxtox_ds": OffsetProfile(
        name="voxtox_ds", private_creator="", group=0x0099, block=0x10,
        translation_element=0x11, rotation_element=0x12, isocenter_element=None,
        console_element=None, vr=ValueVR.DS, translation_components="+dx,-dz,+dy"),
}
