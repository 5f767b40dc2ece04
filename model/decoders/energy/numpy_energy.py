"""The energy model evaluated in NumPy, for decoding (no gradients).

Training and Langevin sampling need torch's gradients (:mod:`model.decoders.energy.features`,
:mod:`model.decoders.energy.network`); decoding does not. A C-STORE decodes one SRO at a time,
and for one input torch's per-operation dispatch costs twice NumPy's (about 0.8 ms against 0.4
ms per SRO on the node's path), so :class:`model.decoders.energy.inference.EnergyDecoder`
evaluates the same features and the same network here, with the same dtypes (float64 geometry,
float32 features and network). ``tests/test_ebm_numpy.py`` holds the two to the same features,
energies and decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.batch import InputBatch
from model.conventions import FloatArray
from model.decoders.energy import features as torch_features
from model.decoders.energy.network import EnergyNet
from model.geometry import implied_offsets

F32 = npt.NDArray[np.float32]

#: components compared without an isocenter: the three rotations (SPEC section 3)
_ALWAYS = np.array([True, True, True, False, False, False])


def hypothesis_features(
    batch: InputBatch, implied: tuple[FloatArray, FloatArray] | None = None
) -> F32:
    """(N, 48, 9) float32: :func:`model.decoders.energy.features.hypothesis_features` of
    :func:`model.decoders.energy.features.context_from_batch`, in NumPy (``implied``: ``(t, r)`` of
    :func:`model.geometry.implied_offsets`, when already computed)."""
    n = len(batch)
    t, r = implied or implied_offsets(batch.matrix, batch.isocenter_mm)
    theta = np.concatenate([r, t], axis=2)  # (N, 48, 6): rx, ry, rz, tx, ty, tz
    noise = np.maximum(batch.orthonormality_error, 1e-12)
    length = np.linalg.norm(batch.isocenter_mm, axis=1) + np.linalg.norm(
        batch.matrix[:, :3, 3], axis=1
    )
    s_r = np.asarray(batch.rotation_step_deg, dtype=np.float64)
    s_t = np.asarray(batch.translation_step_mm, dtype=np.float64)
    sigma_r = np.maximum(np.degrees(2.0 * noise), torch_features.SIGMA_FLOOR * s_r)
    sigma_t = np.maximum(2.0 * noise * (length + 1.0), torch_features.SIGMA_FLOOR * s_t)
    step = np.repeat(np.stack([s_r, s_t], 1), 3, axis=1)
    sigma = np.repeat(np.stack([sigma_r, sigma_t], 1), 3, axis=1)
    rho = np.concatenate([batch.rotation_deg, batch.translation_mm], axis=1)

    delta = theta - rho[:, None, :]
    delta[..., :3] = np.remainder(delta[..., :3] + 180.0, 360.0) - 180.0
    delta = np.abs(delta)
    excess = delta - (0.5 * step)[:, None, :]
    u = excess / sigma[:, None, :]
    z = np.clip((u - torch_features.Z_SHIFT) / torch_features.Z_WIDTH, -1.0, 1.0).astype(
        np.float32
    )
    out = np.log1p(np.maximum(excess / step[:, None, :], 0.0).astype(np.float32))
    keep = _ALWAYS | np.asarray(batch.has_isocenter, dtype=bool)[:, None, None]
    z = np.where(keep, z, np.float32(-1.0))
    out = np.where(keep, out, np.float32(0.0))
    pooled = np.stack([z.max(axis=2), z.mean(axis=2), out.sum(axis=2), out.max(axis=2)], axis=2)
    s = step[:, [0, 3]]
    has = np.asarray(batch.has_isocenter, dtype=np.float64)[:, None]
    g = np.concatenate([np.log10(s), np.log10(sigma[:, [0, 3]] / s) / 9.0, has], axis=1)
    g32 = g.astype(np.float32)
    return np.concatenate(
        [pooled, np.broadcast_to(g32[:, None, :], (n, 48, torch_features.GLOBAL_FEATURES))],
        axis=2,
    )


def _silu(x: F32) -> F32:
    return x / (np.float32(1.0) + np.exp(-x))  # type: ignore[return-value]


@dataclass(frozen=True)
class NumpyEnergyNet:
    """:class:`model.decoders.energy.network.EnergyNet`'s weights as float32 arrays, and its
    forward pass."""

    w1: F32
    b1: F32
    w2: F32
    b2: F32
    w_head: F32
    b_head: F32
    scale: np.float32

    @classmethod
    def from_net(cls, net: EnergyNet) -> NumpyEnergyNet:
        state = {
            k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()
        }
        return cls(
            w1=np.ascontiguousarray(state["body.0.weight"].T), b1=state["body.0.bias"],
            w2=np.ascontiguousarray(state["body.2.weight"].T), b2=state["body.2.bias"],
            w_head=np.ascontiguousarray(state["head.weight"].T), b_head=state["head.bias"],
            scale=np.float32(np.exp(state["log_scale"])),
        )

    def energies(self, batch: InputBatch) -> FloatArray:
        """``E(x, h)`` (N, 48), float64."""
        return self.evaluate(batch)[0]

    def evaluate(
        self, batch: InputBatch
    ) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]:
        """``E(x, h)`` (N, 48) float64 and the implied offsets ``(t, r)`` they rest on."""
        implied = implied_offsets(batch.matrix, batch.isocenter_mm)
        h = _silu(hypothesis_features(batch, implied) @ self.w1 + self.b1)
        h = _silu(h @ self.w2 + self.b2)
        energy = ((h @ self.w_head + self.b_head)[..., 0] * self.scale).astype(np.float64)
        return energy, implied
