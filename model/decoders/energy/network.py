"""The energy network: one small MLP shared by all 96 hypotheses (permutation-equivariant).

``E(x, h) = f(φ(x, h))`` with ``φ`` the residual features of :mod:`model.decoders.energy.features`;
the
posterior is ``softmax(−E(x, ·))`` and the input energy ``−logsumexp(−E(x, ·))`` (JEM: lower is
more plausible).
"""

from __future__ import annotations

import torch
from torch import nn

from model.decoders.energy.features import N_FEATURES


class EnergyNet(nn.Module):
    """Per-hypothesis energies from per-hypothesis features, weights shared across hypotheses."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = hidden
        self.body = nn.Sequential(
            nn.Linear(N_FEATURES, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.head = nn.Linear(hidden, 1)
        # a learned output scale (log-parameterised): energies of conventions that leave a
        # residual outside the rounding cell must grow far above those that explain the data,
        # and an additive step on a log scale gets there in few iterations
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, H, F) features to (N, H) energies ``E(x, h)``."""
        return self.head(self.body(features)).squeeze(-1) * self.log_scale.exp()


def input_energy(energy: torch.Tensor) -> torch.Tensor:
    """``E(x) = −logsumexp_h(−E(x, h))`` for (N, H) energies."""
    return -torch.logsumexp(-energy, dim=-1)


def log_posterior(energy: torch.Tensor) -> torch.Tensor:
    """``log softmax(−E(x, ·))``."""
    return torch.log_softmax(-energy, dim=-1)
