"""Shared fixtures: synthetic SROs written to a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from model.dicom.sro import write
from model.geometry import forward
from model.offset import CouchOffset


@pytest.fixture
def offset() -> CouchOffset:
    return CouchOffset((1.2, -3.4, 0.5), (1.1, -0.7, 2.3), (10.0, -150.0, 20.0), "XVI-1")


@pytest.fixture
def valid_sro(offset: CouchOffset) -> Dataset:
    """An SRO whose matrix is the HFS / xyz / direct correction of ``offset``."""
    m = forward([offset.translation_mm], [offset.rotation_deg], [offset.isocenter_mm])[0, 0]
    return write(m, offset)


@pytest.fixture
def sro_file(tmp_path: Path, valid_sro: Dataset) -> Path:
    path = tmp_path / "valid.dcm"
    valid_sro.save_as(path, enforce_file_format=True)
    return path
