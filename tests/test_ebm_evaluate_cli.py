"""``sro-decoder evaluate``: one table for the three decoders, pictures, metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.offset import Precision
from model.training.data import load_set_folder
from model.training.evaluation import expected_calibration_error
from model.training.synth import SynthConfig, generate, write_set
from node.cli.main import main


def test_evaluate_generated_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    assert main(["evaluate", "--n", "400", "--seed", "99", "--out", str(out), "--json"]) == 0
    text = capsys.readouterr().out
    for name in ("ebm", "analytic", "raw-mlp", "confident-and-wrong", "OOD recall",
                 "expected calibration error", "throughput"):
        assert name in text
    payload = json.loads(text.strip().splitlines()[-1])
    metrics = payload["metrics"]
    assert set(metrics) == {"ebm", "analytic", "raw-mlp"}
    assert metrics["analytic"]["confident_wrong"] == 0
    assert metrics["ebm"]["confident_wrong"] == 0
    # the baseline that must rediscover rotation algebra from raw numbers does worse
    assert metrics["raw-mlp"]["confident_share"] < metrics["ebm"]["confident_share"] or \
        metrics["raw-mlp"]["confident_wrong"] > 0 or metrics["raw-mlp"]["coverage"] < 0.99
    for png in ("reliability.png", "confusion.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_evaluate_reads_a_synth_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synth = generate(SynthConfig(n=30, seed=5, precision=Precision(0.1, 1.0), corrupt_fraction=0.3))
    write_set(synth, tmp_path / "set")
    loaded = load_set_folder(tmp_path / "set")
    np.testing.assert_array_equal(loaded.truth, synth.truth)
    np.testing.assert_allclose(loaded.batch.rotation_deg, synth.batch.rotation_deg)
    np.testing.assert_allclose(loaded.batch.translation_step_mm, 1.0)
    assert loaded.corruption == synth.corruption
    out = tmp_path / "ev"
    assert main(["evaluate", str(tmp_path / "set"), "--out", str(out)]) == 0
    assert "30 cases" in capsys.readouterr().out


def test_evaluate_rejects_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "nowhere")])
    assert exc.value.code == 2


def test_expected_calibration_error() -> None:
    conf = np.full(1000, 0.9)
    correct = np.arange(1000) < 900
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(conf, np.zeros(1000, dtype=bool)) == pytest.approx(0.9)
