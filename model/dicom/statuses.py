"""C-STORE and C-ECHO response statuses used by the node (PS3.4 Annex B.2.3, PS3.7 Annex C)."""

from __future__ import annotations

from enum import IntEnum

from model.decision import DecisionKind, DecodeRecord
from model.errors import InvalidReason


class StoreStatus(IntEnum):
    """Storage Service Class statuses (PS3.4 Table B.2-1)."""

    SUCCESS = 0x0000
    #: Refused: Out of Resources: archive or audit database failed, or the data set is too large.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class.
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: Cannot understand (the data set cannot be parsed).
    CANNOT_UNDERSTAND = 0xC000
    #: Error: Cannot understand, a check of docs/contract.md section 1 failed (the 0xCxxx range
    #: is ours).
    CANNOT_UNDERSTAND_INVALID_REGISTRATION = 0xC001

    @property
    def is_success(self) -> bool:
        return self is StoreStatus.SUCCESS


class EchoStatus(IntEnum):
    """Verification Service Class status (PS3.7 Annex C)."""

    SUCCESS = 0x0000


#: ``invalid`` decisions whose data set could not be understood at all (PS3.4 B.2.3: 0xC000)
_CANNOT_UNDERSTAND = frozenset({
    InvalidReason.UNREADABLE, InvalidReason.DECODE_ERROR, InvalidReason.REQUEST_UID_TOO_LONG})


def status_for(record: DecodeRecord) -> StoreStatus:
    """The C-STORE status a decision is answered with (PS3.4 Table B.2-1)."""
    if record.decision is not DecisionKind.INVALID:
        return StoreStatus.SUCCESS
    if record.reason_code is InvalidReason.NOT_SPATIAL_REGISTRATION:
        return StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    if record.reason_code is InvalidReason.DATASET_TOO_LARGE:
        return StoreStatus.OUT_OF_RESOURCES
    if record.reason_code in _CANNOT_UNDERSTAND:
        return StoreStatus.CANNOT_UNDERSTAND
    return StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION
