"""Receiving one object: archive durably, decode, record in one transaction, then answer.

The order is the node's promise (issue 4): a success status means the object is on disk and its
decision recorded. Invalid objects are archived, recorded ``invalid`` with the reason, flagged and
answered with a failure status (PS3.4 Table B.2-1). A second copy of a SOP Instance UID is kept
and recorded as a duplicate, never decoded or alerted again. When the archive or the database
fails the answer is 0xA700 (Refused: Out of Resources) and what is on disk is recorded at the
next start-up (:mod:`node.ingest.reconcile`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_preamble
from pynetdicom.dsutils import split_dataset
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from model.consoles import ConsoleIdentity, patient_key
from model.decision import DecisionKind, DecodeRecord, invalid_record
from model.decoder import Decoder
from model.dicom.file_meta import FileMeta
from model.dicom.statuses import StoreStatus, status_for
from model.errors import InvalidReason
from model.inputs import DEFAULT_REGISTRY, AdapterRegistry
from model.pipeline import DecodeOptions, decode_dataset, read_file, structure_problem
from node.alerts.compose import ReceiptContext, compose_alert
from node.audit.models import utcnow
from node.audit.store import find_primary
from node.audit.writer import GroupCommitWriter
from node.combining import Closed
from node.ingest.archive import Archive, Archived, valid_uid
from node.ingest.decode_batcher import DecodeBatcher
from node.ingest.pairing import Pairer, PairingPlan
from node.metrics import Metrics
from node.records import (
    AlertMessage,
    Origin,
    PairingConflict,
    PairingFacts,
    PairingRole,
    PairingStatus,
    Placement,
    Receipt,
    Recorded,
    Source,
)
from node.settings import Settings
from node.text import bounded, visible

log = logging.getLogger("node.ingest.receipt")

#: the prefix of a request's Affected SOP Instance UID that is not a UID, as recorded
INVALID_UID_MARK = "INVALID:"

def recorded_uid(text: str | None) -> str | None:
    """A request's Affected SOP Instance UID as recorded: as sent when it is a valid UID
    (PS3.5 section 9.1); otherwise marked with :data:`INVALID_UID_MARK`, its line breaks and
    control characters escaped (:func:`node.text.visible`) and cut to 64 characters, so it can
    never pass for a UID nor name a file."""
    if text is None or valid_uid(text):
        return text
    return bounded(INVALID_UID_MARK + visible(text), 64)


def data_set_sha256(path: Path) -> str | None:
    """SHA-256 (hex) of an archived file's data set: the bytes after its File Meta Information
    (PS3.10 section 7.1), as received; ``None`` when the file is not a PS3.10 file."""
    try:
        data = path.read_bytes()
        _, start = split_part10(data)
    except Exception:
        return None
    return hashlib.sha256(data[start:]).hexdigest()


def status_dataset(status: int, comment: str | None = None) -> Dataset:
    """A C-STORE response status, with Error Comment (0000,0902) on failures (LO, 64 chars)."""
    ds = Dataset()
    ds.Status = int(status)
    if comment and status != StoreStatus.SUCCESS:
        text = "".join(ch if 32 <= ord(ch) < 127 and ch != "\\" else " " for ch in comment)
        ds.ErrorComment = text[:64]
    return ds


def _text(ds: Dataset | None, keyword: str) -> str | None:
    """A data set's value as text, ``None`` when absent or not convertible (sender text: made
    safe where it is shown, :mod:`node.text`)."""
    if ds is None:
        return None
    try:
        value = ds.get(keyword)
        return None if value is None else (str(value).strip() or None)
    except Exception:
        return None


def ack_options(settings: Settings) -> tuple[str, ...]:
    """The options that make ``sro-decoder audit ack`` reach this node's database: its
    ``--config`` file (when one was given) and its data folder (or database URL)."""
    files = [s for s in settings.sources if s.endswith(".toml") and "(shipped)" not in s
             and Path(s).is_file()]
    out: tuple[str, ...] = ()
    if files:
        out += ("--config", str(Path(files[-1]).resolve()))
    return (*out, "--data-dir", str(settings.data_dir))


def console_identity(calling_ae_title: str | None, ds: Dataset | None) -> ConsoleIdentity:
    """The console of docs/contract.md section 6: the calling AE title with the SRO's Station
    Name (0008,1010), Manufacturer (0008,0070) and Manufacturer's Model Name (0008,1090)."""
    return ConsoleIdentity.of(calling_ae_title, _text(ds, "StationName"),
                              _text(ds, "Manufacturer"), _text(ds, "ManufacturerModelName"))


