"""Offset profiles that fit real vendors (docs/contract.md section 5): VRs, one element or six
values, component order with signs, units, fixed tags; Implicit VR and Explicit VR alike."""

from __future__ import annotations

import io
import math

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from model.dicom import sro
from model.errors import InvalidReason, SROError
from model.inputs.profiles import (
    SHIPPED_PROFILES,
    OffsetLayout,
    OffsetProfile,
    RotationUnit,
    ValueVR,
    parse_components,
)
from model.offset import TranslationUnit

T, R = (1.5, -2.25, 3.0), (0.5, -1.0, 359.8)


def _file(elements: list[tuple[int, str, object]], creator: str | None, group: int,
          implicit: bool) -> Dataset:
    ds = sro.write(np.eye(4), None)
    if creator is None:
        for tag, vr, value in elements:
            ds.add_new(tag, vr, value)
    else:
        block = ds.private_block(group, creator, create=True)
        for element, vr, value in elements:
            block.add_new(element, vr, value)
    buf = io.BytesIO()
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(buf, enforce_file_format=True, implicit_vr=implicit)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("vr", [ValueVR.FD, ValueVR.FL, ValueVR.DS, ValueVR.STRING])
def test_each_vr_in_both_vr_encodings(vr: ValueVR, implicit: bool) -> None:
    creator = f"VENDOR {vr.value} {int(implicit)}"
    dicom_vr = {"string": "LO", "DS": "DS"}.get(vr.value, vr.value)
    values: list[object] = [list(T), list(R)]
    if vr is ValueVR.STRING:
        values = ["\\".join(map(str, T)), "\\".join(map(str, R))]
    ds = _file([(0x01, dicom_vr, values[0]), (0x02, dicom_vr, values[1])], creator, 0x0013,
               implicit)
    profile = OffsetProfile(name="v", private_creator=creator, vr=vr, isocenter_element=None,
                            console_element=None)
    got = profile.extract(ds)
    assert got is not None
    assert got.translation_mm == pytest.approx(T, abs=1e-6)
    tolerance = 1e-4 if vr is ValueVR.FL else 1e-9  # FL: 4-byte floats near 360
    assert got.rotation_deg == pytest.approx((0.5, -1.0, -0.2), abs=tolerance)


def test_six_values_in_one_element_with_signed_component_order_cm_and_radians() -> None:
    written_t = (T[0] / 10, -T[2] / 10, T[1] / 10)  # +x, -z, +y in cm
    rad = [math.radians(v) for v in (R[1], R[0], -R[2])]  # +ry, +rx, -rz
    ds = _file([(0x05, "FD", [*written_t, *rad])], "SIX VENDOR", 0x0019, True)
    profile = OffsetProfile(
        name="six", private_creator="SIX VENDOR", translation_element=0x05,
        layout=OffsetLayout.SIX, translation_components="+x,-z,+y",
        rotation_components="+ry,+rx,-rz", translation_unit=TranslationUnit.CM,
        rotation_unit=RotationUnit.RADIANS, isocenter_element=None, console_element=None)
    got = profile.extract(ds)
    assert got is not None
    assert got.translation_mm == pytest.approx(T)
    assert got.rotation_deg == pytest.approx((0.5, -1.0, -0.2))  # -(-359.8) wraps to -0.2


def test_six_values_expected_but_three_found_is_offset_invalid() -> None:
    ds = _file([(0x05, "FD", list(T))], "SIX VENDOR", 0x0019, False)
    profile = OffsetProfile(name="six", private_creator="SIX VENDOR", translation_element=0x05,
                            layout=OffsetLayout.SIX)
    with pytest.raises(SROError) as err:
        profile.extract(ds)
    assert err.value.code is InvalidReason.OFFSET_INVALID


@pytest.mark.parametrize("implicit", [False, True])
def test_voxtox_ds_fixed_tags_with_dx_minus_dz_dy(implicit: bool) -> None:
    written = (T[0], -T[2], T[1])
    ds = _file([(0x00991011, "DS", list(written)), (0x00991012, "DS", list(R))], None, 0x0099,
               implicit)
    got = SHIPPED_PROFILES["voxtox_ds"].extract(ds)
    assert got is not None
    assert got.translation_mm == pytest.approx(T)
    assert SHIPPED_PROFILES["voxtox_ds"].extract(sro.write(np.eye(4), None)) is None


def test_component_orders_are_checked() -> None:
    assert parse_components("+dx,-dz,+dy") == ((0, 1.0), (2, -1.0), (1, 1.0))
    for bad in ("+x,+x,+z", "+x,+y", "x,y,w", "++x,y,z"):
        with pytest.raises(ValueError):
            parse_components(bad)
    with pytest.raises(ValueError):
        OffsetProfile(name="bad", private_creator="")  # fixed tags need a group
