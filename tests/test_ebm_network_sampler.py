"""Energy network conventions (JEM signs, equivariance) and the Langevin sampler."""

from __future__ import annotations

import pytest
import torch

from model.conventions import N_HYPOTHESES
from model.decoders.energy.features import N_FEATURES, Context
from model.decoders.energy.network import EnergyNet, input_energy, log_posterior
from model.training.sampler import LangevinSampler, SamplerConfig


def test_energy_sign_conventions() -> None:
    e = torch.tensor([[0.0, 2.0, 5.0] + [50.0] * (N_HYPOTHESES - 3)])
    post = log_posterior(e).exp()
    # lower energy, higher probability
    assert post[0, 0] > post[0, 1] > post[0, 2]
    assert post.sum().item() == pytest.approx(1.0)
    ein = input_energy(e)
    # E(x) = −logsumexp(−E(x, ·)) lies just below the lowest hypothesis energy
    assert ein.item() < 0.0
    assert ein.item() == pytest.approx(-torch.logsumexp(-e, dim=1).item())
    # an input no hypothesis explains has a higher energy
    assert input_energy(e + 10.0).item() == pytest.approx(ein.item() + 10.0)


def test_network_is_shared_across_hypotheses() -> None:
    torch.manual_seed(0)
    net = EnergyNet(hidden=16)
    f = torch.randn(5, N_HYPOTHESES, N_FEATURES)
    perm = torch.randperm(N_HYPOTHESES)
    e = net(f)
    assert e.shape == (5, N_HYPOTHESES)
    torch.testing.assert_close(net(f[:, perm]), e[:, perm])
    f2 = f.clone()
    f2[:, 7] = f[:, 3]
    out = net(f2)
    assert out[0, 7] == out[0, 3]  # same features, same energy


def _toy_context(n: int) -> Context:
    theta = torch.zeros(n, N_HYPOTHESES, 6, dtype=torch.float64)
    return Context(theta, torch.ones(n, 6, dtype=torch.float64),
                   torch.full((n, 6), 1e-3, dtype=torch.float64),
                   torch.ones(n, dtype=torch.float64),
                   torch.zeros(n, N_HYPOTHESES, 3, dtype=torch.float64),
                   torch.zeros(n, 3, dtype=torch.float64))


def _quadratic(ctx: Context, rho: torch.Tensor) -> torch.Tensor:
    """Energy lowest at ρ = 2 on every component."""
    return ((rho - 2.0) ** 2).sum(dim=1)


def test_langevin_moves_toward_low_energy_and_refills_buffer() -> None:
    cfg = SamplerConfig(buffer_size=64, fresh_fraction=0.0, steps=200, step_size=0.25,
                        noise=0.01, grad_clip=1.0, batch_size=32)
    sampler = LangevinSampler(cfg, n_contexts=10, generator=torch.Generator().manual_seed(1))
    ctx = _toy_context(10)
    before = _quadratic(ctx, sampler.rho).mean()
    idx, rho = sampler.sample(ctx, _quadratic)
    assert idx.shape == (32,) and rho.shape == (32, 6)
    assert _quadratic(ctx, rho).mean() < 0.05 * before
    # the chains persist in the buffer: those slots now hold the low-energy samples
    assert (_quadratic(ctx, sampler.rho) < 1.0).sum() >= 15
    assert (_quadratic(ctx, sampler.rho) > 1.0).sum() >= 15  # the slots not drawn are untouched


def test_gradient_clipping_bounds_each_step() -> None:
    cfg = SamplerConfig(buffer_size=16, fresh_fraction=0.0, steps=1, step_size=0.5,
                        noise=0.0, grad_clip=1.0, batch_size=16)
    sampler = LangevinSampler(cfg, 4, torch.Generator().manual_seed(3))
    ctx = _toy_context(16)
    start = torch.full((16, 6), 1000.0, dtype=torch.float64)  # huge gradient far away
    end = sampler.run_chains(ctx, start, _quadratic)
    moved = (end - start).norm(dim=1)
    assert torch.all(moved <= 0.5 + 1e-9) and torch.all(moved > 0.49)


def test_fresh_fraction_restarts_from_noise() -> None:
    cfg = SamplerConfig(buffer_size=32, fresh_fraction=1.0, steps=0, batch_size=32,
                        rotation_range_deg=5.0, translation_range_mm=9.0)
    sampler = LangevinSampler(cfg, 4, torch.Generator().manual_seed(4))
    sampler.rho.fill_(1234.0)
    _, rho = sampler.sample(_toy_context(4), _quadratic)
    assert rho[:, :3].abs().max() <= 5.0 and rho[:, 3:].abs().max() <= 9.0
    assert (rho != 1234.0).all()


def test_sampler_is_deterministic_for_a_seed() -> None:
    cfg = SamplerConfig(buffer_size=40, fresh_fraction=0.3, steps=5, batch_size=20)
    runs = []
    for _ in range(2):
        s = LangevinSampler(cfg, 7, torch.Generator().manual_seed(9))
        runs.append(s.sample(_toy_context(7), _quadratic))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_sampler_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SamplerConfig(buffer_size=10, batch_size=20)
    with pytest.raises(ValueError):
        SamplerConfig(fresh_fraction=1.5)
    with pytest.raises(ValueError):
        SamplerConfig(grad_clip=0.0)
