"""Per-hypothesis features: residuals of the reported offset to the offset each convention implies.

The network never sees the matrix itself. For each of the 96 hypotheses ``h`` the matrix
implies an offset ``θ_h`` (docs/contract.md section 3, inverted in closed form here; the same
numbers as
:func:`model.geometry.implied_offsets`, faster). The residual ``δ = θ_h − ρ`` to the reported
offset ``ρ``, measured in display steps, is what the rounding physics acts on: a convention
that explains the data leaves every component within half a step. Each component gives two
numbers: ``z``, a clamped ramp of ``(|δ| − s/2) / σ`` (inside or outside the rounding cell, on
the scale ``σ`` of the matrix's DS noise, see :data:`Z_SHIFT`) and
``log(1 + max(|δ|/s − 1/2, 0))`` (how far outside, in steps). Inside
the cell both are constant, so conventions that explain the data equally get equal features.
The six components are pooled symmetrically (the network does not depend on how axes are
numbered, nor on whether a residual is an angle or a length once it is measured in steps).
Without an isocenter the three translation slots hold the three no-isocenter checks of
:func:`model.geometry.no_isocenter_excess` instead (along the rotation axis, across it, per
component; docs/contract.md section 3), as excesses over their bounds on the scale of the
matrix's noise there (:func:`model.geometry.no_isocenter_sigma`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.batch import InputBatch
from model.conventions import N_HYPOTHESES
from model.geometry import (
    IMPLIED_ROT_IDX,
    IMPLIED_ROT_SIGN,
    IMPLIED_SLOTS,
    IMPLIED_T_IDX,
    IMPLIED_T_SIGN,
    no_isocenter_bounds,
    no_isocenter_sigma,
)

H = N_HYPOTHESES

#: Pooled numbers per hypothesis (over the six components) and per input.
POOLED_FEATURES = 4
GLOBAL_FEATURES = 5
N_FEATURES = POOLED_FEATURES + GLOBAL_FEATURES
#: ``σ`` never falls below this share of the step (keeps ``u`` finite for 15-digit matrices).
SIGMA_FLOOR = 1e-9
#: ``z = clamp((u − Z_SHIFT) / Z_WIDTH, −1, 1)`` for ``u = (|δ| − s/2) / σ``: exactly −1 up to
#: ``2σ`` outside the cell (where the exact likelihood is still a few percent, so such
#: conventions stay as plausible as those inside: the conservative side), exactly +1 beyond
#: ``10σ`` (likelihood below 1e-20). Exact saturation makes conventions that explain the data
#: equally get exactly equal features, hence equal energies.
Z_SHIFT = 6.0
Z_WIDTH = 4.0

# model.geometry's gather tables for the implied offsets, as tensors
_ROT_IDX = torch.from_numpy(IMPLIED_ROT_IDX.reshape(-1))
_ROT_SIGN = torch.from_numpy(IMPLIED_ROT_SIGN.reshape(1, H, 5))
_SLOTS = torch.from_numpy(IMPLIED_SLOTS)
_T_IDX = torch.from_numpy(IMPLIED_T_IDX.reshape(-1))
_T_SIGN = torch.from_numpy(IMPLIED_T_SIGN.reshape(1, H, 3))


def implied_offsets_torch(
    matrix: torch.Tensor, isocenter: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form :func:`model.geometry.implied_offsets`: (N,4,4), (N,3) to t, r (N,H,3).

    Extrinsic Tait-Bryan order ``(i, j, k)`` means ``R = R_k(γ) R_j(β) R_i(α)``; with
    ``ε = +1`` for cyclic orders, ``sin β = −ε R[k,i]``, ``α = atan2(ε R[k,j], R[k,k])``,
    ``γ = atan2(ε R[j,i], R[i,i])``. Angles are degrees in (−180, 180], as SciPy's.
    """
    m = matrix.to(torch.float64)
    n = m.shape[0]
    rot = m[:, :3, :3]
    d = m[:, :3, 3]
    c = isocenter.to(torch.float64)
    # u = d_T − c + R_T c for the correction T = M (direct) or M⁻¹ (inverse)
    u_direct = d - c + torch.matmul(rot, c.unsqueeze(2)).squeeze(2)
    u_inverse = torch.matmul(rot.transpose(1, 2), (c - d).unsqueeze(2)).squeeze(2) - c
    u = torch.cat([u_direct, u_inverse], dim=1)  # (N, 6)
    t = u.index_select(1, _T_IDX).view(n, H, 3) * _T_SIGN
    e = rot.reshape(n, 9).index_select(1, _ROT_IDX).view(n, H, 5) * _ROT_SIGN
    beta = torch.asin(torch.clamp(e[..., 0], -1.0, 1.0))
    alpha = torch.atan2(e[..., 1], e[..., 2])
    gamma = torch.atan2(e[..., 3], e[..., 4])
    abg = torch.rad2deg(torch.stack([alpha, beta, gamma], dim=2))  # (N, H, 3)
    r = torch.gather(abg, 2, _SLOTS.expand(n, H, 3))
    r = torch.where(r == -180.0, torch.full_like(r, 180.0), r)
    return t, r


def wrap_degrees_torch(a: torch.Tensor) -> torch.Tensor:
    """Wrap to (−180, 180] like :func:`model.geometry.wrap_degrees`."""
    w = torch.remainder(a + 180.0, 360.0) - 180.0
    return torch.where(w == -180.0, torch.full_like(w, 180.0), w)


