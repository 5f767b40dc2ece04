"""The node's domain records and their coded values: what was received, from whom, where it went.

These are the words the receiving path (:mod:`node.ingest`), the audit store (:mod:`node.audit`)
and the alerts (:mod:`node.alerts`) share; they live below all three so that none of them has to
import another for a record type. Coded values are string enums stored as their values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from model.consoles.identity import ConsoleIdentity
from model.decision import DecodeRecord


class Placement(str, Enum):
    """Where an archived object went (the archive, PS3.10 files named by SOP Instance UID)."""

    PRIMARY = "primary"  # first object with this SOP Instance UID
    DUPLICATE = "duplicate"  # the UID was already archived
    UNNAMED = "unnamed"  # no valid SOP Instance UID to name it by
    REFUSED = "refused"  # not archived at all (too large)


class Source(str, Enum):
    """How an object came to be recorded."""

    C_STORE = "c-store"
    RECONCILIATION = "reconciliation"
    STOW_RS = "stow-rs"  # DICOMweb Store over HTTP (PS3.18 section 10.5)


class AlertState(str, Enum):
    """An outbox row's state, and a decision's (``NONE``: it queued no alert).

    Stored as a plain string column: a new state needs no migration.
    """

    NONE = "none"  # a decision's only: not flagged, no e-mail queued (never an outbox row's)
    PENDING = "pending"  # waiting for its next attempt
    SENT = "sent"
    FAILED = "failed"  # cannot be built or sent at all: never retried, its reason in last_error
    NOT_SENT = "not_sent"  # the decision was acknowledged before it was sent (last_error: by whom)


class PairingRole(str, Enum):
    """What an object is to companion pairing (docs/contract.md section 1, offset sources 3)."""

    SRO = "sro"  # an SRO without an offset of its own: a companion may supply it
    COMPANION = "companion"  # a companion object (the Elekta XVI RPS export): an offset


class PairingStatus(str, Enum):
    """An object's pairing state in the audit database (``received_objects.pairing_state``)."""

    AWAITING_OFFSET = "awaiting_offset"  # an SRO recorded ``no_offset``, waiting for its companion
    AWAITING_SRO = "awaiting_sro"  # a companion whose SRO has not arrived (or not in the window)
    PAIRED = "paired"
    AMBIGUOUS = "ambiguous"  # two companions for one SRO, or two SROs equally near: flagged


@dataclass(frozen=True, slots=True)
class PairingFacts:
    """What pairing needs of one received object: stored with it, so that a restart between an
    SRO and its companion loses nothing. ``time`` is naive, the sender's local time."""

    role: PairingRole
    status: PairingStatus
    patient_id: str | None
    study_instance_uid: str | None
    time: dt.datetime | None


@dataclass(frozen=True, slots=True)
class PairingLink:
    """A link between a companion object and an SRO, added with a receipt. ``None`` for an
    object id means the receipt's own object; ``decided``: the link led to the SRO decision it
    is recorded with (the receipt's own, or that of the :class:`SRODecisionUpdate` holding it)."""

    sro_object_id: int | None
    companion_object_id: int | None
    status: PairingStatus
    seconds: float | None
    decided: bool


@dataclass(frozen=True, slots=True)
class SRODecisionUpdate:
    """A new decision for an SRO recorded earlier, because its pairing changed when another
    object arrived (its companion: decoded with the companion's offset; a second companion:
    ``pairing`` ambiguous). The writer checks in the same transaction that
    ``supersedes_decision_id`` is still the SRO's current decision (else
    :class:`PairingConflict`)."""

    sro_object_id: int
    supersedes_decision_id: int
    sop_instance_uid: str | None
    calling_ae_title: str | None
    record: DecodeRecord
    alert: AlertMessage | None
    status: PairingStatus
    links: tuple[PairingLink, ...] = ()


@dataclass(frozen=True, slots=True)
class CompanionUpdate:
    """A companion recorded earlier whose pairing state changes (checked like an update)."""

    companion_object_id: int
    expected: PairingStatus
    status: PairingStatus


class PairingConflict(RuntimeError):
    """The audit database changed between planning a pairing and recording it."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Who sent an object, over which association, when."""

    calling_ae_title: str | None
    called_ae_title: str | None
    peer_address: str | None
    association_id: str | None
    received_at: dt.datetime
    source: Source = Source.C_STORE


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """One alert e-mail as queued in the outbox."""

    subject: str
    body: str
    recipients: tuple[str, ...]


@dataclass(slots=True)
class Receipt:
    """Everything one received object adds to the audit database, in one transaction."""

    sop_instance_uid: str | None
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    archive_path: str | None
    placement: Placement
    size_bytes: int
    calling_ae_title: str | None
    called_ae_title: str | None
    peer_address: str | None
    association_id: str | None
    source: Source
    status: int
    received_at: dt.datetime
    record: DecodeRecord | None  # None for a duplicate whose first copy is recorded
    alert: AlertMessage | None = None
    duplicate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: companion pairing (docs/contract.md section 1): this object's facts, the decisions and
    #: states of objects recorded earlier that change with it, and the links to add
    pairing: PairingFacts | None = None
    sro_updates: tuple[SRODecisionUpdate, ...] = ()
    companion_updates: tuple[CompanionUpdate, ...] = ()
    links: tuple[PairingLink, ...] = ()
    #: the console the object came from and its patient (a hash of Patient ID), for the
    #: ``console_convention`` check (docs/contract.md section 6); ``compose`` builds the alert
    #: again when the check changes the record; ``checked`` is what the check added (the
    #: writer links it to the decision)
    console: ConsoleIdentity | None = None
    patient_key: str | None = None
    compose: Callable[[DecodeRecord], AlertMessage | None] | None = None
    checked: dict[str, Any] | None = None
    #: the node that archived it (``[node] name``: archive paths are unique per node), the
    #: SHA-256 of its data set as received, and the decision it gets should it turn out a copy
    #: of a recorded UID with other bytes (``duplicate_conflict``; the database decides)
    node: str = ""
    content_sha256: str | None = None
    conflict_record: DecodeRecord | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the writer reports back for one receipt once it is committed."""

    object_id: int
    decision_id: int | None
    duplicate_of_id: int | None
    status: int
    alert_queued: bool
