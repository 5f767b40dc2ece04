"""The one error type for SROs that cannot be decoded, a stable code per SPEC section 1 check."""

from __future__ import annotations

from enum import Enum


class InvalidReason(str, Enum):
    """Machine-readable code of each failed check (SPEC section 1), stable across versions."""

    UNREADABLE = "unreadable"  # not a DICOM file / cannot be parsed at all
    NOT_SPATIAL_REGISTRATION = "not_spatial_registration"  # wrong SOP Class UID
    MISSING_VALUE = "missing_value"  # a required attribute or sequence is absent or empty
    MATRIX_TYPE_NOT_RIGID = "matrix_type_not_rigid"  # RIGID_SCALE / AFFINE / other
    MATRIX_NOT_16_VALUES = "matrix_not_16_values"
    MATRIX_NOT_FINITE = "matrix_not_finite"  # NaN or infinity
    ROTATION_NOT_ORTHONORMAL = "rotation_not_orthonormal"  # max |RᵀR − I| > 1e-4
    ROTATION_NOT_PROPER = "rotation_not_proper"  # det R ≤ 0 (a reflection)
    BOTTOM_ROW_INVALID = "bottom_row_invalid"  # bottom row is not (0, 0, 0, 1)
    NO_REGISTERED_ITEM = "no_registered_item"
    MULTIPLE_REGISTERED_ITEMS = "multiple_registered_items"
    MULTIPLE_REFERENCE_ITEMS = "multiple_reference_items"
    OFFSET_INVALID = "offset_invalid"  # the couch offset block is present but malformed


class SROError(ValueError):
    """An SRO failed a check of SPEC section 1; ``code`` names the check, ``message`` says why."""

    def __init__(self, code: InvalidReason, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
