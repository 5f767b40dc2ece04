"""Reason codes of ``invalid`` decisions, and the one error type for SROs that cannot be decoded.

:class:`InvalidReason` is the stable list of every code ``sro-decoder decode`` or the node can
write in a record's ``reason_code`` (docs/contract.md sections 1 and 5): one per check of section
1, and the node's own refusals. The strings never change meaning between versions.
"""

from __future__ import annotations

from enum import Enum


class InvalidReason(str, Enum):
    """Machine-readable code of each ``invalid`` decision, stable across versions."""

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
    # the companion object of docs/contract.md section 1 (the XVI RPS export)
    COMPANION_ZIP_MISSING = "companion_zip_missing"  # no ZIP element (creator, element) in it
    COMPANION_ZIP_INVALID = "companion_zip_invalid"  # not a ZIP archive, or damaged
    COMPANION_ZIP_TOO_LARGE = "companion_zip_too_large"  # over 10 MB expanded or 100 members
    COMPANION_ZIP_UNSAFE_NAME = "companion_zip_unsafe_name"  # a path or absolute member name
    COMPANION_INI_MISSING = "companion_ini_missing"  # no (or more than one) <UID>.INI.XVI member
    COMPANION_INI_MALFORMED = "companion_ini_malformed"  # no alignment section or bad values
    # refusals of the node and of decode beyond the checks of docs/contract.md section 1
    DATASET_TOO_LARGE = "dataset_too_large"  # over [node] max_dataset_bytes: refused
    REQUEST_UID_TOO_LONG = "request_uid_too_long"  # a C-STORE request UID over 64 characters
    DECODE_ERROR = "decode_error"  # the decoder itself failed on this object
    # a copy of a recorded SOP Instance UID whose data set differs from the first copy's
    DUPLICATE_CONFLICT = "duplicate_conflict"


class SROError(ValueError):
    """An SRO failed a check of docs/contract.md section 1.

    ``code`` names the check, ``message`` says why.
    """

    def __init__(self, code: InvalidReason, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
