"""Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION in, N-EVENT-REPORT out.

The N-ACTION "Request Storage Commitment" (Action Type ID 1, PS3.4 J.3.2) is answered at once;
the result (:func:`model.dicom.commitment.commitment`, from what the audit database holds,
read through :func:`node.audit.store.kept_instances`) goes back in one N-EVENT-REPORT (PS3.4
J.3.3): Event Type ID 1 when every referenced instance is committed, 2 with a Failed SOP
Sequence otherwise. The node's C-STORE answers only after the archive fsync and the audit
commit, so what the database holds is kept. The report is sent on the requesting association
when it is still open, else on a new association to the address ``[commitment] requesters``
gives for the calling AE title, proposing the SCP role for the SOP Class (PS3.4 J.3.3, role
selection PS3.7 D.3.3.4); without one it is logged and dropped (the requester asks again).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from model.dicom.commitment import (
    REQUEST_STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentResult,
    Kept,
    Reference,
    commitment,
)
from node.audit.store import kept_instances

log = logging.getLogger("node.dimse.commitment")

#: N-ACTION statuses (PS3.7 Annex C)
SUCCESS, NO_SUCH_ACTION, MISSING_ATTRIBUTE, PROCESSING_FAILURE = 0x0000, 0x0123, 0x0120, 0x0110


def _references(info: Dataset | None) -> tuple[str, list[Reference]] | None:
    """Transaction UID and Referenced SOP Sequence of the Action Information, or ``None``."""
    if info is None:
        return None
    uid = str(info.get("TransactionUID", "") or "")
    items = info.get("ReferencedSOPSequence")
    if not uid or not items:
        return None
    refs = []
    for item in items:
        cls, inst = item.get("ReferencedSOPClassUID"), item.get("ReferencedSOPInstanceUID")
        if not cls or not inst:
            return None
        refs.append(Reference(str(cls), str(inst)))
    return uid, refs


def report_dataset(transaction_uid: str, result: CommitmentResult) -> Dataset:
    """The Event Information of the N-EVENT-REPORT (PS3.4 Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid

    def item(ref: Reference) -> Dataset:
        d = Dataset()
        d.ReferencedSOPClassUID = ref.sop_class_uid
        d.ReferencedSOPInstanceUID = ref.sop_instance_uid
        return d

    if result.committed:
        ds.ReferencedSOPSequence = [item(ref) for ref in result.committed]
    if result.failed:
        failed = []
        for ref, reason in result.failed:
            d = item(ref)
            d.FailureReason = int(reason)
            failed.append(d)
        ds.FailedSOPSequence = failed
    return ds


class CommitmentScp:
    """The N-ACTION handler and the reports it sends (module docstring)."""

    def __init__(self, engine: Engine, sop_classes: frozenset[str], ae_title: str,
                 requesters: Mapping[str, str], timeout_s: float = 30.0) -> None:
        self.engine = engine
        self.sop_classes = sop_classes
        self.ae_title = ae_title
        self.requesters = dict(requesters)
        self.timeout_s = timeout_s
        self._threads: list[threading.Thread] = []

    def handle_action(self, event: Any) -> tuple[int, Dataset | None]:
        """EVT_N_ACTION: check the request, answer it, and send the report afterwards."""
        request = event.request
        calling = str(event.assoc.requestor.ae_title).strip()
        if request.RequestedSOPClassUID != STORAGE_COMMITMENT_PUSH_MODEL:
            return PROCESSING_FAILURE, None
        if int(request.ActionTypeID or 0) != REQUEST_STORAGE_COMMITMENT:
            return NO_SUCH_ACTION, None
        parsed = _references(event.action_information)
        if parsed is None:
            return MISSING_ATTRIBUTE, None
        transaction_uid, refs = parsed
        with Session(self.engine) as session:
            held = kept_instances(session, [r.sop_instance_uid for r in refs])
        result = commitment(refs, {uid: Kept(c, s) for uid, (c, s) in held.items()},
                            self.sop_classes)
        log.info("storage commitment requested", extra={"fields": {
            "calling_ae_title": calling, "transaction_uid": transaction_uid,
            "referenced": len(refs), "committed": len(result.committed),
            "failed": len(result.failed)}})
        thread = threading.Thread(target=self._report, name="CommitmentReport", daemon=True,
                                  args=(event.assoc, calling, transaction_uid, result))
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()  # waits for the reactor: after this N-ACTION's response
        return SUCCESS, None

    def _report(self, assoc: Any, calling: str, transaction_uid: str,
                result: CommitmentResult) -> None:
        info = report_dataset(transaction_uid, result)
        fields = {"calling_ae_title": calling, "transaction_uid": transaction_uid,
                  "event_type_id": int(result.event)}
        if assoc.is_established:
            try:
                status = assoc.send_n_event_report(info, int(result.event),
                                                   STORAGE_COMMITMENT_PUSH_MODEL,
                                                   STORAGE_COMMITMENT_INSTANCE)[0]
                if status is not None and "Status" in status:
                    log.info("storage commitment reported", extra={"fields": {
                        **fields, "association": "same", "status": int(status.Status)}})
                    return
            except Exception as exc:  # released meanwhile: a new association below
                log.info("storage commitment report not sent on the same association",
                         extra={"fields": {**fields, "error": repr(exc)}})
        self._report_anew(calling, info, result, fields)

    def _report_anew(self, calling: str, info: Dataset, result: CommitmentResult,
                     fields: dict[str, Any]) -> None:
        address = self.requesters.get(calling)
        if address is None:
            log.warning("storage commitment report dropped: the association is closed and "
                        "[commitment] requesters has no address for the calling AE title",
                        extra={"fields": fields})
            return
        host, _, port = address.rpartition(":")
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        role = build_role(STORAGE_COMMITMENT_PUSH_MODEL, scp_role=True, scu_role=False)
        assoc = ae.associate(host.strip("[]"), int(port), ae_title=calling, ext_neg=[role])
        if not assoc.is_established:
            log.warning("storage commitment report not sent: no association",
                        extra={"fields": {**fields, "address": address}})
            return
        try:
            status = assoc.send_n_event_report(info, int(result.event),
                                               STORAGE_COMMITMENT_PUSH_MODEL,
                                               STORAGE_COMMITMENT_INSTANCE)[0]
            log.info("storage commitment reported", extra={"fields": {
                **fields, "association": "new", "address": address,
                "status": None if "Status" not in status else int(status.Status)}})
        finally:
            assoc.release()

    def join(self, timeout_s: float) -> None:
        """Wait for reports still being sent (at shutdown)."""
        for thread in list(self._threads):
            thread.join(timeout_s)
