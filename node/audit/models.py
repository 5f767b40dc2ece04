"""The audit schema (SQLAlchemy 2.0 declarative; Alembic migrations in ``node/audit/migrations``).

One row per received object; one decision record per first receipt of a SOP Instance UID (the
docs/contract.md section 5 record as JSON plus columns to query by); acknowledgements are rows
added, never
edits; the alert outbox holds each e-mail until it is sent. Times are UTC.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


#: the rows of first copies: one per SOP Instance UID (a unique partial index)
FIRST_COPY = "duplicate_of_id IS NULL AND placement = 'primary' AND sop_instance_uid IS NOT NULL"


class ReceivedObject(Base):
    """One object received (or found in the archive at start-up)."""

    __tablename__ = "received_objects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    #: relative to the archive of the node that received it (unique per node, migration 0005)
    archive_path: Mapped[str | None] = mapped_column(String(512))
    #: the node that received it and keeps it in its archive (``[node] name``; '' for objects
    #: recorded before 0005, when one node used the database)
    node: Mapped[str] = mapped_column(String(128), default="", server_default="")
    #: SHA-256 (hex) of the data set as received (the bytes after the File Meta Information):
    #: a later copy of the UID with other bytes is a conflict
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    #: a copy of a recorded UID whose data set differs from the first copy's (flagged: it has
    #: its own ``invalid`` decision, reason code ``duplicate_conflict``)
    conflict: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    placement: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer)
    calling_ae_title: Mapped[str | None] = mapped_column(String(16), index=True)
    called_ae_title: Mapped[str | None] = mapped_column(String(16))
    peer_address: Mapped[str | None] = mapped_column(String(128))
    association_id: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(Integer)  # the C-STORE status answered
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    duplicate_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("received_objects.id"), index=True
    )
    # what pairing a companion object with its SRO needs (docs/contract.md section 1, offset
    # sources item 3; migration 0003): set for an SRO without an offset of its own and for a
    # companion object, ``None`` for every other object
    #: Patient ID (0010,0020), as sent (at most 64 characters, else not paired)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    #: Study Instance UID (0020,000D)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    #: an SRO's Content Date/Time, a companion's alignment time: naive, the sender's local time
    registration_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=False))
    #: ``node.records.PairingRole``
    pairing_role: Mapped[str | None] = mapped_column(String(16))
    #: ``node.records.PairingStatus``: awaiting its partner, paired, ambiguous
    pairing_state: Mapped[str | None] = mapped_column(String(16))

    #: the current decision (the newest: a paired SRO's earlier decisions are kept as history)
    decision: Mapped[DecisionRecord | None] = relationship(
        primaryjoin="and_(ReceivedObject.id == DecisionRecord.object_id, "
                    "DecisionRecord.superseded_by_id.is_(None))",
        uselist=False, viewonly=True,
    )

    __table_args__ = (
        Index("ix_received_objects_pairing", "patient_id", "study_instance_uid"),
        UniqueConstraint("node", "archive_path", name="uq_received_objects_node_archive_path"),
        # the database decides which copy of a SOP Instance UID is the first (migration 0005)
        Index("uq_received_objects_first_copy", "sop_instance_uid", unique=True,
              sqlite_where=text(FIRST_COPY), postgresql_where=text(FIRST_COPY)),
    )


class DecisionRecord(Base):
    """A decision of docs/contract.md section 4 for an object (``record_json``: docs/contract.md
    section 5). An object
    has one, except an SRO paired with its companion object after it was recorded: the new
    decision is added and the earlier one keeps ``superseded_by_id`` (history, never deleted)."""

    __tablename__ = "decision_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("received_objects.id"), index=True)
    #: the decision that replaced this one (``None``: the object's current decision)
    superseded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("decision_records.id"), index=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    decision: Mapped[str] = mapped_column(String(32), index=True)
    flagged: Mapped[bool] = mapped_column(Boolean, index=True)
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    convention: Mapped[str | None] = mapped_column(String(32))
    probability: Mapped[float | None] = mapped_column(Float)
    energy: Mapped[float | None] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    record_json: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    #: the offset's console text, else the calling AE title (what `audit list` and the web
    #: console filter by until consoles are their own records)
    console: Mapped[str | None] = mapped_column(String(64), index=True)

    received_object: Mapped[ReceivedObject] = relationship(foreign_keys=[object_id])
    acknowledgements: Mapped[list[Acknowledgement]] = relationship(
        back_populates="decision", order_by="Acknowledgement.id"
    )
    alerts: Mapped[list[AlertOutbox]] = relationship(
        back_populates="decision", order_by="AlertOutbox.id"
    )


class CompanionPairing(Base):
    """One link between a companion object and an SRO (docs/contract.md section 1): added when
    a pairing is made or found ambiguous, never edited. ``sro_decision_id`` is the SRO decision
    it led to (from the companion's offset, or flagged ``pairing`` ambiguous); ``None`` for a
    companion equally near several SROs, none of which was decided again."""

    __tablename__ = "companion_pairings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sro_object_id: Mapped[int] = mapped_column(ForeignKey("received_objects.id"), index=True)
    companion_object_id: Mapped[int] = mapped_column(ForeignKey("received_objects.id"),
                                                     index=True)
    sro_decision_id: Mapped[int | None] = mapped_column(ForeignKey("decision_records.id"),
                                                        index=True)
    state: Mapped[str] = mapped_column(String(16))  # node.records.PairingStatus
    seconds: Mapped[float | None] = mapped_column(Float)  # between the two objects' times
    paired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Acknowledgement(Base):
    """An operator's acknowledgement of a decision; added, never edited."""

    __tablename__ = "acknowledgements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decision_records.id"), index=True)
    acknowledged_by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    acknowledged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: the logged-in user who acknowledged on the web or through the API (None: `audit ack`)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)

    decision: Mapped[DecisionRecord] = relationship(back_populates="acknowledgements")


