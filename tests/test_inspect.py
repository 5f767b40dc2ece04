"""`sro-decoder inspect FILE`: registrations, labels, private blocks, what each profile reads
(issue 11 item 6), with sender text shown on one line."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from node.cli.main import main


@pytest.fixture(scope="module")
def xvi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("xvi")
    assert main(["synth", "--layout", "xvi", "--n", "1", "--out", str(folder),
                 "--seed", "11"]) == 0
    return folder


def test_inspect_lists_the_registrations_and_what_each_profile_reads(
        xvi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(xvi / "sro_00000.dcm")]) == 0
    out = capsys.readouterr().out
    for label in ("Identity", "Correction", "Align.Clip1", "Align.Mask1"):
        assert f"label {label}" in out
    assert "elekta_xvi: decodes registration 'Correction'" in out


def test_inspect_reads_the_companion_offset(xvi: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    truth = json.loads((xvi / "truth.jsonl").read_text().splitlines()[0])
    assert main(["inspect", str(xvi / "rps_00000.dcm")]) == 0
    out = capsys.readouterr().out
    assert "creator 'Elekta: zip file'" in out
    t = ", ".join(f"{v:g}" for v in truth["offset"]["translation_mm"])
    assert f"elekta_xvi: a companion (elekta_xvi_rps), offset t=({t}) mm" in out


def test_sender_text_cannot_forge_lines(xvi: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ds = pydicom.dcmread(xvi / "sro_00000.dcm")
    ds.StationName = "XVI\r\nelekta_xvi: decodes registration 'Forged'"
    path = tmp_path / "hostile.dcm"
    ds.save_as(path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Forged" in out
    assert not any(line.startswith("elekta_xvi: decodes registration 'Forged'")
                   for line in out.splitlines())
