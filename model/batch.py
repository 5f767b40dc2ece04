"""Decoder inputs as arrays: one row per SRO, ready for vectorised decoders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from model.conventions import FloatArray
from model.geometry import DEFAULT_ISOCENTER_BOUND_MM
from model.offset import CouchOffset, Precision


@dataclass(frozen=True, slots=True)
class DecodeInput:
    """One decodable SRO: its effective matrix, the reported offset and the display precision."""

    matrix: FloatArray  # (4, 4)
    offset: CouchOffset
    precision: Precision
    orthonormality_error: float = 0.0
    #: an unknown isocenter lies within this of the origin (docs/contract.md section 3)
    isocenter_bound_mm: float = DEFAULT_ISOCENTER_BOUND_MM


@dataclass(frozen=True, slots=True)
class InputBatch:
    """``N`` inputs as arrays. Missing isocenters are zeros with ``has_isocenter`` false.

    ``isocenter_bound_mm`` (N,) is what the translation of an input without an isocenter is
    checked against (docs/contract.md section 3); ``None`` gives the default for every input.
    """

    matrix: FloatArray  # (N, 4, 4)
    translation_mm: FloatArray  # (N, 3)
    rotation_deg: FloatArray  # (N, 3)
    isocenter_mm: FloatArray  # (N, 3)
    has_isocenter: npt.NDArray[np.bool_]  # (N,)
    rotation_step_deg: FloatArray  # (N,)
    translation_step_mm: FloatArray  # (N,)
    orthonormality_error: FloatArray  # (N,)
    isocenter_bound_mm: FloatArray = field(default=None)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.isocenter_bound_mm is None:
            bound = np.full(self.matrix.shape[0], DEFAULT_ISOCENTER_BOUND_MM)
            object.__setattr__(self, "isocenter_bound_mm", bound)

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    @classmethod
    def from_inputs(cls, inputs: Sequence[DecodeInput]) -> InputBatch:
        n = len(inputs)
        iso = np.zeros((n, 3))
        has = np.zeros(n, dtype=bool)
        for i, x in enumerate(inputs):
            if x.offset.isocenter_mm is not None:
                iso[i] = x.offset.isocenter_mm
                has[i] = True
        return cls(
            matrix=np.array([x.matrix for x in inputs], dtype=np.float64).reshape(n, 4, 4),
            translation_mm=np.array([x.offset.translation_mm for x in inputs]).reshape(n, 3),
            rotation_deg=np.array([x.offset.rotation_deg for x in inputs]).reshape(n, 3),
            isocenter_mm=iso,
            has_isocenter=has,
            rotation_step_deg=np.array([x.precision.rotation_step_deg for x in inputs]),
            translation_step_mm=np.array([x.precision.translation_step_mm for x in inputs]),
            orthonormality_error=np.array([x.orthonormality_error for x in inputs]),
            isocenter_bound_mm=np.array([x.isocenter_bound_mm for x in inputs], dtype=np.float64),
        )

    def subset(self, index: npt.NDArray[np.int64] | slice) -> InputBatch:
        return InputBatch(
            matrix=self.matrix[index],
            translation_mm=self.translation_mm[index],
            rotation_deg=self.rotation_deg[index],
            isocenter_mm=self.isocenter_mm[index],
            has_isocenter=self.has_isocenter[index],
            rotation_step_deg=self.rotation_step_deg[index],
            translation_step_mm=self.translation_step_mm[index],
            orthonormality_error=self.orthonormality_error[index],
            isocenter_bound_mm=self.isocenter_bound_mm[index],
        )
