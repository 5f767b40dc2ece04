"""The DICOM node: a Storage SCP for the SOP classes its input adapters read, a Verification SCP.

PS3.4 Annex A (Verification) and Annex B (Storage of the SOP classes of
:class:`model.inputs.AdapterRegistry`: with the shipped adapters, Spatial Registration Storage
1.2.840.10008.5.1.4.1.1.66.1 and Raw Data Storage 1.2.840.10008.5.1.4.1.1.66, the Elekta XVI RPS
companion) only; every other abstract syntax is rejected at association
negotiation (PS3.8 section 9.3.3.2). Association checks: allowed calling AE titles, maximum
concurrent associations, maximum PDU length. Handlers are plain functions bound through
``evt_handlers``; the work of a C-STORE is :class:`node.ingest.receipt.StoreHandler`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import Engine

from model.decoder import Decoder
from model.decoders.registry import load_decoder
from model.dicom.commitment import STORAGE_COMMITMENT_PUSH_MODEL
from model.dicom.statuses import EchoStatus
from model.inputs import DEFAULT_REGISTRY, AdapterRegistry
from node.alerts.sender import OutboxSender
from node.audit.store import open_database
from node.audit.writer import GroupCommitWriter
from node.consoles.checks import ConsoleChecker
from node.dimse.commitment import CommitmentScp
from node.dimse.peers import PeerPolicy
from node.dimse.tls import server_context
from node.dimse.transport import ConnectionLimit, PollBudget, start_server
from node.ingest.archive import Archive
from node.ingest.decode_batcher import DecodeBatcher
from node.ingest.purge import DailyPurge, Purger
from node.ingest.receipt import ReceiptBuilder, StoreHandler
from node.ingest.reconcile import reconcile
from node.metrics import Metrics
from node.records import Recorded
from node.settings import Settings

log = logging.getLogger("node.dimse.service")

#: The usual uncompressed transfer syntaxes (PS3.5 section 10), Explicit VR Little Endian first.
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]


def accept_overlong_uids() -> None:
    """Let pynetdicom decode requests whose UIDs have more than 64 characters.

    pynetdicom's UI check (``_config.VALIDATORS["UI"]``, its documented switch) refuses a UID
    longer than the 64 characters of PS3.5 section 9.1 while it decodes a request; for a C-STORE
    that aborts the association inside pynetdicom (Evt19), with a traceback in the log and no
    audit record. With this check the request reaches :class:`node.ingest.receipt.StoreHandler`,
    which
    archives the object and records it ``invalid`` with the reason (PS3.4 B.2.3: 0xC000). Every
    other rule of pynetdicom's check stays (an empty UID; conformance when
    ``_config.ENFORCE_UID_CONFORMANCE``). Process-wide and idempotent: :meth:`Node.start` applies
    it.
    """
    from pynetdicom import _config

    current = _config.VALIDATORS["UI"]
    if getattr(current, "overlong_uids_accepted", False):
        return

    def validate_ui(value: Any) -> tuple[bool, str]:
        ok, why = current(value)
        if not ok and isinstance(value, str) and len(value) > 64 \
                and not _config.ENFORCE_UID_CONFORMANCE:
            return True, ""
        return ok, why

    validate_ui.overlong_uids_accepted = True  # type: ignore[attr-defined]
    _config.VALIDATORS["UI"] = validate_ui


def build_ae(settings: Settings, adapters: AdapterRegistry = DEFAULT_REGISTRY) -> AE:
    """The Application Entity with only the presentation contexts the node handles: Verification,
    Storage Commitment Push Model (PS3.4 Annex J, SCP) and a Storage context for each SOP class
    an input adapter reads (PS3.8 section 9.3.2.2)."""
    node = settings.node
    ae = AE(ae_title=node.ae_title)
    ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, TRANSFER_SYNTAXES)
    for sop_class in adapters.sop_class_uids:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    ae.maximum_associations = node.max_associations
    ae.maximum_pdu_size = node.max_pdu_bytes
    ae.require_calling_aet = list(node.allowed_calling_ae_titles)
    ae.require_called_aet = False
    ae.dimse_timeout = node.dimse_timeout_s
    ae.network_timeout = node.network_timeout_s
    ae.acse_timeout = node.acse_timeout_s
    return ae


# --- event handlers: plain functions, bound with evt_handlers ----------------------------------


def handle_echo(event: Any) -> int:
    """C-ECHO (PS3.7 section 9.1.5): always success while the node runs."""
    return int(EchoStatus.SUCCESS)


def handle_action(event: Any, scp: CommitmentScp) -> Any:
    """N-ACTION (PS3.4 Annex J, Storage Commitment Push Model): answered, then reported."""
    return scp.handle_action(event)


def handle_store(event: Any, handler: StoreHandler) -> Any:
    """C-STORE (PS3.4 Annex B): archive, decode, record, answer."""
    return handler.handle(event)


def _peer(event: Any) -> dict[str, Any]:
    r = event.assoc.requestor
    return {"calling_ae_title": str(r.ae_title).strip(), "peer_address": f"{r.address}:{r.port}"}


def handle_accepted(event: Any) -> None:
    log.info("association accepted", extra={"fields": _peer(event)})


def handle_rejected(event: Any) -> None:
    log.warning("association rejected", extra={"fields": _peer(event)})


def handle_released(event: Any) -> None:
    log.info("association released", extra={"fields": _peer(event)})


def handle_aborted(event: Any) -> None:
    log.warning("association aborted", extra={"fields": _peer(event)})


def set_torch_threads(threads: int) -> None:
    """Limit torch's intra-op threads (``[model] torch_threads``; 0 leaves torch's default).

    A C-STORE decodes one object (or the few that arrive together): a pool of intra-op threads
    per core only adds hand-offs and GIL contention to such tiny batches. A process-wide
    setting: ``sro-decoder serve`` applies it before the node loads its decoder.
    """
    if threads <= 0:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def quiet_pynetdicom_event_logs() -> None:
    """Bind none of pynetdicom's standard event-logging handlers to new associations.

    They format every PDU and DIMSE message for pynetdicom's INFO and DEBUG logs, which
    :func:`node.logs.configure_logging` drops (pynetdicom logs at WARNING and above only); the
    formatting still costs each C-STORE. ``pynetdicom._config.LOG_HANDLER_LEVEL`` is pynetdicom's
    documented switch; a process-wide setting, so ``sro-decoder serve`` applies it at start-up.
    """
    from pynetdicom import _config

    _config.LOG_HANDLER_LEVEL = "none"


class Node:
    """The running node: database, archive, decoder, writer, outbox sender and server.

    ``adapters`` are the kinds of input it accepts (:mod:`model.inputs`): its presentation
    contexts, and what the C-STORE handler and reconciliation read data sets with."""

    def __init__(self, settings: Settings, decoder: Decoder | None = None,
                 adapters: AdapterRegistry = DEFAULT_REGISTRY) -> None:
        self.settings = settings
        self._decoder = decoder
        self.adapters = adapters
        self.engine: Engine | None = None
        self.writer: GroupCommitWriter | None = None
        self.batcher: DecodeBatcher | None = None
        self.store: StoreHandler | None = None
        self.sender: OutboxSender | None = None
        #: the retention purge thread when ``[retention] enabled`` (node/ingest/purge.py)
        self.purge: DailyPurge | None = None
        self.ae: AE | None = None
        self.server: ThreadedAssociationServer | None = None
        #: the DICOM TLS listener when ``[tls] enabled`` with its own port (else ``None``)
        self.tls_server: ThreadedAssociationServer | None = None
        self.reconciled = 0
        #: the node's counters (``/metrics`` of node/web)
        self.metrics = Metrics()
        self.metrics.gauge("associations_open", "DICOM associations open now",
                           lambda: None if self.ae is None else len(self.ae.active_associations))
        self._stopped = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None, "the node is not started"
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """Where DICOM TLS is served: ``address`` with ``[tls] port`` 0, else its own."""
        if not self.settings.tls.enabled:
            return None
        server = self.tls_server or self.server
        assert server is not None, "the node is not started"
        host, port = server.server_address[:2]
        return str(host), int(port)

    def start(self, before_listening: Callable[[Node], None] | None = None
              ) -> tuple[str, int]:
        """Open the database (migrating it), reconcile the archive, then listen (plain TCP on
        ``[node] port`` and DICOM TLS on ``[tls] port``, or TLS only on ``[node] port`` with
        ``[tls] port`` 0). ``before_listening`` runs once the engine and the C-STORE handler
        exist, before the first association can arrive (``serve`` starts its web console
        there, so that no C-STORE waits on the console's start-up); what it raises stops the
        start."""
        s = self.settings
        tls = server_context(s.tls) if s.tls.enabled else None  # a wrong file: stop first
        s.archive_dir.mkdir(parents=True, exist_ok=True)
        decoder = self._decoder or load_decoder(s.model.name or None)
        self.engine = open_database(s.database_url,
                                    sqlite_synchronous=s.storage.sqlite_synchronous)
        archive = Archive(s.archive_dir)
        archive.prepare()
        checker = ConsoleChecker(s.consoles.policy, s.policy, s.alerts.recipients)
        self.reconciled = reconcile(self.engine, ReceiptBuilder(
            s, decoder, archive, adapters=self.adapters, engine=self.engine), checker=checker)
        self.batcher = DecodeBatcher(decoder)
        builder = ReceiptBuilder(s, decoder, archive, self.batcher, adapters=self.adapters,
                                 engine=self.engine)
        self.sender = OutboxSender(self.engine, s.smtp, s.alerts, s.node_name)
        self.writer = GroupCommitWriter(self.engine, batch_max=s.storage.commit_batch_max,
                                        checker=checker, on_committed=self._committed)
        self.sender.start()
        if s.retention.enabled:
            self.purge = DailyPurge(Purger(self.engine, archive, s.retention))
            self.purge.start()
        if not s.alerts.recipients:
            log.warning("no alert recipients configured: flagged decisions wait in the outbox",
                        extra={"fields": {"setting": "[alerts] recipients"}})
        store = self.store = StoreHandler(builder, self.writer, self.engine, self.metrics)
        handlers = [
            *PollBudget(s.node.poll_interval_ms / 1000.0).handlers(),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [store]),
            (evt.EVT_N_ACTION, handle_action, [CommitmentScp(
                self.engine, frozenset(self.adapters.sop_class_uids), s.node.ae_title,
                s.commitment.requesters, timeout_s=s.node.dimse_timeout_s)]),
            (evt.EVT_ACCEPTED, handle_accepted),
            (evt.EVT_REJECTED, handle_rejected),
            (evt.EVT_RELEASED, handle_released),
            (evt.EVT_ABORTED, handle_aborted),
        ]
        if before_listening is not None:
            before_listening(self)
        accept_overlong_uids()
        self.ae = build_ae(s, self.adapters)
        peers = PeerPolicy.from_settings(s.peers)
        limit = ConnectionLimit(s.node.max_connections, s.node.max_connections_per_address)
        tls_only = tls is not None and s.tls.port == 0
        self.server = start_server(self.ae, (s.node.host, s.node.port), handlers,
                                   first_pdu_timeout_s=s.node.first_pdu_timeout_s,
                                   ssl_context=tls if tls_only else None, peers=peers,
                                   limit=limit)
        if tls is not None and not tls_only:
            self.tls_server = start_server(self.ae, (s.node.host, s.tls.port), handlers,
                                           first_pdu_timeout_s=s.node.first_pdu_timeout_s,
                                           ssl_context=tls, peers=peers, limit=limit)
        host, port = self.address
        log.info("listening", extra={"fields": {
            "ae_title": s.node.ae_title, "host": host, "port": port,
            "model": decoder.info.name, "model_version": decoder.info.version,
            "data_dir": str(s.data_dir), "database": self.engine.url.render_as_string(),
            "reconciled": self.reconciled, "sources": list(s.sources),
            "tls_port": None if self.tls_address is None else self.tls_address[1],
            "peer_allow_list": sorted(s.peers)}})
        return host, port

    def _committed(self, results: Any) -> None:
        if self.sender is not None and any(
            isinstance(r, Recorded) and r.alert_queued for r in results
        ):
            self.sender.wake()

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let in-flight associations finish (up to ``grace_s``), then close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.node.shutdown_grace_s if grace_s is None else grace_s
        if self.purge is not None:  # between two batches: the one running ends first
            self.purge.stop()
        for server in (self.server, self.tls_server):
            if server is not None:
                server.shutdown()
        if self.ae is not None:
            deadline = time.monotonic() + grace
            while self.ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            left = self.ae.active_associations
            if left:
                log.warning("aborting associations still open after the grace period",
                            extra={"fields": {"associations": len(left)}})
            self.ae.shutdown()
        if self.batcher is not None:
            self.batcher.stop()
        if self.writer is not None:
            self.writer.stop()
        if self.sender is not None:
            self.sender.stop()
        if self.engine is not None:
            self.engine.dispose()
        log.info("stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)
