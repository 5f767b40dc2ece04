"""Offset profiles: where and how a sender reports its couch offset (docs/contract.md section 5.1).

A profile names the private block that carries the offset inside the data set (the default block
of docs/contract.md section 1.6, found through its private creator, PS3.5 section 7.8.1), the
sender's translation unit, whether [0, 360) angles are wrapped, and the console's display
precision. Values are converted to mm and wrapped degrees here, once, into the pydicom-free
:class:`model.offset.CouchOffset`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from model.dicom.sro import DEFAULT_PRIVATE_CREATOR
from model.errors import InvalidReason, SROError
from model.offset import CouchOffset, Precision, TranslationUnit, Vector3, wrap_angle

__all__ = ["DEFAULT_PRIVATE_CREATOR", "DEFAULT_PROFILE", "OffsetProfile"]


def _vector(values: Sequence[float], what: str) -> Vector3:
    if len(values) != 3:
        raise SROError(InvalidReason.OFFSET_INVALID, f"{what} has {len(values)} values, not 3")
    out = (float(values[0]), float(values[1]), float(values[2]))
    if not all(math.isfinite(v) for v in out):
        raise SROError(InvalidReason.OFFSET_INVALID, f"{what} has NaN or infinity")
    return out


@dataclass(frozen=True, slots=True)
class OffsetProfile:
    """How one sender reports its couch offset (docs/contract.md section 5.1).

    ``group`` of ``None`` searches every odd group for ``private_creator``, as DICOM private
    blocks are found (PS3.5 section 7.8.1). Element offsets are within the block.
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

    def convert(
        self,
        translation: Sequence[float],
        rotation: Sequence[float],
        isocenter: Sequence[float] | None = None,
        console: str | None = None,
    ) -> CouchOffset:
        """Apply the profile's unit and angle wrap to raw reported values."""
        t = _vector(translation, "the couch translation")
        r = _vector(rotation, "the couch rotation")
        scale = self.translation_unit.to_mm
        c = None if isocenter is None else _vector(isocenter, "the isocenter")
        if self.wrap_angles:
            r = (wrap_angle(r[0]), wrap_angle(r[1]), wrap_angle(r[2]))
        return CouchOffset(
            translation_mm=(t[0] * scale, t[1] * scale, t[2] * scale),
            rotation_deg=r,
            isocenter_mm=c,
            console=console,
        )

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
            raw = elem.value
            if isinstance(raw, bytes):  # implicit VR or UN (PS3.5 6.2.2): FD, little endian
                if len(raw) % 8:
                    raise SROError(
                        InvalidReason.OFFSET_INVALID,
                        f"private element ({elem.tag.group:04X},{elem.tag.element:04X}) has "
                        f"{len(raw)} bytes, not a whole number of FD values",
                    )
                return list(struct.unpack(f"<{len(raw) // 8}d", raw))
            try:
                return [float(v) for v in raw] if elem.VM > 1 else [float(raw)]
            except (TypeError, ValueError) as exc:
                raise SROError(
                    InvalidReason.OFFSET_INVALID,
                    f"private element ({elem.tag.group:04X},{elem.tag.element:04X}) "
                    f"is not numeric: {exc}",
                ) from exc

        translation = values(self.translation_element)
        rotation = values(self.rotation_element)
        if translation is None or rotation is None:
            missing = "translation" if translation is None else "rotation"
            raise SROError(
                InvalidReason.OFFSET_INVALID,
                f"private block '{self.private_creator}' has no couch {missing}",
            )
        isocenter = values(self.isocenter_element)
        console = None
        if self.console_element is not None and (base | self.console_element) in ds:
            value = ds[base | self.console_element].value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            console = str(value).strip() or None
        return self.convert(translation, rotation, isocenter, console)

    def _find_base(self, ds: Dataset) -> int | None:
        for group in self._candidate_groups(ds):
            for slot in range(0x10, 0x100):
                elem = ds.get((group << 16) | slot)
                if elem is not None and str(elem.value).strip() == self.private_creator:
                    return (group << 16) | (slot << 8)
        return None

    def _candidate_groups(self, ds: Dataset) -> list[int]:
        if self.group is not None:
            return [self.group]
        # tags only: iterating the data set itself would convert every raw element
        return sorted({tag >> 16 for tag in ds.keys() if (tag >> 16) % 2 == 1})  # noqa: SIM118


DEFAULT_PROFILE = OffsetProfile()
