"""Storage Commitment Push Model results (PS3.4 Annex J, J.3.3): which referenced instances the
node commits to, and the failure reason of each other one.

An instance is committed when the node holds it archived under its own SOP Instance UID and
recorded, with the SOP Class the request names, and its C-STORE was answered with success or a
warning (the sender was told it is kept). Pure: what the node holds is given
(:class:`Kept`), the database lookup is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

#: Storage Commitment Push Model SOP Class and its well-known SOP Instance (PS3.4 J.3.5)
STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
#: Action Type ID of the N-ACTION "Request Storage Commitment" (PS3.4 Table J.3-1)
REQUEST_STORAGE_COMMITMENT = 1


class CommitmentEvent(IntEnum):
    """Event Type ID of the N-EVENT-REPORT (PS3.4 Table J.3-2)."""

    SUCCESSFUL = 1  # every referenced instance committed
    FAILURES_EXIST = 2


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) of a Failed SOP Sequence item (PS3.4 J.3.3.1.1)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122


@dataclass(frozen=True, slots=True)
class Reference:
    """An item of the Referenced SOP Sequence (0008,1199)."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class Kept:
    """What the node holds for a SOP Instance UID: its SOP Class and the C-STORE status."""

    sop_class_uid: str | None
    status: int


@dataclass(frozen=True, slots=True)
class CommitmentResult:
    committed: tuple[Reference, ...]
    failed: tuple[tuple[Reference, FailureReason], ...]

    @property
    def event(self) -> CommitmentEvent:
        return CommitmentEvent.FAILURES_EXIST if self.failed else CommitmentEvent.SUCCESSFUL


def _answered_as_kept(status: int) -> bool:
    return status == 0x0000 or 0xB000 <= status <= 0xBFFF  # success or warning (PS3.4 B.2.3)


def commitment(references: Iterable[Reference], kept: Mapping[str, Kept],
               supported_sop_classes: frozenset[str]) -> CommitmentResult:
    """Commit or fail every reference, in order (module docstring)."""
    committed: list[Reference] = []
    failed: list[tuple[Reference, FailureReason]] = []
    for ref in references:
        held = kept.get(ref.sop_instance_uid)
        if ref.sop_class_uid not in supported_sop_classes:
            failed.append((ref, FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED))
        elif held is None:
            failed.append((ref, FailureReason.NO_SUCH_OBJECT_INSTANCE))
        elif held.sop_class_uid != ref.sop_class_uid:
            failed.append((ref, FailureReason.CLASS_INSTANCE_CONFLICT))
        elif not _answered_as_kept(held.status):
            failed.append((ref, FailureReason.PROCESSING_FAILURE))
        else:
            committed.append(ref)
    return CommitmentResult(tuple(committed), tuple(failed))