class AlertOutbox(Base):
    """One alert e-mail, queued in the receipt's transaction and sent by the outbox sender."""

    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decision_records.id"), index=True)
    recipients: Mapped[str] = mapped_column(Text)  # comma-separated at queueing time
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: the node whose sender claimed it (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL),
    #: that sender's token, and until when the claim holds (then any sender may take it)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    decision: Mapped[DecisionRecord] = relationship(back_populates="alerts")


class User(Base):
    """A local user of the web console and the REST API (Argon2 password hash, a role)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # node.audit.users.Role
    password_hash: Mapped[str] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    password_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """An API token of a user: only its SHA-256 is kept (the token is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginEvent(Base):
    """One login attempt on the web console, successful or not (the audit trail)."""

    __tablename__ = "login_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    name: Mapped[str] = mapped_column(String(64), index=True)  # as typed, bounded
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    success: Mapped[bool] = mapped_column(Boolean)
    peer_address: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[str | None] = mapped_column(String(128))


class Console(Base):
    """A console (docs/contract.md section 6): the calling AE title with the SRO's Station Name,
    Manufacturer and Manufacturer's Model Name. ``state_json`` is what its history established
    (:class:`model.consoles.ConsoleState`); how it came to be is in :class:`ConsoleEvent`."""

    __tablename__ = "consoles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    calling_ae_title: Mapped[str | None] = mapped_column(String(64))
    station_name: Mapped[str | None] = mapped_column(String(64))
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    manufacturer_model_name: Mapped[str | None] = mapped_column(String(64))
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    state_json: Mapped[str] = mapped_column(Text)

    events: Mapped[list[ConsoleEvent]] = relationship(order_by="ConsoleEvent.id")


class ConsoleEvent(Base):
    """An added record of a console's history: learned, narrowed, changed, commissioned (by a
    person, with a note) or decommissioned; never edited."""

    __tablename__ = "console_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    console_id: Mapped[int] = mapped_column(ForeignKey("consoles.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # model.consoles.EventKind
    pairs: Mapped[str | None] = mapped_column(String(160))  # the (order, direction) pairs
    how: Mapped[str | None] = mapped_column(String(16))  # model.consoles.Establishment
    by: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: the SRO whose decision led to it (learned, narrowed, changed)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))


class ConsoleCheck(Base):
    """A decision's ``console_convention`` check (docs/contract.md section 6), recorded in the
    decision's transaction."""

    __tablename__ = "console_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    console_id: Mapped[int] = mapped_column(ForeignKey("consoles.id"), index=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decision_records.id"), unique=True)
    result: Mapped[str] = mapped_column(String(16), index=True)  # model.decision.CheckResult
    sentence: Mapped[str] = mapped_column(Text)
    checked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
