"""The raw-feature baseline: 12 raw numbers → 64-32-32 → softmax over the 96 conventions.

The numbers are the reported offset (t, r), the matrix's translation column and three
off-diagonal entries of its rotation block (M₂₁, M₀₂, M₁₀), standardised with training
statistics. It is trained on the same data with cross-entropy only, and its energies are its
negative logits; its out-of-distribution threshold is set the same way as the energy model's.
It shows what the residual features and the shared per-hypothesis network buy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model import __version__
from model.batch import InputBatch
from model.conventions import N_HYPOTHESES
from model.decoder import DecoderOutput, ModelInfo
from model.training.data import LabelledSet

if TYPE_CHECKING:
    from model.training.config import ProgressFn, TrainingConfig

BASELINE_NAME = "baseline.pt"
N_RAW = 12


def raw_features(batch: InputBatch) -> np.ndarray:
    """The 12 raw numbers of each input, (N, 12)."""
    m = batch.matrix
    return np.column_stack(
        [batch.translation_mm, batch.rotation_deg, m[:, :3, 3], m[:, 2, 1], m[:, 0, 2], m[:, 1, 0]]
    )


class RawMLP(nn.Module):
    """12 → 64 → 32 → 32 → 96 logits (ReLU)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(N_RAW, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
            nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, N_HYPOTHESES),
        )
        self.register_buffer("mean", torch.zeros(N_RAW))
        self.register_buffer("std", torch.ones(N_RAW))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.std)


@dataclass
class Baseline:
    net: RawMLP
    ood_threshold: float


class BaselineDecoder:
    """The baseline as a :class:`model.decoder.Decoder`."""

    def __init__(self, baseline: Baseline, sha256: str | None = None) -> None:
        self.baseline = baseline
        self.info = ModelInfo(name="raw-mlp", version=__version__, sha256=sha256)

    def energies(self, batch: InputBatch) -> torch.Tensor:
        x = torch.from_numpy(raw_features(batch)).to(torch.float32)
        with torch.inference_mode():
            return (-self.baseline.net(x)).to(torch.float64)

    def decode(self, batch: InputBatch) -> DecoderOutput:
        e = self.energies(batch)
        energy = (-torch.logsumexp(-e, dim=1)).numpy()
        return DecoderOutput(
            log_posterior=torch.log_softmax(-e, dim=1).numpy(),
            energy=energy,
            out_of_distribution=~np.isfinite(energy) | (energy > self.baseline.ood_threshold),
        )


def fit_baseline(
    config: TrainingConfig,
    train: LabelledSet,
    calibration: LabelledSet,
    progress: ProgressFn | None = None,
) -> Baseline:
    """Cross-entropy training on the energy model's training set; threshold from calibration."""
    from model.training.evaluation import calibrate_threshold, unexplained_mask

    bc = config.baseline
    gen = torch.Generator().manual_seed(config.seed + 1)
    torch.manual_seed(config.seed + 1)
    net = RawMLP()
    x = torch.from_numpy(raw_features(train.batch)).to(torch.float32)
    net.mean.copy_(x.mean(0))
    net.std.copy_(x.std(0).clamp_min(1e-6))
    y = torch.from_numpy(train.truth)
    opt = torch.optim.AdamW(net.parameters(), lr=bc.learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(bc.iterations, 1))
    for it in range(1, bc.iterations + 1):
        idx = torch.randint(0, len(train), (bc.batch_size,), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(it, bc.iterations, {"loss": loss.item()})
    net.eval()
    provisional = BaselineDecoder(Baseline(net, float("inf")))
    energy = provisional.decode(calibration.batch).energy
    unexplained = unexplained_mask(calibration)
    cal = calibrate_threshold(energy, ~calibration.corrupted, unexplained, config.calibration)
    return Baseline(net, cal["threshold"])


def save_baseline(baseline: Baseline, path: Path) -> None:
    torch.save(
        {"kind": "sro-decoder-raw-mlp", "ood_threshold": baseline.ood_threshold,
         "state_dict": baseline.net.state_dict()},
        path,
    )


def load_baseline(path: Path) -> BaselineDecoder:
    from model.decoders.energy.inference import sha256_of

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") != "sro-decoder-raw-mlp":
        raise ValueError(f"{path} is not a raw-feature baseline weights file")
    net = RawMLP()
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return BaselineDecoder(Baseline(net, float(payload["ood_threshold"])), sha256_of(path))
