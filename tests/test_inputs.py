"""The one seam for inputs (model.inputs): SOP classes, dispatch, invalid reasons, the pipeline."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, RawDataStorage

from model.decision import DecisionKind
from model.decoders.analytic import AnalyticDecoder
from model.dicom import sro
from model.errors import InvalidReason, SROError
from model.inputs import (
    DEFAULT_REGISTRY,
    PRIVATE_BLOCK,
    XVI_RPS,
    AdapterRegistry,
    InputAdapter,
    InvalidInput,
    RegistrationInput,
)
from model.inputs.profiles import DEFAULT_PROFILE, OffsetProfile
from model.offset import CouchOffset
from model.pipeline import DecodeOptions, decode_dataset
from tests.test_sro import corrupted_through_a_file, each_invalid_case

SRO_CLASS = sro.SPATIAL_REGISTRATION_STORAGE


@dataclasses.dataclass(frozen=True)
class RawCarrier:
    """A test adapter: a Raw Data Storage object with an SRO's Registration Sequence and the
    private block (a second input kind with its own SOP class)."""

    name: str = "test_raw_carrier"
    sop_class_uids: tuple[str, ...] = (str(RawDataStorage),)

    def recognises(self, ds: Dataset) -> bool:
        return ds.get("Modality") == "REG"

    def read(self, ds: Dataset, profile: OffsetProfile) -> RegistrationInput:
        as_sro = copy.deepcopy(ds)
        as_sro.SOPClassUID = SRO_CLASS
        return PRIVATE_BLOCK.read(as_sro, profile)


@dataclasses.dataclass(frozen=True)
class VendorComment:
    """A test adapter for one vendor's SROs (Manufacturer ``TEST VENDOR``), its offset in
    Content Description as ``tx,ty,tz,rx,ry,rz``; goes before the generic private block."""

    name: str = "test_vendor_comment"
    sop_class_uids: tuple[str, ...] = (SRO_CLASS,)

    def recognises(self, ds: Dataset) -> bool:
        return ds.get("Manufacturer") == "TEST VENDOR"

    def read(self, ds: Dataset, profile: OffsetProfile) -> RegistrationInput:
        values = [float(v) for v in str(ds.ContentDescription).split(",")]
        if len(values) != 6:
            raise SROError(InvalidReason.OFFSET_INVALID, f"{len(values)} values, not 6")
        return RegistrationInput(sro.read(ds), profile.convert(values[:3], values[3:]))


@dataclasses.dataclass(frozen=True)
class Broken:
    """A test adapter that fails the way pydicom fails on a malformed element."""

    name: str = "test_broken"
    sop_class_uids: tuple[str, ...] = (str(RawDataStorage),)

    def recognises(self, ds: Dataset) -> bool:
        return True

    def read(self, ds: Dataset, profile: OffsetProfile) -> RegistrationInput:
        raise TypeError("a value pydicom cannot convert")


def test_default_registry_reads_spatial_registration_and_the_xvi_companion() -> None:
    assert DEFAULT_REGISTRY.sop_class_uids == (SRO_CLASS, str(RawDataStorage))
    assert DEFAULT_REGISTRY.adapters == (PRIVATE_BLOCK, XVI_RPS)
    assert isinstance(PRIVATE_BLOCK, InputAdapter)
    assert isinstance(RawCarrier(), InputAdapter)


def test_sop_classes_are_the_adapters_in_order_without_repeats() -> None:
    registry = AdapterRegistry((VendorComment(), PRIVATE_BLOCK, RawCarrier(), Broken()))
    assert registry.sop_class_uids == (SRO_CLASS, str(RawDataStorage))


def test_private_block_reads_registration_and_offset(valid_sro: Dataset,
                                                     offset: CouchOffset) -> None:
    result = DEFAULT_REGISTRY.read(valid_sro, DEFAULT_PROFILE)
    assert isinstance(result, RegistrationInput)
    assert result.registration == sro.read(valid_sro)
    assert result.offset == offset
    assert result.sop_instance_uid == valid_sro.SOPInstanceUID
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.offset = None  # type: ignore[misc]


def test_the_profile_says_where_the_offset_is(valid_sro: Dataset) -> None:
    elsewhere = OffsetProfile(private_creator="ANOTHER VENDOR")
    result = DEFAULT_REGISTRY.read(valid_sro, elsewhere)
    assert isinstance(result, RegistrationInput) and result.offset is None


@each_invalid_case
def test_each_failed_check_is_an_invalid_input_with_its_code(
    valid_sro: Dataset, tmp_path: Path, corrupt: Callable[[Dataset], None], code: InvalidReason
) -> None:
    ds = corrupted_through_a_file(valid_sro, tmp_path, corrupt)
    result = DEFAULT_REGISTRY.read(ds, DEFAULT_PROFILE)
    assert isinstance(result, InvalidInput)
    assert result.reason is code
    assert result.message
    assert result.sop_instance_uid == valid_sro.SOPInstanceUID


def test_unknown_sop_class_is_not_spatial_registration(valid_sro: Dataset) -> None:
    valid_sro.SOPClassUID = CTImageStorage
    result = DEFAULT_REGISTRY.read(valid_sro, DEFAULT_PROFILE)
    assert result == InvalidInput(
        InvalidReason.NOT_SPATIAL_REGISTRATION,
        f"SOP Class UID is '{CTImageStorage}', not Spatial Registration Storage ({SRO_CLASS}) "
        f"or Raw Data Storage ({RawDataStorage})",
        valid_sro.SOPInstanceUID)
    del valid_sro.SOPClassUID
    absent = DEFAULT_REGISTRY.read(valid_sro, DEFAULT_PROFILE)
    assert isinstance(absent, InvalidInput)
    assert absent.message.startswith("SOP Class UID is 'absent', not ")
    # with a second input kind, the reason names every SOP class read
    two = AdapterRegistry((PRIVATE_BLOCK, RawCarrier()))
    other = two.read(valid_sro, DEFAULT_PROFILE)
    assert isinstance(other, InvalidInput)
    assert other.reason is InvalidReason.NOT_SPATIAL_REGISTRATION
    assert f"Spatial Registration Storage ({SRO_CLASS}) or Raw Data Storage " \
           f"({RawDataStorage})" in other.message


def test_dispatch_by_sop_class_and_recognition(valid_sro: Dataset, offset: CouchOffset) -> None:
    vendor, raw = VendorComment(), RawCarrier()
    registry = AdapterRegistry((vendor, PRIVATE_BLOCK, raw))
    assert registry.adapter_for(valid_sro) is PRIVATE_BLOCK
    vendors = copy.deepcopy(valid_sro)
    vendors.Manufacturer = "TEST VENDOR"
    vendors.ContentDescription = "1,2,3,0.5,-0.5,359.5"
    assert registry.adapter_for(vendors) is vendor
    result = registry.read(vendors, DEFAULT_PROFILE)
    assert isinstance(result, RegistrationInput)
    assert result.offset == CouchOffset((1.0, 2.0, 3.0), (0.5, -0.5, -0.5))
    carried = copy.deepcopy(valid_sro)
    carried.SOPClassUID = RawDataStorage
    assert registry.adapter_for(carried) is raw
    assert DEFAULT_REGISTRY.adapter_for(carried) is None
    read = registry.read(carried, DEFAULT_PROFILE)
    assert isinstance(read, RegistrationInput) and read.offset == offset
    # its SOP class is read, but no adapter recognises the data set
    carried.Modality = "OT"
    assert registry.adapter_for(carried) is None
    unknown = registry.read(carried, DEFAULT_PROFILE)
    assert unknown == InvalidInput(
        InvalidReason.NOT_SPATIAL_REGISTRATION,
        "no input adapter recognises this Raw Data Storage data set", valid_sro.SOPInstanceUID)


def test_an_adapter_that_fails_is_unreadable_never_raises(valid_sro: Dataset) -> None:
    valid_sro.SOPClassUID = RawDataStorage
    result = AdapterRegistry((Broken(),)).read(valid_sro, DEFAULT_PROFILE)
    assert result == InvalidInput(
        InvalidReason.UNREADABLE,
        "the dataset cannot be understood: TypeError: a value pydicom cannot convert",
        valid_sro.SOPInstanceUID)


def test_pipeline_decodes_through_the_options_adapters(valid_sro: Dataset) -> None:
    """decode_dataset dispatches through DecodeOptions.adapters: a second input kind decodes as
    the SRO it carries; the default registry refuses it with the SOP class reason."""
    decoder = AnalyticDecoder()
    expected = decode_dataset(valid_sro, decoder, DecodeOptions())
    assert expected.decision is DecisionKind.CONFIDENT
    carried = copy.deepcopy(valid_sro)
    carried.SOPClassUID = RawDataStorage
    refused = decode_dataset(carried, decoder, DecodeOptions())
    assert refused.decision is DecisionKind.INVALID
    assert refused.reason_code == InvalidReason.NOT_SPATIAL_REGISTRATION
    options = DecodeOptions(adapters=AdapterRegistry((PRIVATE_BLOCK, RawCarrier())))
    assert decode_dataset(carried, decoder, options) == expected
