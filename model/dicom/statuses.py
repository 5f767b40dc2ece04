"""C-STORE and C-ECHO response statuses used by the node (PS3.4 Annex B.2.3, PS3.7 Annex C)."""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    """Storage Service Class statuses (PS3.4 Table B.2-1)."""

    SUCCESS = 0x0000
    #: Refused: Out of Resources: archive or audit database failed, or the data set is too large.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class.
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: Cannot understand (the data set cannot be parsed).
    CANNOT_UNDERSTAND = 0xC000
    #: Error: Cannot understand, a check of SPEC section 1 failed (the 0xCxxx range is ours).
    CANNOT_UNDERSTAND_INVALID_REGISTRATION = 0xC001

    @property
    def is_success(self) -> bool:
        return self is StoreStatus.SUCCESS


class EchoStatus(IntEnum):
    """Verification Service Class status (PS3.7 Annex C)."""

    SUCCESS = 0x0000
