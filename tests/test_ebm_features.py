"""Energy-model features: closed-form implied offsets, rounding-cell features, the
no-isocenter translation checks (docs/contract.md section 3), wrap."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.batch import InputBatch
from model.conventions import HYPOTHESES, N_HYPOTHESES
from model.decoders.energy.features import (
    N_FEATURES,
    context_from_batch,
    hypothesis_features,
    implied_offsets_torch,
)
from model.geometry import forward, implied_offsets
from model.offset import Precision
from model.training.synth import SynthConfig, generate


def _batch_from_truth(t: np.ndarray, r: np.ndarray, c: np.ndarray | None, h: int,
                      reported_r: np.ndarray, reported_t: np.ndarray,
                      step: tuple[float, float] = (0.1, 0.1)) -> InputBatch:
    n = len(t)
    m = forward(t, r, c)[:, h]
    return InputBatch(
        matrix=m,
        translation_mm=reported_t,
        rotation_deg=reported_r,
        isocenter_mm=np.zeros((n, 3)) if c is None else c,
        has_isocenter=np.full(n, c is not None),
        rotation_step_deg=np.full(n, step[0]),
        translation_step_mm=np.full(n, step[1]),
        orthonormality_error=np.zeros(n),
    )


@pytest.mark.parametrize("digits", [15, 6])
def test_closed_form_matches_geometry(digits: int) -> None:
    data = generate(SynthConfig(n=300, seed=11, rotation_range_deg=10.0, matrix_digits=(digits,)))
    b = data.batch
    t_ref, r_ref = implied_offsets(b.matrix, b.isocenter_mm)
    t, r = implied_offsets_torch(torch.from_numpy(b.matrix), torch.from_numpy(b.isocenter_mm))
    assert t.shape == (300, N_HYPOTHESES, 3) and r.shape == (300, N_HYPOTHESES, 3)
    np.testing.assert_allclose(t.numpy(), t_ref, atol=1e-9)
    # SciPy orthogonalises 6-digit matrices first; the closed form reads them as they are
    np.testing.assert_allclose(r.numpy(), r_ref, atol=1e-9 if digits == 15 else 2e-4)


def test_every_hypothesis_recovers_its_own_offset() -> None:
    rng = np.random.default_rng(5)
    h = N_HYPOTHESES
    t = rng.normal(0, 5, (h, 3))
    r = rng.uniform(-8, 8, (h, 3))
    c = rng.uniform(-100, 100, (h, 3))
    m = forward(t, r, c)[np.arange(h), np.arange(h)]  # case k built with hypothesis k
    t_h, r_h = implied_offsets_torch(torch.from_numpy(m), torch.from_numpy(c))
    for k in range(h):
        np.testing.assert_allclose(t_h[k, k].numpy(), t[k], atol=1e-9, err_msg=str(HYPOTHESES[k]))
        np.testing.assert_allclose(r_h[k, k].numpy(), r[k], atol=1e-9, err_msg=str(HYPOTHESES[k]))


def test_features_inside_cell_are_identical_and_outside_differ() -> None:
    t = np.array([[1.23, -2.0, 0.4]])
    r = np.array([[0.04, -0.03, 0.02]])  # tiny rotations: order barely matters
    c = np.array([[10.0, -50.0, 30.0]])
    rep_r = np.round(r, 1)
    rep_t = np.round(t, 1)
    batch = _batch_from_truth(t, r, c, 0, rep_r, rep_t)
    ctx, rho = context_from_batch(batch)
    f = hypothesis_features(ctx, rho)
    assert f.shape == (1, N_HYPOTHESES, N_FEATURES) and f.dtype == torch.float32
    same_position_direct = [k for k, h in enumerate(HYPOTHESES)
                            if h.patient_position == HYPOTHESES[0].patient_position
                            and not h.inverse]
    for k in same_position_direct:  # all six orders explain the data: same features
        assert torch.equal(f[0, k], f[0, 0])
        assert f[0, k, 0] == pytest.approx(-1.0)  # max z: inside the cell
    others = [k for k in range(N_HYPOTHESES) if k not in same_position_direct]
    assert all(f[0, k, 0] > 0.9 for k in others)  # some component outside


def test_translation_checked_without_isocenter() -> None:
    """Without an isocenter the translation slots carry the no-isocenter checks: a translation
    any isocenter within the bound explains (here the true one about an isocenter far from
    the origin) leaves the features of the rotations alone; a wildly wrong one does not."""
    t = np.array([[1.0, 2.0, 3.0]])
    r = np.array([[1.0, -2.0, 0.5]])
    c = np.array([[80.0, -40.0, -500.0]])
    m = forward(t, r, c)[:, 3]
    good = _batch_from_truth(t, r, None, 3, np.round(r, 1), np.round(t, 1))
    good = dataclasses.replace(good, matrix=m)
    f = hypothesis_features(*context_from_batch(good))
    assert f[0, 3, 0] == -1.0 and f[0, 3, 2] == 0.0  # inside every cell and every check
    bad = dataclasses.replace(good, translation_mm=np.array([[50.0, -40.0, 9.0]]))
    g = hypothesis_features(*context_from_batch(bad))
    assert g[0, 3, 0] == 1.0 and g[0, 3, 2] > 3.0  # along the axis c drops out: it counts
    # with an isocenter the translation is compared component by component, as before
    with_iso = _batch_from_truth(t, r, np.zeros((1, 3)), 3, np.round(r, 1),
                                 np.array([[50.0, -40.0, 9.0]]))
    g = hypothesis_features(*context_from_batch(with_iso))
    assert g[0, 3, 0] == 1.0 and g[0, 3, 2] > 3.0


def test_no_isocenter_features_are_the_geometry_checks() -> None:
    """The torch features' no-isocenter slots are :func:`model.geometry.no_isocenter_excess`
    over :func:`model.geometry.no_isocenter_sigma` (the same numbers, in display steps)."""
    from model.decoders.energy.features import Z_SHIFT, Z_WIDTH
    from model.geometry import no_isocenter_excess, no_isocenter_sigma

    data = generate(SynthConfig(n=200, seed=12, isocenter_fraction=0.0, rotation_range_deg=6.0,
                                precision=Precision(0.5, 0.2), matrix_digits=(8,)))
    b = data.batch
    ctx, rho = context_from_batch(b)
    f = hypothesis_features(ctx, rho).numpy()
    excess = no_isocenter_excess(b.matrix, b.translation_mm, b.translation_step_mm)
    sigma = np.maximum(no_isocenter_sigma(b.matrix, b.orthonormality_error), 1e-9 * 0.2)
    _, r = implied_offsets(b.matrix)
    d_r = np.abs(np.remainder(r - b.rotation_deg[:, None] + 180, 360) - 180) - 0.25
    all_excess = np.concatenate([d_r, excess], axis=2)
    scale = np.concatenate([np.broadcast_to(ctx.sigma[:, :3].numpy()[:, None], d_r.shape),
                            np.broadcast_to(sigma[:, None, None], excess.shape)], axis=2)
    z = np.clip((all_excess / scale - Z_SHIFT) / Z_WIDTH, -1, 1)
    np.testing.assert_allclose(f[..., 0], z.max(axis=2), atol=1e-5)
    steps = np.array([0.5, 0.5, 0.5, 0.2, 0.2, 0.2])
    out = np.log1p(np.maximum(all_excess / steps, 0)).sum(axis=2)
    np.testing.assert_allclose(f[..., 2], out, rtol=1e-5, atol=1e-5)
    truth = data.truth
    assert (excess[np.arange(len(b)), truth] <= 2 * sigma[:, None]).all()


def test_angle_wrap_in_residuals() -> None:
    t = np.zeros((1, 3))
    r = np.array([[-0.12, 0.0, 0.0]])
    batch_a = _batch_from_truth(t, r, None, 0, np.array([[-0.1, 0.0, 0.0]]), t)
    batch_b = _batch_from_truth(t, r, None, 0, np.array([[359.9, 0.0, 0.0]]), t)
    fa = hypothesis_features(*context_from_batch(batch_a))
    fb = hypothesis_features(*context_from_batch(batch_b))
    torch.testing.assert_close(fa, fb, atol=1e-4, rtol=0)


def test_features_are_differentiable_in_the_offset() -> None:
    data = generate(SynthConfig(n=8, seed=2, precision=Precision(1.0, 1.0)))
    ctx, rho = context_from_batch(data.batch)
    rho = rho.clone().requires_grad_(True)
    hypothesis_features(ctx, rho + 0.7).sum().backward()
    assert rho.grad is not None and torch.isfinite(rho.grad).all()
    assert rho.grad.abs().sum() > 0
