"""The node's domain records and their coded values: what was received, from whom, where it went.

These are the words the receiving path (:mod:`node.ingest`), the audit store (:mod:`node.audit`)
and the alerts (:mod:`node.alerts`) share; they live below all three so that none of them has to
import another for a record type. Coded values are string enums stored as their values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the writer reports back for one receipt once it is committed."""

    object_id: int
    decision_id: int | None
    duplicate_of_id: int | None
    status: int
    alert_queued: bool
