"""Training: config loading, determinism of a tiny run, threshold calibration, the train CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.conventions import N_HYPOTHESES
from model.decoders.energy.card import ModelCard
from model.decoders.energy.inference import load_energy_decoder, sha256_of
from model.training.config import (
    CalibrationConfig,
    DataConfig,
    OptimiserConfig,
    TrainingConfig,
    config_to_toml,
    load_training_config,
)
from model.training.data import Role, mixture
from model.training.evaluation import calibrate_threshold
from model.training.sampler import SamplerConfig
from model.training.trainer import fit
from node.cli.main import main
from node.cli.train import default_config_path

TINY = TrainingConfig(
    seed=3,
    threads=1,
    hidden=8,
    data=DataConfig(n_train=600, n_validation=200, n_calibration=400,
                    rotation_ranges_deg=(3.0,), precisions=((0.1, 0.1), (1.0, 1.0))),
    optimiser=OptimiserConfig(iterations=40, batch_size=64, learning_rate=1e-2, validate_every=20),
    sampler=SamplerConfig(buffer_size=64, steps=3, batch_size=32),
)

TINY_TOML = """
seed = 3
threads = 1
version = "0.0.1-test"
[network]
hidden = 8
[data]
n_train = 600
n_validation = 200
n_calibration = 400
rotation_ranges_deg = [3.0]
precisions = [[0.1, 0.1], [1.0, 1.0]]
[optimiser]
iterations = 6
batch_size = 64
validate_every = 3
[sampler]
buffer_size = 64
steps = 2
batch_size = 32
[baseline]
iterations = 5
"""


def test_shipped_config_loads_with_sampler_settings() -> None:
    cfg = load_training_config(default_config_path())
    assert cfg.sampler.steps > 0 and cfg.sampler.buffer_size >= cfg.sampler.batch_size
    assert 0 < cfg.sampler.fresh_fraction < 1
    assert cfg.objective.cd_weight > 0 and cfg.objective.energy_l2 > 0
    assert set(cfg.data.rotation_ranges_deg) >= {1.0, 10.0}
    steps = {p for pair in cfg.data.precisions for p in pair}
    assert min(steps) <= 0.1 and max(steps) >= 1.0


def test_config_round_trips_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(TINY))
    assert load_training_config(path) == TINY


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sampler]\nstep_sise = 1.0\n")
    with pytest.raises(ValueError, match="step_sise"):
        load_training_config(bad)


def _tiny_sets() -> tuple:
    d = TINY.data
    train = mixture(d.n_train, TINY.seed, Role.TRAIN, d.rotation_ranges_deg, d.precisions)
    val = mixture(d.n_validation, TINY.seed, Role.VALIDATION, d.rotation_ranges_deg, d.precisions)
    return train, val


def test_tiny_training_is_deterministic_and_learns() -> None:
    train, val = _tiny_sets()
    a = fit(TINY, train, val)
    b = fit(TINY, train, val)
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert a.history[-1]["validation_nll"] < np.log(N_HYPOTHESES) - 1.0  # far better than uniform
    c = fit(replace(TINY, seed=4), train, val)
    assert not torch.equal(c.net.body[0].weight, a.net.body[0].weight)


def test_threshold_between_clean_and_unexplained() -> None:
    energy = np.concatenate([np.linspace(-5, -2, 1000), np.linspace(3, 9, 100)])
    clean = np.arange(1100) < 1000
    cal = calibrate_threshold(energy, clean, ~clean, CalibrationConfig(0.999, 0.005))
    assert -2.0 < cal["threshold"] < 3.0 and cal["separated"] == 1.0
    overlapping = np.concatenate([np.linspace(-5, 2, 1000), np.linspace(0, 9, 100)])
    cal = calibrate_threshold(overlapping, clean, ~clean, CalibrationConfig(0.999, 0.005))
    # overlap: the clean quantile wins, so at most 0.1% of clean inputs are flagged
    assert cal["separated"] == 0.0
    assert (overlapping[clean] > cal["threshold"]).mean() <= 0.001 + 1e-9


def test_train_command_writes_checkpoints_config_weights_and_card(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    out, export = tmp_path / "run", tmp_path / "export"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--export", str(export)]) == 0
    assert (out / "checkpoints" / "best.pt").is_file()
    assert (out / "checkpoints" / "last.pt").is_file()
    assert load_training_config(out / "training.toml") == load_training_config(cfg)
    card = ModelCard.read(export / "ebm.card.json")
    assert card.sha256 == sha256_of(export / "ebm.pt")
    assert card.version == "0.0.1-test"
    assert card.training["data"]["n_train"] == 600
    assert "validation_clean" in card.held_out and np.isfinite(card.ood_threshold)
    decoder = load_energy_decoder(export / "ebm.pt")
    assert decoder.info.sha256 == card.sha256 and decoder.ood_threshold == card.ood_threshold
    assert json.loads((export / "ebm.card.json").read_text())["baseline"]["weights_file"]


def test_train_command_records_overrides_in_its_config(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--iterations", "4",
                 "--seed", "11"]) == 0
    written = load_training_config(out / "training.toml")
    assert written.optimiser.iterations == 4 and written.seed == 11
    assert written.sampler == load_training_config(cfg).sampler