class ReceiptBuilder:
    """Decodes objects and builds their receipts (the writer records them); shared by the
    C-STORE handler and reconciliation, which read every data set through the same input
    adapters (:mod:`model.inputs`)."""

    def __init__(self, settings: Settings, decoder: Decoder, archive: Archive,
                 batcher: DecodeBatcher | None = None, *,
                 adapters: AdapterRegistry = DEFAULT_REGISTRY,
                 engine: Engine | None = None) -> None:
        self.settings = settings
        self.decoder = decoder
        self.archive = archive
        self.batcher = batcher
        self.adapters = adapters
        #: companion pairing against the audit database (``None``: no database, no pairing)
        self.pairer = None if engine is None else Pairer(self, engine)
        #: ``--config FILE --data-dir DIR`` of this node, for the e-mail's ack command
        self.ack_options = ack_options(settings)
        #: this node in the audit database (``[node] name``), recorded with every object
        self.node_name = settings.node_name

    def for_archived_file(self, path: Path, *, pair: bool = True) -> Receipt | None:
        """The receipt of an archived file found without a record (``None`` if it is gone).

        The data set is read back from the archive with the checks ``decode`` and the C-STORE
        handler apply; the sender's AE titles come from its File Meta Information (PS3.10
        section 7.1, written by the archive). An object that pairs (:mod:`node.ingest.pairing`)
        is planned against the database when ``pair`` (the caller holds the pairer's lock and
        commits it before the next one); without ``pair`` its receipt only says that it pairs
        (``pairing`` set, nothing planned), for the caller to ask again with ``pair``.
        """
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        try:
            meta, _ = split_dataset(path)
        except Exception:
            meta = None  # read_file says why
        ds, error = read_file(path)

        def meta_text(keyword: str) -> str | None:
            value = None if meta is None else meta.get(keyword)
            return str(value).strip() or None if value is not None else None

        uid = meta_text("MediaStorageSOPInstanceUID")
        origin = Origin(
            calling_ae_title=meta_text("SendingApplicationEntityTitle"),
            called_ae_title=meta_text("ReceivingApplicationEntityTitle"),
            peer_address=None,
            association_id=None,
            received_at=dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC),
            source=Source.RECONCILIATION,
        )
        placement = self.archive.placement_of(path)
        archived = Archived(path, self.archive.relative(path), placement, stat.st_size)
        sha = data_set_sha256(path)
        duplicate = placement is Placement.DUPLICATE
        record = None if duplicate else self.decode(ds, error, origin, uid)
        plan = None
        if record is not None and self.pairer is not None:
            part = self.pairer.participant(ds, record, origin)
            if part is not None and ds is not None:
                if not pair:
                    plan = PairingPlan(record, PairingFacts(
                        part.role, PairingStatus.AWAITING_OFFSET, None, None, None))
                else:
                    plan = self.pairer.plan(ds, record, part, origin)
                    record = plan.record
        return self.receipt(
            origin=origin, uid=uid, sop_class_uid=meta_text("MediaStorageSOPClassUID"),
            transfer_syntax_uid=meta_text("TransferSyntaxUID"), archived=archived,
            size=stat.st_size, record=record, ds=ds, duplicate=duplicate, plan=plan,
            content_sha256=sha,
        )

    def decode(self, ds: Dataset | None, error: str | None, origin: Origin,
               uid: str | None) -> DecodeRecord:
        if ds is None:
            return invalid_record(self.decoder.info, InvalidReason.UNREADABLE,
                                  f"the data set cannot be understood: {error}",
                                  sop_instance_uid=uid)
        options = DecodeOptions(profile=self.settings.profile_for(origin.calling_ae_title),
                                policy=self.settings.policy, adapters=self.adapters)
        try:
            if self.batcher is not None:
                return self.batcher.decode(ds, options)
            return decode_dataset(ds, self.decoder, options)
        except Closed:
            raise  # the node is stopping: not a decision about this object
        except Exception as exc:  # a decoder failure still ends in one recorded decision
            log.exception("decoder failed", extra={"fields": {"sop_instance_uid": uid}})
            return DecodeRecord(decision=DecisionKind.INVALID,
                                reason_code=InvalidReason.DECODE_ERROR,
                                reason=f"the decoder failed: {type(exc).__name__}: {exc}",
                                model=self.decoder.info, sop_instance_uid=uid)

    def decode_with(self, ds: Dataset, options: DecodeOptions,
                    uid: str | None) -> DecodeRecord:
        """Decode ``ds`` with ``options`` (an SRO with its companion's offset, section 1)."""
        try:
            if self.batcher is not None:
                return self.batcher.decode(ds, options)
            return decode_dataset(ds, self.decoder, options)
        except Closed:
            raise
        except Exception as exc:
            log.exception("decoder failed", extra={"fields": {"sop_instance_uid": uid}})
            return DecodeRecord(decision=DecisionKind.INVALID,
                                reason_code=InvalidReason.DECODE_ERROR,
                                reason=f"the decoder failed: {type(exc).__name__}: {exc}",
                                model=self.decoder.info, sop_instance_uid=uid)

    def alert_for(self, record: DecodeRecord, origin: Origin, uid: str | None,
                  archived: Archived | None, ds: Dataset | None) -> AlertMessage | None:
        if not record.flagged:
            return None
        alerts = self.settings.alerts
        name = pid = None
        if alerts.include_patient_identity and ds is not None:
            try:
                name = str(ds.get("PatientName", "")) or None
                pid = str(ds.get("PatientID", "")) or None
            except Exception:  # a value pydicom cannot convert: the alert goes without them
                name = pid = None
        ctx = ReceiptContext(
            sop_instance_uid=uid, calling_ae_title=origin.calling_ae_title,
            called_ae_title=origin.called_ae_title, peer_address=origin.peer_address,
            received_at=origin.received_at,
            archive_path=None if archived is None else str(archived.path),
            patient_name=name, patient_id=pid,
            station_name=_text(ds, "StationName"),
            study_date_time=" ".join(v for v in (_text(ds, "StudyDate"), _text(ds, "StudyTime"))
                                     if v) or None,
            ack_options=self.ack_options,
        )
        return compose_alert(record, ctx, alerts.recipients,
                             include_patient_identity=alerts.include_patient_identity)

    def receipt(self, *, origin: Origin, uid: str | None, sop_class_uid: str | None,
                transfer_syntax_uid: str | None, archived: Archived | None, size: int,
                record: DecodeRecord | None, ds: Dataset | None,
                duplicate: bool = False, plan: PairingPlan | None = None,
                content_sha256: str | None = None) -> Receipt:
        if record is not None and archived is not None:
            record = replace(record, path=str(archived.path))
        conflict = None
        if content_sha256 is not None and archived is not None and uid is not None \
                and archived.placement in (Placement.PRIMARY, Placement.DUPLICATE):
            conflict = invalid_record(
                self.decoder.info, InvalidReason.DUPLICATE_CONFLICT,
                "a copy of a SOP Instance UID recorded before whose data set differs from the "
                "first copy's: kept in the archive, not decoded", path=str(archived.path),
                sop_instance_uid=uid)
        status = StoreStatus.SUCCESS if record is None else status_for(record)
        return Receipt(
            sop_instance_uid=uid,
            sop_class_uid=sop_class_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            archive_path=None if archived is None else archived.relative,
            placement=Placement.REFUSED if archived is None else archived.placement,
            size_bytes=size,
            calling_ae_title=origin.calling_ae_title,
            called_ae_title=origin.called_ae_title,
            peer_address=origin.peer_address,
            association_id=origin.association_id,
            source=origin.source,
            status=int(status),
            received_at=origin.received_at,
            record=record,
            alert=None if record is None else self.alert_for(record, origin, uid, archived, ds),
            duplicate=duplicate,
            pairing=None if plan is None else plan.facts,
            sro_updates=() if plan is None else plan.sro_updates,
            companion_updates=() if plan is None else plan.companion_updates,
            links=() if plan is None else plan.links,
            console=console_identity(origin.calling_ae_title, ds),
            patient_key=patient_key(_text(ds, "PatientID")),
            compose=lambda rec: self.alert_for(rec, origin, uid, archived, ds),
            node=self.node_name,
            content_sha256=content_sha256,
            conflict_record=conflict,
        )


