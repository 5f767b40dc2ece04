"""Storage Commitment Push Model SCP end to end (PS3.4 Annex J): a pynetdicom SCU stores SROs,
then asks for commitment of those and of instances the node never received; one N-EVENT-REPORT
on the same association commits the first and fails the others with their PS3.4 reason."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    SpatialRegistrationStorage,
    StorageCommitmentPushModel,
)

from model.dicom.commitment import FailureReason
from model.training.synth import SynthConfig, generate, write_set
from node.dimse.service import Node
from node.settings import Settings
from tests.node.conftest import make_settings


@pytest.fixture(scope="module")
def clean_sros(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("clean")
    write_set(generate(SynthConfig(n=50, seed=3, corrupt_fraction=0.0)), out)
    return sorted(out.glob("*.dcm"))


def ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def request_commitment(port: int, files: list[Path], extra: list[Dataset]
                       ) -> tuple[list[int], int, list[tuple[int, Dataset]]]:
    """Store ``files``, then N-ACTION for them and ``extra`` on the same association; the
    C-STORE statuses, the N-ACTION status and the N-EVENT-REPORTs received."""
    reports: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((int(event.event_type), event.event_information))
        got.set()
        return 0x0000, None

    ae = AE(ae_title="PACS1")
    ae.add_requested_context(SpatialRegistrationStorage)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    try:
        datasets = [dcmread(p) for p in files]
        stored = [int(assoc.send_c_store(ds).Status) for ds in datasets]
        info = Dataset()
        info.TransactionUID = generate_uid()
        info.ReferencedSOPSequence = [
            *(ref(ds.SOPClassUID, ds.SOPInstanceUID) for ds in datasets), *extra]
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel,
                                        "1.2.840.10008.1.20.1.1")
        assert got.wait(10), "no N-EVENT-REPORT"
        got.clear()
        got.wait(0.5)  # a second report would arrive now
        assert all(r[1].TransactionUID == info.TransactionUID for r in reports)
    finally:
        assoc.release()
    return stored, int(status.Status), reports


def test_fifty_stored_and_five_unknown(
    tmp_path: Path, clean_sros: list[Path], node_factory: Callable[[Settings], Node]
) -> None:
    node = node_factory(make_settings(tmp_path / "data"))
    unknown = [ref(SpatialRegistrationStorage, generate_uid()) for _ in range(5)]
    stored, action_status, reports = request_commitment(node.address[1], clean_sros, unknown)
    assert len(stored) == 50 and all(s == 0 or 0xB000 <= s <= 0xBFFF for s in stored)
    assert action_status == 0x0000
    assert len(reports) == 1
    event_type, info = reports[0]
    assert event_type == 2  # failures exist
    committed = {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence}
    assert committed == {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in clean_sros}
    failed = {i.ReferencedSOPInstanceUID: int(i.FailureReason) for i in info.FailedSOPSequence}
    assert failed == {i.ReferencedSOPInstanceUID: FailureReason.NO_SUCH_OBJECT_INSTANCE
                      for i in unknown}


def test_all_committed_and_an_unsupported_class(
    tmp_path: Path, clean_sros: list[Path], node_factory: Callable[[Settings], Node]
) -> None:
    node = node_factory(make_settings(tmp_path / "data"))
    _, _, reports = request_commitment(node.address[1], clean_sros[:3], [])
    assert [(t, len(i.ReferencedSOPSequence), "FailedSOPSequence" in i)
            for t, i in reports] == [(1, 3, False)]
    uid = dcmread(clean_sros[0]).SOPInstanceUID
    _, _, reports = request_commitment(node.address[1], [], [ref(CTImageStorage, uid)])
    (event_type, info), = reports
    assert event_type == 2 and "ReferencedSOPSequence" not in info
    assert int(info.FailedSOPSequence[0].FailureReason) == \
        FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED


def test_a_report_after_the_association_closed_goes_on_a_new_one_to_the_requester(
        caplog: pytest.LogCaptureFixture) -> None:
    """PS3.4 J.3.3: the requesting association is gone, so the node associates with the
    address ``[commitment] requesters`` gives for the calling AE title, proposing the SCP role
    (PS3.7 D.3.3.4), and sends the N-EVENT-REPORT there; without an address it is dropped
    and logged. The requester is a real pynetdicom SCP on 127.0.0.1 port 0."""
    import logging
    from types import SimpleNamespace

    from model.dicom.commitment import Kept, Reference, commitment
    from node.dimse.commitment import CommitmentScp

    reports: list[tuple[int, Dataset, str]] = []
    got = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((int(event.event_type), event.event_information,
                        str(event.assoc.requestor.ae_title).strip()))
        got.set()
        return 0x0000, None

    requester = AE(ae_title="PACS1")
    requester.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = requester.start_server(("127.0.0.1", 0), block=False,
                                    evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        port = server.server_address[1]
        scp = CommitmentScp(None, frozenset({SpatialRegistrationStorage}),  # type: ignore[arg-type]
                            "SRO_DECODER", {"PACS1": f"127.0.0.1:{port}"}, timeout_s=10)
        kept_uid, lost_uid = generate_uid(), generate_uid()
        result = commitment([Reference(SpatialRegistrationStorage, kept_uid),
                             Reference(SpatialRegistrationStorage, lost_uid)],
                            {kept_uid: Kept(SpatialRegistrationStorage, 0x0000)},
                            frozenset({SpatialRegistrationStorage}))
        closed = SimpleNamespace(is_established=False)  # the requesting association, released
        caplog.set_level(logging.INFO, logger="node.dimse.commitment")
        scp._report(closed, "PACS1", "1.2.3.4.5", result)
        assert got.wait(10), "no N-EVENT-REPORT on a new association"
        ((event_type, info, calling),) = reports
        assert calling == "SRO_DECODER" and event_type == 2
        assert info.TransactionUID == "1.2.3.4.5"
        assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [kept_uid]
        assert [i.ReferencedSOPInstanceUID for i in info.FailedSOPSequence] == [lost_uid]
        said = [r for r in caplog.records if r.getMessage() == "storage commitment reported"]
        assert said and said[0].fields["association"] == "new"  # type: ignore[attr-defined]

        scp._report(closed, "PACS2", "1.2.3.4.6", result)  # no address for PACS2
        assert len(reports) == 1
        assert any(r.getMessage().startswith("storage commitment report dropped")
                   for r in caplog.records)
    finally:
        server.shutdown()
