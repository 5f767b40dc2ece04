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
from model.conventions import N_HYPOTHESES, FloatArray
from model.decoders.energy import features as torch_features
from model.decoders.energy.network import EnergyNet
from model.geometry import implied_offsets, no_isocenter_bounds, no_isocenter_sigma

F32 = npt.NDArray[np.float32]
H = N_HYPOTHESES


def hypothesis_features(
    batch: InputBatch, implied: tuple[FloatArray, FloatArray] | None = None
) -> F32:
    """(N, H, 9) float32: :func:`model.decoders.energy.features.hypothesis_features` of
    :func:`model.decoders.energy.features.context_from_batch`, in NumPy (``implied``: ``(t, r)`` of
    :func:`model.geometry.implied_offsets`, when already computed)."""
    pooled, g32 = pooled_and_global(batch, implied)
    n = len(batch)
    return np.concatenate(
        [pooled, np.broadcast_to(g32[:, None, :], (n, H, torch_features.GLOBAL_FEATURES))],
        axis=2,
    )


def pooled_and_global(
    batch: InputBatch, implied: tuple[FloatArray, FloatArray] | None = None
) -> tuple[F32, F32]:
    """The pooled per-hypothesis features (N, H, 4) and the per-input ones (N, 5), float32.

    Computed component-major, ``(6, N, H)``, so that pooling over the six components is
    elementwise work on contiguous planes (NumPy reduces a short last axis slowly).
    """
    t, r = implied or implied_offsets(batch.matrix, batch.isocenter_mm)
    noise = np.maximum(batch.orthonormality_error, 1e-12)
    length = np.linalg.norm(batch.isocenter_mm, axis=1) + np.linalg.norm(
        batch.matrix[:, :3, 3], axis=1
    )
    s_r = np.asarray(batch.rotation_step_deg, dtype=np.float64)
    s_t = np.asarray(batch.translation_step_mm, dtype=np.float64)
    sigma_r = np.maximum(np.degrees(2.0 * noise), torch_features.SIGMA_FLOOR * s_r)
    sigma_t = np.maximum(2.0 * noise * (length + 1.0), torch_features.SIGMA_FLOOR * s_t)
    has_iso = np.asarray(batch.has_isocenter, dtype=bool)
    if not has_iso.all():
        sigma_ni = np.maximum(no_isocenter_sigma(batch.matrix, noise, batch.isocenter_bound_mm),
                              torch_features.SIGMA_FLOOR * s_t)
        sigma_t = np.where(has_iso, sigma_t, sigma_ni)

    n = len(batch)
    delta = np.empty((6, n, H))  # rx, ry, rz, tx, ty, tz
    delta[:3] = np.moveaxis(r, 2, 0) - batch.rotation_deg.T[:, :, None]
    delta[:3] = np.remainder(delta[:3] + 180.0, 360.0) - 180.0
    delta[3:] = np.moveaxis(t, 2, 0) - batch.translation_mm.T[:, :, None]
    w = delta[3:].copy() if not has_iso.all() else None  # W = P·(d_T − u), IEC mm
    np.abs(delta, out=delta)
    excess = delta
    excess[:3] -= (0.5 * s_r)[None, :, None]
    if w is None:
        excess[3:] -= (0.5 * s_t)[None, :, None]
    else:
        axis_iec, bounds = no_isocenter_bounds(batch.matrix, s_t, batch.isocenter_bound_mm)
        a = np.moveaxis(axis_iec, 2, 0)
        along = np.abs(a[0] * w[0] + a[1] * w[1] + a[2] * w[2])
        across = np.sqrt(np.maximum(w[0] * w[0] + w[1] * w[1] + w[2] * w[2] - along * along,
                                    1e-24))
        comp = np.maximum(np.maximum(excess[3], excess[4]), excess[5])
        checks = np.stack([along, across, comp]) - bounds.T[:, :, None]
        excess[3:] -= (0.5 * s_t)[None, :, None]
        excess[3:] = np.where(has_iso[None, :, None], excess[3:], checks)
    sigma = np.concatenate([np.broadcast_to(sigma_r, (3, n)), np.broadcast_to(sigma_t, (3, n))])
    step = np.concatenate([np.broadcast_to(s_r, (3, n)), np.broadcast_to(s_t, (3, n))])
    z = np.clip((excess / sigma[:, :, None] - torch_features.Z_SHIFT) / torch_features.Z_WIDTH,
                -1.0, 1.0).astype(np.float32)
    out = np.log1p(np.maximum(excess / step[:, :, None], 0.0).astype(np.float32))
    pooled = np.stack([z.max(axis=0), z.sum(axis=0) / np.float32(6.0), out.sum(axis=0),
                       out.max(axis=0)], axis=2)
    s = np.stack([s_r, s_t], axis=1)
    g = np.concatenate([np.log10(s), np.log10(np.stack([sigma_r, sigma_t], 1) / s) / 9.0,
                        has_iso[:, None].astype(np.float64)], axis=1)
    return pooled, g.astype(np.float32)


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
        """``E(x, h)`` (N, H), float64."""
        return self.evaluate(batch)[0]

    def evaluate(
        self, batch: InputBatch
    ) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]:
        """``E(x, h)`` (N, H) float64 and the implied offsets ``(t, r)`` they rest on."""
        implied = implied_offsets(batch.matrix, batch.isocenter_mm)
        pooled, g = pooled_and_global(batch, implied)
        # the per-input features enter the first layer once per input, not once per hypothesis
        k = torch_features.POOLED_FEATURES
        h = _silu(pooled @ self.w1[:k] + (g @ self.w1[k:] + self.b1)[:, None, :])
        h = _silu(h @ self.w2 + self.b2)
        energy = ((h @ self.w_head + self.b_head)[..., 0] * self.scale).astype(np.float64)
        return energy, implied
