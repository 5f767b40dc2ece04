"""Couch offsets: the 6-DOF correction a console reports (docs/contract.md section 1.5).

Value types only, free of pydicom, for the model core (:mod:`model.decision`, :mod:`model.batch`):
where and how a sender carries its offset in a data set is an offset profile
(:mod:`model.inputs.profiles`, docs/contract.md section 5.1), which converts to these types once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from model.errors import InvalidReason, SROError

Vector3 = tuple[float, float, float]


class TranslationUnit(str, Enum):
    """Unit the sender uses for couch translations."""

    MM = "mm"
    CM = "cm"

    @property
    def to_mm(self) -> float:
        return 10.0 if self is TranslationUnit.CM else 1.0


@dataclass(frozen=True, slots=True)
class Precision:
    """Display precision of the console: the rounding step of each reported value."""

    rotation_step_deg: float = 0.1
    translation_step_mm: float = 0.1

    def __post_init__(self) -> None:
        for name in ("rotation_step_deg", "translation_step_mm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class CouchOffset:
    """The 6-DOF couch correction of docs/contract.md section 1, in mm and degrees in (−180,
    180]."""

    translation_mm: Vector3
    rotation_deg: Vector3
    isocenter_mm: Vector3 | None = None
    console: str | None = None

    def __post_init__(self) -> None:
        values = [*self.translation_mm, *self.rotation_deg, *(self.isocenter_mm or ())]
        if not all(math.isfinite(v) for v in values):
            raise SROError(InvalidReason.OFFSET_INVALID, "the couch offset has NaN or infinity")

    def as_dict(self) -> dict[str, Any]:
        return {
            "translation_mm": list(self.translation_mm),
            "rotation_deg": list(self.rotation_deg),
            "isocenter_mm": None if self.isocenter_mm is None else list(self.isocenter_mm),
            "console": self.console,
        }


def wrap_angle(value: float) -> float:
    """Wrap one angle to (−180, 180] (359.8 means −0.2); values already in range are kept exact."""
    if -180.0 < value <= 180.0:
        return value
    wrapped = math.fmod(value + 180.0, 360.0)
    if wrapped < 0:
        wrapped += 360.0
    wrapped -= 180.0
    return 180.0 if wrapped == -180.0 else wrapped
