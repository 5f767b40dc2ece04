"""Decoding with the energy model: features, network, posterior, input energy, OOD flag.

The weights file (``torch.save`` of a plain dict, loaded with ``weights_only=True``) holds the
network's state, its architecture, the out-of-distribution threshold on the input energy set
from held-out data, and the version; its SHA-256 is the model's identity in every record.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.batch import InputBatch
from model.conventions import N_HYPOTHESES
from model.decoder import DecoderOutput, ModelInfo
from model.decoders.energy.features import context_from_batch, hypothesis_features
from model.decoders.energy.network import EnergyNet
from model.decoders.energy.numpy_energy import NumpyEnergyNet

#: Inputs per forward pass: small enough to stay in cache (measured fastest on 2 cores).
CHUNK = 512
WEIGHTS_NAME = "ebm.pt"
#: Energies within this of each other are one energy: conventions with identical features
#: must tie exactly (the network's float32 arithmetic can differ by ~1e-7 between rows), so
#: the most probable one is the first in :data:`model.conventions.HYPOTHESES`, as for the
#: analytic decoder.
TIE_RESOLUTION = 1e-5
CARD_NAME = "ebm.card.json"


def shipped_weights_path() -> Path:
    """The weights file shipped in ``model/weights``."""
    return Path(str(resources.files("model") / "weights" / WEIGHTS_NAME))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def energies(net: EnergyNet, batch: InputBatch, chunk: int = CHUNK) -> torch.Tensor:
    """``E(x, h)`` (N, H), float64, computed in chunks without gradients."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(batch), chunk):
            part = batch.subset(slice(start, start + chunk))
            ctx, rho = context_from_batch(part)
            out.append(net(hypothesis_features(ctx, rho)).to(torch.float64))
    if not out:
        return torch.zeros((0, N_HYPOTHESES), dtype=torch.float64)
    return torch.cat(out)


class EnergyDecoder:
    """The learned decoder (satisfies :class:`model.decoder.Decoder`).

    Decoding evaluates the network in NumPy (:mod:`model.decoders.energy.numpy_energy`, the same
    features
    and weights as the torch module that was trained): one SRO at a time it costs half as much.
    """

    def __init__(self, net: EnergyNet, ood_threshold: float, info: ModelInfo) -> None:
        self.net = net.eval()
        self.numpy_net = NumpyEnergyNet.from_net(self.net)
        self.ood_threshold = float(ood_threshold)
        self.info = info

    def energies(self, batch: InputBatch) -> np.ndarray:
        """``E(x, h)`` (N, H) float64; near-equal energies snapped to exact ties."""
        return self._evaluate(batch)[0]

    def _evaluate(self, batch: InputBatch) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Snapped energies and the implied offsets ``(t, r)`` (N, H, 3) they rest on."""
        parts = [self.numpy_net.evaluate(batch.subset(slice(start, start + CHUNK)))
                 for start in range(0, len(batch), CHUNK)]
        if not parts:
            h = N_HYPOTHESES
            return np.zeros((0, h)), (np.zeros((0, h, 3)), np.zeros((0, h, 3)))
        e = np.concatenate([p[0] for p in parts])
        implied = (np.concatenate([p[1][0] for p in parts]),
                   np.concatenate([p[1][1] for p in parts]))
        low = e.min(axis=1, keepdims=True)
        return low + np.round((e - low) / TIE_RESOLUTION) * TIE_RESOLUTION, implied

    def decode(self, batch: InputBatch) -> DecoderOutput:
        e, implied = self._evaluate(batch)
        neg = -e
        top = neg.max(axis=1, keepdims=True) if len(e) else np.zeros((0, 1))
        with np.errstate(invalid="ignore", over="ignore"):
            lse = top[:, 0] + np.log(np.exp(neg - top).sum(axis=1))
            log_post = neg - lse[:, None]
        energy = -lse
        finite = np.isfinite(log_post).all(axis=1) & np.isfinite(energy)
        return DecoderOutput(
            log_posterior=np.where(finite[:, None], log_post, -np.log(float(N_HYPOTHESES))),
            energy=energy,
            out_of_distribution=~finite | (energy > self.ood_threshold),
            implied_offsets=implied,
        )


def weights_payload(net: EnergyNet, ood_threshold: float, version: str) -> dict[str, Any]:
    """What the weights file holds."""
    return {
        "kind": "sro-decoder-ebm",
        "version": version,
        "hidden": net.hidden,
        "ood_threshold": float(ood_threshold),
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
    }


def load_energy_decoder(path: Path | None = None) -> EnergyDecoder:
    """The decoder from a weights file (``None``: the shipped weights)."""
    path = shipped_weights_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no energy-model weights at {path}; run `sro-decoder train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise ValueError(f"{path} is not an energy-model weights file: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("kind") != "sro-decoder-ebm":
        raise ValueError(f"{path} is not an energy-model weights file")
    net = EnergyNet(hidden=int(payload["hidden"]))
    net.load_state_dict(payload["state_dict"])
    info = ModelInfo(name="ebm", version=str(payload["version"]), sha256=sha256_of(path))
    return EnergyDecoder(net, float(payload["ood_threshold"]), info)
