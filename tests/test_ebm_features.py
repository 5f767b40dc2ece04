"""Energy-model features: closed-form implied offsets, rounding-cell features, masking, wrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.batch import InputBatch
from model.conventions import HYPOTHESES
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
    assert t.shape == (300, 48, 3) and r.shape == (300, 48, 3)
    np.testing.assert_allclose(t.numpy(), t_ref, atol=1e-9)
    # SciPy orthogonalises 6-digit matrices first; the closed form reads them as they are
    np.testing.assert_allclose(r.numpy(), r_ref, atol=1e-9 if digits == 15 else 2e-4)


def test_every_hypothesis_recovers_its_own_offset() -> None:
    rng = np.random.default_rng(5)
    t = rng.normal(0, 5, (48, 3))
    r = rng.uniform(-8, 8, (48, 3))
    c = rng.uniform(-100, 100, (48, 3))
    m = forward(t, r, c)[np.arange(48), np.arange(48)]  # case k built with hypothesis k
    t_h, r_h = implied_offsets_torch(torch.from_numpy(m), torch.from_numpy(c))
    for k in range(48):
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
    assert f.shape == (1, 48, N_FEATURES) and f.dtype == torch.float32
    same_position_direct = [k for k, h in enumerate(HYPOTHESES)
                            if h.patient_position == HYPOTHESES[0].patient_position
                            and not h.inverse]
    for k in same_position_direct:  # all six orders explain the data: same features
        assert torch.equal(f[0, k], f[0, 0])
        assert f[0, k, 0] == pytest.approx(-1.0)  # max z: inside the cell
    others = [k for k in range(48) if k not in same_position_direct]
    assert all(f[0, k, 0] > 0.9 for k in others)  # some component outside


def test_translation_ignored_without_isocenter() -> None:
    t = np.array([[1.0, 2.0, 3.0]])
    r = np.array([[1.0, -2.0, 0.5]])
    batch = _batch_from_truth(t, r, None, 3, np.round(r, 1), np.array([[50.0, -40.0, 9.0]]))
    ctx, rho = context_from_batch(batch)
    f = hypothesis_features(ctx, rho)
    # the reported translation is wildly off, but without an isocenter only rotation counts
    assert f[0, 3, 0] == -1.0 and f[0, 3, 2] == 0.0
    with_iso = _batch_from_truth(t, r, np.zeros((1, 3)), 3, np.round(r, 1),
                                 np.array([[50.0, -40.0, 9.0]]))
    g = hypothesis_features(*context_from_batch(with_iso))
    assert g[0, 3, 0] == 1.0 and g[0, 3, 2] > 3.0  # with an isocenter the translation counts


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
