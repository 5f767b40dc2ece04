"""The node's presentation contexts and C-STORE dispatch come from its input adapters
(model.inputs): a second adapter's SOP class is negotiated and its objects decoded."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RawDataStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import SpatialRegistrationStorage, Verification  # type: ignore[attr-defined]

from model.dicom.commitment import STORAGE_COMMITMENT_PUSH_MODEL
from model.dicom.sro import SPATIAL_REGISTRATION_STORAGE
from model.inputs import DEFAULT_REGISTRY, PRIVATE_BLOCK, AdapterRegistry
from node.dimse.service import Node, build_ae
from tests.node.conftest import export, make_settings
from tests.test_inputs import RawCarrier

CONTEXTS = (SpatialRegistrationStorage, RawDataStorage, CTImageStorage, Verification)


def negotiate(port: int) -> tuple[Any, set[str], set[str]]:
    ae = AE(ae_title="CONSOLE1")
    for sop_class in CONTEXTS:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
    return assoc, accepted, rejected


def test_build_ae_contexts_are_the_registry_sop_classes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    default = {str(cx.abstract_syntax) for cx in build_ae(settings).supported_contexts}
    # Verification and Storage Commitment (PS3.4 Annex J) beside the adapters' SOP classes
    assert default == {Verification, STORAGE_COMMITMENT_PUSH_MODEL,
                       *DEFAULT_REGISTRY.sop_class_uids}
    two = AdapterRegistry((PRIVATE_BLOCK, RawCarrier()))
    both = {str(cx.abstract_syntax) for cx in build_ae(settings, two).supported_contexts}
    assert both == {Verification, STORAGE_COMMITMENT_PUSH_MODEL, SPATIAL_REGISTRATION_STORAGE,
                    str(RawDataStorage)}


def test_default_node_accepts_the_xvi_companion_and_nothing_else(tmp_path: Path,
                                                                 node_factory: Any) -> None:
    port = node_factory(make_settings(tmp_path / "data")).address[1]
    assoc, accepted, rejected = negotiate(port)
    assoc.release()
    assert accepted == {SPATIAL_REGISTRATION_STORAGE, str(RawDataStorage), Verification}
    assert rejected == {str(CTImageStorage)}


def test_second_adapter_adds_its_sop_class_and_decodes(tmp_path: Path,
                                                       valid_sro: Dataset) -> None:
    settings = make_settings(tmp_path / "data")
    node = Node(settings, adapters=AdapterRegistry((PRIVATE_BLOCK, RawCarrier())))
    port = node.start()[1]
    try:
        assoc, accepted, rejected = negotiate(port)
        assert accepted == {SPATIAL_REGISTRATION_STORAGE, str(RawDataStorage), Verification}
        assert rejected == {str(CTImageStorage)}
        carried = copy.deepcopy(valid_sro)
        carried.SOPClassUID = RawDataStorage
        carried.SOPInstanceUID = generate_uid()
        carried.file_meta.MediaStorageSOPClassUID = RawDataStorage
        carried.file_meta.MediaStorageSOPInstanceUID = carried.SOPInstanceUID
        unread = copy.deepcopy(carried)
        unread.Modality = "OT"  # of a class it reads, but not recognised
        unread.SOPInstanceUID = unread.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        statuses = [int(assoc.send_c_store(ds).Status) for ds in (valid_sro, carried, unread)]
        assoc.release()
    finally:
        node.stop(grace_s=2.0)
    assert statuses == [0x0000, 0x0000, 0xA900]
    rows = export(settings.data_dir)
    sro_row, carried_row = rows[valid_sro.SOPInstanceUID], rows[carried.SOPInstanceUID]
    assert sro_row["decision"] == carried_row["decision"] == "confident"
    assert carried_row["convention"] == sro_row["convention"]
    assert rows[unread.SOPInstanceUID]["reason_code"] == "not_spatial_registration"
