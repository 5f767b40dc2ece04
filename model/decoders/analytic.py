"""The exact analytic decoder: the likelihood of the reported offset under each hypothesis.

A console displays each value rounded to its step ``s``. Under hypothesis ``h`` the matrix
implies an exact offset ``θ_h`` (up to the matrix's DS precision, noise ``σ``); the reported value
``ρ`` is ``round(θ_h + ε)``. So per component ``p(ρ | h) = Φ((s/2 − δ)/σ) − Φ((−s/2 − δ)/σ)``
with ``δ = θ_h − ρ``: one inside the rounding cell, zero outside, smooth only at its edges. The
product over the six components is the likelihood; with a uniform prior over the 96
hypotheses it gives the posterior. This is the physical limit the learned model is measured
against.

Without an isocenter the three translation components give way to the three checks of
:func:`model.geometry.no_isocenter_excess` (docs/contract.md section 3: along the rotation axis,
across it, per component): each is a factor ``Φ(−excess/σ)``, one when the check holds and
zero beyond the matrix's noise ``σ`` (:func:`model.geometry.no_isocenter_sigma`). They are
feasibility, not a density: an isocenter anywhere within ``isocenter_bound_mm`` explains the
translation equally, so no hypothesis gains from a tighter bound than another.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr, logsumexp

from model import __version__
from model.batch import InputBatch
from model.conventions import N_HYPOTHESES, FloatArray
from model.decoder import DecoderOutput, ModelInfo
from model.geometry import (
    implied_offsets,
    no_isocenter_excess,
    no_isocenter_sigma,
    wrap_degrees,
)

#: Lower bound of one component's log-likelihood, to keep energies finite.
LOG_FLOOR = -1.0e4
#: The data are out of distribution when no hypothesis has likelihood above this.
DEFAULT_MIN_LIKELIHOOD = 1e-4


def log_rounding_cell(delta: FloatArray, step: FloatArray, sigma: FloatArray) -> FloatArray:
    """``log P(round(θ + ε) = ρ)`` for ``δ = θ − ρ``, ``ε ~ N(0, σ²)``, elementwise."""
    a = np.abs(delta)
    half = step / 2.0
    upper = log_ndtr((half - a) / sigma)
    lower = log_ndtr(-(half + a) / sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = upper + np.log1p(-np.exp(np.minimum(lower - upper, 0.0)))
    out = np.where(np.isfinite(out), out, LOG_FLOOR)
    return np.maximum(out, LOG_FLOOR)


class AnalyticDecoder:
    """Exact posterior over the 96 conventions under display rounding (docs/contract.md sections
    3-4).

    ``no_isocenter_translation=False`` ignores the translation of inputs without an isocenter
    (contract version 1), for comparisons only.
    """

    def __init__(self, min_likelihood: float = DEFAULT_MIN_LIKELIHOOD,
                 no_isocenter_translation: bool = True) -> None:
        self.min_log_likelihood = math.log(min_likelihood)
        self.no_isocenter_translation = no_isocenter_translation
        self.info = ModelInfo(name="analytic", version=__version__, sha256=None)

    def log_likelihood(self, batch: InputBatch,
                       implied: tuple[FloatArray, FloatArray] | None = None) -> FloatArray:
        """``log p(reported offset | M, h)`` for every input and hypothesis, shape (N, H)."""
        t_h, r_h = implied or implied_offsets(batch.matrix, batch.isocenter_mm)
        noise = np.maximum(batch.orthonormality_error, 1e-12)
        sigma_r = np.degrees(2.0 * noise) + 1e-9
        length = np.linalg.norm(batch.isocenter_mm, axis=1) + np.linalg.norm(
            batch.matrix[:, :3, 3], axis=1
        )
        sigma_t = 2.0 * noise * (length + 1.0) + 1e-9
        d_r = wrap_degrees(r_h - batch.rotation_deg[:, None, :])
        d_t = t_h - batch.translation_mm[:, None, :]
        ll_r = log_rounding_cell(
            d_r, batch.rotation_step_deg[:, None, None], sigma_r[:, None, None]
        ).sum(axis=-1)
        ll_t = log_rounding_cell(
            d_t, batch.translation_step_mm[:, None, None], sigma_t[:, None, None]
        ).sum(axis=-1)
        if not self.no_isocenter_translation or batch.has_isocenter.all():
            return ll_r + np.where(batch.has_isocenter[:, None], ll_t, 0.0)
        excess = no_isocenter_excess(batch.matrix, batch.translation_mm,
                                     batch.translation_step_mm, batch.isocenter_bound_mm, t_h)
        sigma_ni = no_isocenter_sigma(batch.matrix, batch.orthonormality_error,
                                      batch.isocenter_bound_mm)
        ll_ni = np.maximum(log_ndtr(-excess / sigma_ni[:, None, None]), LOG_FLOOR).sum(axis=-1)
        return ll_r + np.where(batch.has_isocenter[:, None], ll_t, ll_ni)

    def decode(self, batch: InputBatch) -> DecoderOutput:
        log_prior = -math.log(N_HYPOTHESES)
        implied = implied_offsets(batch.matrix, batch.isocenter_mm)
        joint = self.log_likelihood(batch, implied) + log_prior
        log_evidence = logsumexp(joint, axis=1)
        return DecoderOutput(
            log_posterior=joint - log_evidence[:, None],
            energy=-log_evidence,
            out_of_distribution=joint.max(axis=1) - log_prior < self.min_log_likelihood,
            implied_offsets=implied,
        )
