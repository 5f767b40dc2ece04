"""The archived file's File Meta Information (PS3.10 section 7.1), encoded by
model.dicom.file_meta."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode, encode_file_meta

from model.dicom.file_meta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, FileMeta


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(("calling", "called"), [("XVI", "SRO_DECODER"), (None, None),
                                                 ("ODD_AE", "EVEN_AE1")])
def test_header_reads_back_as_pydicom_writes_it(valid_sro: Dataset, syntax: str,
                                                 calling: str | None, called: str | None) -> None:
    ds = valid_sro
    body = encode(ds, syntax == ImplicitVRLittleEndian, True)
    assert body is not None
    meta = FileMeta(ds.SOPClassUID, ds.SOPInstanceUID, syntax,
                    sending_application_entity_title=calling,
                    receiving_application_entity_title=called)
    back = pydicom.dcmread(BytesIO(meta.part10(body)))
    fm = back.file_meta
    assert fm.MediaStorageSOPClassUID == ds.SOPClassUID
    assert fm.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert fm.TransferSyntaxUID == syntax
    assert fm.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert fm.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert fm.get("SendingApplicationEntityTitle") == calling
    assert fm.get("ReceivingApplicationEntityTitle") == called
    assert back.SOPInstanceUID == ds.SOPInstanceUID  # the data set follows, as received

    # byte for byte what pydicom's own File Meta writer gives for the same elements
    reference = FileMetaDataset()
    reference.FileMetaInformationVersion = b"\x00\x01"
    reference.MediaStorageSOPClassUID = ds.SOPClassUID
    reference.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    reference.TransferSyntaxUID = syntax
    reference.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    reference.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if calling:
        reference.SendingApplicationEntityTitle = calling
    if called:
        reference.ReceivingApplicationEntityTitle = called
    assert meta.encode() == encode_file_meta(reference)


def test_missing_uids_still_give_a_readable_header() -> None:
    meta = FileMeta(None, None, ExplicitVRLittleEndian)
    fm = pydicom.dcmread(BytesIO(meta.part10(b""))).file_meta
    assert fm.TransferSyntaxUID == ExplicitVRLittleEndian
    assert fm.MediaStorageSOPInstanceUID == ""