@dataclass(frozen=True, slots=True)
class Context:
    """What stays fixed for an input while its reported offset varies (Langevin moves ``ρ``).

    ``theta`` (N, H, 6): implied (rx, ry, rz, tx, ty, tz) per hypothesis (translations about
    the origin without an isocenter); ``step`` and ``sigma`` (N, 6) per component (the
    translations' ``sigma`` is the no-isocenter checks' without an isocenter);
    ``has_isocenter`` (N,) as 0/1; ``axis_iec`` (N, H, 3) and ``bounds`` (N, 3) of
    :func:`model.geometry.no_isocenter_bounds`.
    """

    theta: torch.Tensor
    step: torch.Tensor
    sigma: torch.Tensor
    has_isocenter: torch.Tensor
    axis_iec: torch.Tensor
    bounds: torch.Tensor

    def __len__(self) -> int:
        return int(self.theta.shape[0])

    def index(self, idx: torch.Tensor) -> Context:
        return Context(self.theta[idx], self.step[idx], self.sigma[idx], self.has_isocenter[idx],
                       self.axis_iec[idx], self.bounds[idx])


def context_from_batch(batch: InputBatch) -> tuple[Context, torch.Tensor]:
    """The fixed context of each input and its reported offset ``ρ`` (N, 6), float64."""
    matrix = torch.from_numpy(np.ascontiguousarray(batch.matrix, dtype=np.float64))
    iso = torch.from_numpy(np.ascontiguousarray(batch.isocenter_mm, dtype=np.float64))
    t, r = implied_offsets_torch(matrix, iso)
    theta = torch.cat([r, t], dim=2)
    noise = np.maximum(batch.orthonormality_error, 1e-12)
    length = np.linalg.norm(batch.isocenter_mm, axis=1) + np.linalg.norm(
        batch.matrix[:, :3, 3], axis=1
    )
    s_r = np.asarray(batch.rotation_step_deg, dtype=np.float64)
    s_t = np.asarray(batch.translation_step_mm, dtype=np.float64)
    sigma_r = np.maximum(np.degrees(2.0 * noise), SIGMA_FLOOR * s_r)
    sigma_t = np.maximum(2.0 * noise * (length + 1.0), SIGMA_FLOOR * s_t)
    sigma_ni = np.maximum(no_isocenter_sigma(batch.matrix, noise, batch.isocenter_bound_mm),
                          SIGMA_FLOOR * s_t)
    sigma_t = np.where(batch.has_isocenter, sigma_t, sigma_ni)
    axis_iec, bounds = no_isocenter_bounds(batch.matrix, s_t, batch.isocenter_bound_mm)
    step = torch.from_numpy(np.repeat(np.stack([s_r, s_t], 1), 3, axis=1))
    sigma = torch.from_numpy(np.repeat(np.stack([sigma_r, sigma_t], 1), 3, axis=1))
    rho = torch.from_numpy(
        np.concatenate([batch.rotation_deg, batch.translation_mm], axis=1).astype(np.float64)
    )
    has = torch.from_numpy(np.asarray(batch.has_isocenter, dtype=np.float64))
    return Context(theta, step, sigma, has, torch.from_numpy(axis_iec),
                   torch.from_numpy(bounds)), rho


def hypothesis_features(ctx: Context, rho: torch.Tensor) -> torch.Tensor:
    """Per-hypothesis features (N, H, 9), float32, differentiable in ``rho``.

    The rounding physics is the same for every component once residuals are measured in
    steps and in ``σ``, so the six components (without an isocenter the translations replaced
    by the three no-isocenter checks, docs/contract.md section 3, their excesses over their
    bounds) are pooled with symmetric functions, invariant to how they are
    numbered: max and mean of ``z``, sum and max of the distance outside the cell. A
    translation just outside its cell thus counts like a rotation just outside its cell,
    which the data show far more often. Then five per-input numbers: log10 of both steps,
    log10 of ``σ / s`` for both, and whether the isocenter is present.
    """
    n = rho.shape[0]
    delta = ctx.theta - rho[:, None, :]
    rot = delta[..., :3]
    rot = torch.remainder(rot + 180.0, 360.0) - 180.0  # angle wrap; sign is irrelevant below
    w = delta[..., 3:]  # without an isocenter: W = P·(d_T − u), IEC mm
    delta = torch.cat([rot, w], dim=2).abs()
    excess = delta - (0.5 * ctx.step)[:, None, :]
    along = (ctx.axis_iec * w).sum(dim=2).abs()
    across = torch.sqrt(torch.clamp((w * w).sum(dim=2) - along * along, min=1e-24))
    checks = torch.stack([along, across, delta[..., 3:].amax(dim=2)], dim=2)
    has = ctx.has_isocenter[:, None, None] > 0
    excess_t = torch.where(has, excess[..., 3:], checks - ctx.bounds[:, None, :])
    excess = torch.cat([excess[..., :3], excess_t], dim=2)
    u = excess / ctx.sigma[:, None, :]
    z = torch.clamp((u - Z_SHIFT) / Z_WIDTH, -1.0, 1.0).to(torch.float32)
    out = torch.log1p(torch.relu(excess / ctx.step[:, None, :]).to(torch.float32))
    pooled = torch.stack([z.amax(dim=2), z.mean(dim=2), out.sum(dim=2), out.amax(dim=2)], dim=2)
    s = ctx.step[:, [0, 3]]
    g = torch.cat(
        [torch.log10(s), torch.log10(ctx.sigma[:, [0, 3]] / s) / 9.0, ctx.has_isocenter[:, None]],
        dim=1,
    ).to(torch.float32)
    return torch.cat([pooled, g[:, None, :].expand(n, H, GLOBAL_FEATURES)], dim=2)