@dataclass(frozen=True, slots=True)
class Stored:
    """What :meth:`StoreHandler.receive_part10` answered for one instance (PS3.4 Table B.2-1
    statuses; a STOW-RS response item, PS3.18 section 10.5.3)."""

    status: int
    comment: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None


def _not_meta(tag: Any, vr: str | None, length: int) -> bool:
    return bool(tag >> 16 != 0x0002)


def split_part10(data: bytes) -> tuple[Dataset, int]:
    """The File Meta Information of a PS3.10 file and where its data set starts; raises
    (``InvalidDicomError`` and others) when ``data`` is no PS3.10 file."""
    fp = BytesIO(data)
    read_preamble(fp, False)
    meta = read_dataset(fp, False, True, stop_when=_not_meta)
    return meta, fp.tell()


class StoreHandler:
    """The C-STORE service (PS3.4 Annex B): :meth:`handle` is bound to ``evt.EVT_C_STORE``;
    :meth:`receive_part10` is the same path for a PS3.10 file received otherwise (STOW-RS)."""

    def __init__(self, builder: ReceiptBuilder, writer: GroupCommitWriter, engine: Engine,
                 metrics: Metrics | None = None) -> None:
        self.builder = builder
        self.writer = writer
        self.engine = engine
        self.settings = builder.settings
        self.metrics = metrics or Metrics()
        self._associations: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        #: a database several nodes may share (not SQLite): it, not the archive, says whether
        #: a UID was received before
        self._shared = engine.dialect.name != "sqlite"

    def association_id(self, assoc: Any) -> str:
        with self._lock:
            ident = self._associations.get(assoc)
            if ident is None:
                ident = uuid.uuid4().hex
                self._associations[assoc] = ident
            return ident

    def origin(self, event: Any) -> Origin:
        assoc = event.assoc
        return Origin(
            calling_ae_title=str(assoc.requestor.ae_title).strip() or None,
            called_ae_title=str(assoc.acceptor.ae_title).strip() or None,
            peer_address=f"{assoc.requestor.address}:{assoc.requestor.port}",
            association_id=self.association_id(assoc),
            received_at=utcnow(),
        )

    def handle(self, event: Any) -> Dataset:
        """Archive, decode, record, then answer (module docstring); never raises."""
        started = time.perf_counter()
        try:
            return self._handle(event)
        except Exception as exc:  # e.g. the node is stopping: what is archived is reconciled
            log.exception("C-STORE failed", extra={"fields": {"error": repr(exc)}})
            return status_dataset(StoreStatus.OUT_OF_RESOURCES, "the node could not record it")
        finally:
            self.metrics.observe_store(time.perf_counter() - started)

    def _handle(self, event: Any) -> Dataset:
        request = event.request
        raw_uid = request.AffectedSOPInstanceUID
        raw_class = request.AffectedSOPClassUID
        return self._receive(
            self.origin(event), None if raw_uid is None else str(raw_uid),
            None if raw_class is None else str(raw_class), request.DataSet.getvalue(),
            str(event.context.transfer_syntax), lambda: event.dataset)

    def receive_part10(self, data: bytes, origin: Origin) -> Stored:
        """A PS3.10 file received otherwise than by C-STORE (STOW-RS, PS3.18 section 10.5):
        the same path (archive, decode, record, then answer) with the File Meta Information's
        SOP Class, SOP Instance and Transfer Syntax UIDs for the request's. Bytes that are no
        PS3.10 file are archived as received, unnamed, and recorded ``invalid``. Never raises."""
        started = time.perf_counter()
        sop_class = raw_uid = None
        try:
            try:
                meta, start = split_part10(data)
            except Exception as exc:
                answer = self._receive(origin, None, None, data, None, None,
                                       unreadable=f"not a DICOM PS3.10 file: {exc}")
            else:
                def text(keyword: str) -> str | None:
                    value = meta.get(keyword)
                    return None if value is None else str(value).strip("\0 ") or None

                sop_class, raw_uid = text("MediaStorageSOPClassUID"), text(
                    "MediaStorageSOPInstanceUID")
                ts = text("TransferSyntaxUID")
                body = data[start:]
                if ts is None:
                    answer = self._receive(
                        origin, raw_uid, sop_class, body, None, None, file_bytes=data,
                        unreadable="the File Meta Information has no Transfer Syntax UID "
                                   "(PS3.10 section 7.1)")
                else:
                    answer = self._receive(origin, raw_uid, sop_class, body, ts,
                                           lambda: pydicom.dcmread(BytesIO(data)),
                                           file_bytes=data)
        except Exception as exc:
            log.exception("instance failed", extra={"fields": {"error": repr(exc)}})
            answer = status_dataset(StoreStatus.OUT_OF_RESOURCES, "the node could not record it")
        finally:
            self.metrics.observe_store(time.perf_counter() - started)
        return Stored(int(answer.Status), answer.get("ErrorComment"), sop_class,
                      recorded_uid(raw_uid))

    def _receive(self, origin: Origin, raw_uid: str | None, sop_class: str | None, data: bytes,
                 transfer_syntax: str | None, read: Callable[[], Dataset] | None, *,
                 file_bytes: bytes | None = None, unreadable: str | None = None) -> Dataset:
        """One object: ``data`` is its data set as encoded in ``transfer_syntax``, ``read``
        gives it parsed; ``file_bytes`` is what to archive when it came as a whole file (else
        the File Meta Information is built for it); ``unreadable`` says why it has no data set
        to decode."""
        uid = recorded_uid(raw_uid)  # never names a file
        fields = {"sop_instance_uid": uid, "calling_ae_title": origin.calling_ae_title,
                  "association_id": origin.association_id, "bytes": len(data)}
        limit = self.settings.node.max_dataset_bytes

        if len(data) > limit:
            refused = DecodeRecord(
                decision=DecisionKind.INVALID, reason_code=InvalidReason.DATASET_TOO_LARGE,
                model=self.builder.decoder.info,
                reason=f"the data set has {len(data)} bytes, more than the {limit} accepted "
                       "([node] max_dataset_bytes); refused and not archived",
                sop_instance_uid=uid)
            receipt = self.builder.receipt(origin=origin, uid=uid, sop_class_uid=sop_class,
                                            transfer_syntax_uid=transfer_syntax, archived=None,
                                            size=len(data), record=refused, ds=None)
            self._commit(receipt, fields)
            log.warning("data set too large; refused", extra={"fields": fields})
            return status_dataset(StoreStatus.OUT_OF_RESOURCES, "data set too large")

        if file_bytes is None:
            file_bytes = FileMeta(
                sop_class, uid, transfer_syntax or "",
                sending_application_entity_title=origin.calling_ae_title,
                receiving_application_entity_title=origin.called_ae_title).part10(data)
        name = uid if valid_uid(uid) and unreadable is None else None
        archive = self.builder.archive
        # Archive first (file fsync, link, folder fsync), then decode, in this thread: a helper
        # thread writing while this one decodes would only wait for the interpreter lock.
        try:
            archived = archive.store(name, file_bytes)
        except OSError as exc:
            self.metrics.count("archive_errors_total")
            log.error("archive write failed", extra={"fields": {**fields, "error": repr(exc)}})
            return status_dataset(StoreStatus.OUT_OF_RESOURCES, "archive write failed")
        fields["archive_path"] = archived.relative
        sha = hashlib.sha256(data).hexdigest() if name is not None else None

        if archived.placement is Placement.DUPLICATE and uid is not None:
            return self._duplicate(origin, uid, sop_class, transfer_syntax, archived, fields,
                                   sha)
        if archived.placement is Placement.PRIMARY and uid is not None and self._shared:
            # first here, maybe not first anywhere: a database several nodes share decides
            try:
                with Session(self.engine) as session:
                    elsewhere = find_primary(session, uid) is not None
            except Exception as exc:
                self.metrics.count("database_errors_total")
                log.error("audit lookup failed", extra={"fields": {**fields, "error": repr(exc)}})
                return status_dataset(StoreStatus.OUT_OF_RESOURCES, "audit database unavailable")
            if elsewhere:
                return self._duplicate(origin, uid, sop_class, transfer_syntax, archived,
                                       fields, sha)
        ds: Dataset | None
        error: str | None
        if unreadable is not None or read is None or transfer_syntax is None:
            ds, error = None, unreadable or "no data set"
        else:
            ds, error = self._dataset(read, data, transfer_syntax)
        if raw_uid is not None and len(str(raw_uid)) > 64:
            record = DecodeRecord(
                decision=DecisionKind.INVALID, reason_code=InvalidReason.REQUEST_UID_TOO_LONG,
                model=self.builder.decoder.info, sop_instance_uid=uid,
                reason=f"Affected SOP Instance UID of {len(str(raw_uid))} characters (at most "
                       "64, PS3.5 section 9.1) in the C-STORE request; archived unnamed, "
                       "not decoded")
        else:
            record = self.builder.decode(ds, error, origin, uid)
        if record.sop_instance_uid is None and uid is not None:
            # the data set could not say (unparseable, or no UID): the request's is recorded
            record = replace(record, sop_instance_uid=uid)
        elif record.sop_instance_uid is not None and uid is not None \
                and record.sop_instance_uid != uid:
            # PS3.4 B.2.1.1: they must be equal; the archive and the record use the request's
            record = replace(record, sop_instance_uid=uid, warnings=(
                *record.warnings, "the data set's SOP Instance UID "
                f"{recorded_uid(record.sop_instance_uid)} differs from the C-STORE request's "
                f"Affected SOP Instance UID {uid}"))
        if uid is not None and uid.startswith(INVALID_UID_MARK):
            record = replace(record, warnings=(
                *record.warnings, "the C-STORE request's Affected SOP Instance UID is not a "
                f"valid UID (PS3.5 section 9.1); recorded marked {INVALID_UID_MARK} and escaped"))
        pairer = self.builder.pairer
        part = None if pairer is None else pairer.participant(ds, record, origin)
        if pairer is None or part is None or ds is None:
            receipt = self.builder.receipt(origin=origin, uid=uid, sop_class_uid=sop_class,
                                            transfer_syntax_uid=transfer_syntax,
                                            archived=archived, size=len(data), record=record,
                                            ds=ds, content_sha256=sha)
            recorded = self._commit(receipt, fields)
        else:
            record, recorded = self._commit_paired(
                pairer, part, ds, record, origin, uid, sop_class, transfer_syntax, archived,
                len(data), fields, sha)
        if recorded is None:
            return status_dataset(StoreStatus.OUT_OF_RESOURCES,
                                  "audit database unavailable; archived, recorded at restart")
        status = StoreStatus(recorded.status)
        self.metrics.count("objects_received_total", record.decision.value,
                           origin.calling_ae_title)
        fields.update(decision=record.decision.value, status=f"0x{int(status):04X}")
        if record.flagged:
            fields.update(reason_code=record.reason_code and record.reason_code.value,
                          reason=record.reason)
            log.warning("received; flagged", extra={"fields": fields})
        else:
            log.info("received", extra={"fields": fields})
        return status_dataset(status, record.reason)

    @staticmethod
    def _dataset(read: Callable[[], Dataset], data: bytes,
                 transfer_syntax: str) -> tuple[Dataset | None, str | None]:
        problem = structure_problem(data, transfer_syntax)
        if problem is not None:
            return None, problem
        try:
            return read(), None
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _commit_paired(self, pairer: Pairer, part: Any, ds: Dataset, record: DecodeRecord,
                       origin: Origin, uid: str | None, sop_class: str | None,
                       transfer_syntax: str | None, archived: Archived, size: int,
                       fields: dict[str, Any], sha: str | None = None
                       ) -> tuple[DecodeRecord, Recorded | None]:
        """Plan the pairing of an object that pairs and commit it, holding the pairer's lock
        (:mod:`node.ingest.pairing`); planned again if the database changed in between. A
        plan that fails is logged and the object recorded with its facts only (awaiting its
        partner): never lost, and the next object of its study plans the whole study again."""
        with pairer.lock:
            for attempt in range(3):
                try:
                    plan = pairer.plan(ds, record, part, origin)
                except Closed:
                    raise
                except Exception as exc:
                    log.exception("pairing plan failed; recorded awaiting its partner",
                                  extra={"fields": {**fields, "error": repr(exc)}})
                    status = PairingStatus.AWAITING_OFFSET if part.role is PairingRole.SRO \
                        else PairingStatus.AWAITING_SRO
                    key = part.key
                    plan = PairingPlan(record, PairingFacts(
                        part.role, status, key.patient_id, key.study_instance_uid, key.time))
                receipt = self.builder.receipt(origin=origin, uid=uid, sop_class_uid=sop_class,
                                                transfer_syntax_uid=transfer_syntax,
                                                archived=archived, size=size,
                                                record=plan.record, ds=ds, plan=plan,
                                                content_sha256=sha)
                try:
                    return plan.record, self.writer.record(
                        receipt, timeout=self.settings.storage.commit_timeout_s)
                except PairingConflict as exc:
                    log.warning("pairing changed while recording; planned again",
                                extra={"fields": {**fields, "attempt": attempt,
                                                  "error": str(exc)}})
                except Exception as exc:
                    self.metrics.count("database_errors_total")
                    log.error("audit record failed; the object stays in the archive",
                              extra={"fields": {**fields, "error": repr(exc)}})
                    return plan.record, None
            return record, None

    def _commit(self, receipt: Receipt, fields: dict[str, Any]) -> Recorded | None:
        """Record through the group-commit writer; return once durable (``None``: failed)."""
        try:
            return self.writer.record(receipt, timeout=self.settings.storage.commit_timeout_s)
        except Exception as exc:
            self.metrics.count("database_errors_total")
            log.error("audit record failed; the object stays in the archive",
                      extra={"fields": {**fields, "error": repr(exc)}})
            return None

    def _duplicate(self, origin: Origin, uid: str, sop_class: str | None,
                   transfer_syntax: str | None,
                   archived: Archived, fields: dict[str, Any], sha: str | None = None
                   ) -> Dataset:
        """A second copy of ``uid`` (here or, the database says, on another node): recorded as
        a duplicate, answered as the first was; a conflict when its data set's SHA-256
        ``sha`` differs from the first copy's (flagged, alerted; docs/conformance.md)."""
        try:
            with Session(self.engine) as session:
                first_recorded = find_primary(session, uid) is not None
        except Exception as exc:
            self.metrics.count("database_errors_total")
            log.error("audit lookup failed", extra={"fields": {**fields, "error": repr(exc)}})
            return status_dataset(StoreStatus.OUT_OF_RESOURCES, "audit database unavailable")
        if not first_recorded:
            # the first copy is archived but its recording failed: record it now (it is read
            # back from the archive, so the decision is about what was first received)
            primary = self.builder.archive.primary_path(uid)
            pairer = self.builder.pairer
            with pairer.lock if pairer is not None else contextlib.nullcontext():
                first = self.builder.for_archived_file(primary)
                if first is not None and self._commit(first, fields) is None:
                    return status_dataset(StoreStatus.OUT_OF_RESOURCES,
                                          "audit database unavailable")
        receipt = self.builder.receipt(origin=origin, uid=uid, sop_class_uid=sop_class,
                                        transfer_syntax_uid=transfer_syntax, archived=archived,
                                        size=archived.size_bytes, record=None, ds=None,
                                        duplicate=True, content_sha256=sha)
        recorded = self._commit(receipt, fields)
        if recorded is None:
            return status_dataset(StoreStatus.OUT_OF_RESOURCES, "audit database unavailable")
        if recorded.decision_id is not None:  # a conflict: its own flagged decision
            self.metrics.count("duplicate_conflicts_total", origin.calling_ae_title)
            fields.update(duplicate_of=recorded.duplicate_of_id, status=f"0x{recorded.status:04X}")
            log.warning("received a copy whose data set differs from the first copy's; "
                        "flagged", extra={"fields": fields})
            return status_dataset(recorded.status, "differs from the first copy of this UID")
        self.metrics.count("duplicates_received_total", origin.calling_ae_title)
        fields.update(duplicate_of=recorded.duplicate_of_id, status=f"0x{recorded.status:04X}")
        log.info("received a duplicate; not decoded again", extra={"fields": fields})
        return status_dataset(recorded.status, "duplicate of an object that failed")
