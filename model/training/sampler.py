"""Stochastic-gradient Langevin dynamics over the reported offset, with a replay buffer (JEM).

The energy model is conditional: the matrix, isocenter and precision of an input (its
:class:`~model.decoders.energy.features.Context`) stay fixed and the sampler moves the reported
offset ``ρ``
(rotations and translations, in display steps so that one unit is one rounding cell) down the
input energy ``E(x) = −logsumexp_h(−E(x, h))``:
``u ← u − η · clip(∇_u E(x)) + σ · ε``. Chains persist in a replay buffer; each draw restarts a
fraction of them from fresh uniform noise over the offset range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from model.decoders.energy.features import Context


@dataclass(frozen=True, slots=True)
class SamplerConfig:
    """Settings of :class:`LangevinSampler` (``[sampler]`` of config/training.toml)."""

    buffer_size: int = 10_000
    fresh_fraction: float = 0.05
    steps: int = 20
    step_size: float = 1.0
    noise: float = 0.05
    grad_clip: float = 1.0
    batch_size: int = 128
    rotation_range_deg: float = 12.0
    translation_range_mm: float = 25.0

    def __post_init__(self) -> None:
        if self.buffer_size < self.batch_size or self.batch_size <= 0:
            raise ValueError("sampler buffer_size must be at least batch_size > 0")
        if not 0.0 <= self.fresh_fraction <= 1.0:
            raise ValueError("sampler fresh_fraction must be within [0, 1]")
        if self.steps < 0 or self.step_size < 0 or self.noise < 0 or self.grad_clip <= 0:
            raise ValueError("sampler steps, step_size, noise must be >= 0, grad_clip > 0")


#: ``energy_fn(context, rho)`` gives input energies (N,) for offsets ``rho`` (N, 6).
EnergyFn = Callable[[Context, torch.Tensor], torch.Tensor]


class LangevinSampler:
    """SGLD negatives for contrastive divergence, from a persistent replay buffer.

    The buffer holds ``(context index, ρ)`` pairs: which training input's matrix a chain
    belongs to, and where its offset currently is.
    """

    def __init__(self, config: SamplerConfig, n_contexts: int, generator: torch.Generator):
        self.config = config
        self.n_contexts = n_contexts
        self.generator = generator
        self.index = torch.randint(0, n_contexts, (config.buffer_size,), generator=generator)
        self.rho = self.fresh(config.buffer_size)

    def fresh(self, n: int) -> torch.Tensor:
        """Uniform offsets over the range: rotations ±range°, translations ±range mm."""
        c = self.config
        scale = torch.tensor([c.rotation_range_deg] * 3 + [c.translation_range_mm] * 3,
                             dtype=torch.float64)
        return (torch.rand((n, 6), generator=self.generator, dtype=torch.float64) * 2 - 1) * scale

    def sample(self, contexts: Context, energy_fn: EnergyFn) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` negatives: ``(context indices, ρ)``; the buffer is updated."""
        c = self.config
        slots = torch.randint(0, c.buffer_size, (c.batch_size,), generator=self.generator)
        index = self.index[slots].clone()
        rho = self.rho[slots].clone()
        restart = torch.rand(c.batch_size, generator=self.generator) < c.fresh_fraction
        n_new = int(restart.sum())
        if n_new:
            index[restart] = torch.randint(0, self.n_contexts, (n_new,), generator=self.generator)
            rho[restart] = self.fresh(n_new)
        ctx = contexts.index(index)
        rho = self.run_chains(ctx, rho, energy_fn)
        self.index[slots] = index
        self.rho[slots] = rho
        return index, rho

    def run_chains(self, ctx: Context, rho: torch.Tensor, energy_fn: EnergyFn) -> torch.Tensor:
        """``steps`` Langevin steps from ``rho`` in display-step units; returns the end points."""
        c = self.config
        step = ctx.step
        u = (rho / step).detach()
        for _ in range(c.steps):
            u.requires_grad_(True)
            energy = energy_fn(ctx, u * step)
            (grad,) = torch.autograd.grad(energy.sum(), u)
            norm = grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
            grad = grad * torch.clamp(c.grad_clip / norm, max=1.0)
            noise = torch.randn(u.shape, generator=self.generator, dtype=u.dtype)
            u = (u - c.step_size * grad + c.noise * noise).detach()
        return u * step
