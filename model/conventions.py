"""The 96 hypotheses of docs/contract.md section 2: rotation order, direction and patient position.

A convention is ``(order, inverse, patient_position)``. Orders are extrinsic (fixed-axis)
sequences; the intrinsic alias of an order is the same matrix sequence reversed and is
reported, never counted as a separate hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class RotationOrder(str, Enum):
    """Extrinsic rotation order about the IEC 61217 table-top axes (docs/contract.md section 2)."""

    XYZ = "xyz"
    XZY = "xzy"
    YXZ = "yxz"
    YZX = "yzx"
    ZXY = "zxy"
    ZYX = "zyx"

    @property
    def intrinsic_alias(self) -> str:
        """The intrinsic sequence with the same matrix (extrinsic ``xyz`` is intrinsic ``ZYX``)."""
        return self.value[::-1].upper()

    @property
    def axis_indices(self) -> tuple[int, int, int]:
        """Indices into ``(rx, ry, rz)`` in the order the rotations are applied."""
        return _AXIS_INDICES[self.value]


_AXIS_INDICES: dict[str, tuple[int, int, int]] = {
    order: ("xyz".index(order[0]), "xyz".index(order[1]), "xyz".index(order[2]))
    for order in ("xyz", "xzy", "yxz", "yzx", "zxy", "zyx")
}


class PatientPosition(str, Enum):
    """DICOM Patient Position (0018,5100) values covered by docs/contract.md section 2 (PS3.3
    C.7.3.1.1.2).

    Decubitus right (``HFDR``, ``FFDR``) means lying on the right side.
    """

    HFS = "HFS"
    HFP = "HFP"
    FFS = "FFS"
    FFP = "FFP"
    HFDR = "HFDR"
    HFDL = "HFDL"
    FFDR = "FFDR"
    FFDL = "FFDL"

    @property
    def decubitus(self) -> bool:
        """Whether the patient lies on a side (docs/contract.md section 2)."""
        return self.value[2] == "D"


#: Signed permutations ``P`` with ``v_iec = P · v_patient`` (docs/contract.md section 2 table).
PATIENT_TO_IEC: dict[PatientPosition, FloatArray] = {
    PatientPosition.HFS: np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64),
    PatientPosition.HFP: np.array([[-1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=np.float64),
    PatientPosition.FFS: np.array([[-1, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=np.float64),
    PatientPosition.FFP: np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64),
    PatientPosition.HFDR: np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float64),
    PatientPosition.HFDL: np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], dtype=np.float64),
    PatientPosition.FFDR: np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=np.float64),
    PatientPosition.FFDL: np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], dtype=np.float64),
}


@dataclass(frozen=True, slots=True)
class Convention:
    """One hypothesis ``h = (order, inverse, patient_position)`` of docs/contract.md section 2."""

    order: RotationOrder
    inverse: bool
    patient_position: PatientPosition

    @property
    def index(self) -> int:
        """Position of this convention in :data:`HYPOTHESES`."""
        return HYPOTHESIS_INDEX[self]

    @property
    def permutation(self) -> FloatArray:
        """The signed permutation ``P`` (LPS patient to IEC table-top)."""
        return PATIENT_TO_IEC[self.patient_position]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of docs/contract.md section 5, with the intrinsic alias named too."""
        return {
            "order": self.order.value,
            "inverse": self.inverse,
            "patient_position": self.patient_position.value,
            "intrinsic_order": self.order.intrinsic_alias,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Convention:
        return cls(
            RotationOrder(data["order"]),
            bool(data["inverse"]),
            PatientPosition(data["patient_position"]),
        )

    def __str__(self) -> str:
        direction = "inverse" if self.inverse else "direct"
        return f"{self.order.value}/{direction}/{self.patient_position.value}"


#: All 96 hypotheses, in a fixed order (position-major, then inverse, then order).
HYPOTHESES: tuple[Convention, ...] = tuple(
    Convention(order, inverse, position)
    for position in PatientPosition
    for inverse in (False, True)
    for order in RotationOrder
)
HYPOTHESIS_INDEX: dict[Convention, int] = {h: i for i, h in enumerate(HYPOTHESES)}
N_HYPOTHESES = len(HYPOTHESES)

#: ``P`` for each hypothesis, shape (H, 3, 3) with ``H = N_HYPOTHESES`` (96).
PERMUTATIONS: FloatArray = np.stack([h.permutation for h in HYPOTHESES])
#: ``inverse`` for each hypothesis, shape (H,).
INVERSE_FLAGS: npt.NDArray[np.bool_] = np.array([h.inverse for h in HYPOTHESES])
#: Order index (into ``RotationOrder``) for each hypothesis, shape (H,).
ORDER_INDEX: npt.NDArray[np.int64] = np.array(
    [list(RotationOrder).index(h.order) for h in HYPOTHESES]
)
