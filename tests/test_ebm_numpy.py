"""The NumPy evaluation of the energy model (decoding) against the torch modules (training)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.conventions import HYPOTHESIS_INDEX
from model.decision import DecisionPolicy, decide
from model.decoders.analytic import AnalyticDecoder
from model.decoders.energy.features import context_from_batch
from model.decoders.energy.features import hypothesis_features as torch_features
from model.decoders.energy.inference import (
    TIE_RESOLUTION,
    EnergyDecoder,
    energies,
    load_energy_decoder,
)
from model.decoders.energy.numpy_energy import hypothesis_features as numpy_features
from model.training.data import Role, mixture
from model.training.synth import SynthSet

RANGES = (1.0, 3.0, 10.0)
PRECISIONS = ((0.1, 0.1), (0.1, 1.0), (0.25, 0.5), (1.0, 1.0), (0.5, 0.2))


@pytest.fixture(scope="module")
def data() -> SynthSet:
    """Clean and corrupted cases, with and without isocenter, over several precisions."""
    return mixture(1500, 8080, Role.EVALUATION, RANGES, PRECISIONS, corrupt_fraction=0.3)


@pytest.fixture(scope="module")
def decoder() -> EnergyDecoder:
    return load_energy_decoder(None)


class TorchPathDecoder(EnergyDecoder):
    """The decoder with energies from the torch modules, as training computes them."""

    def energies(self, batch):  # type: ignore[no-untyped-def]
        e = energies(self.net, batch).numpy()
        low = e.min(axis=1, keepdims=True)
        return low + np.round((e - low) / TIE_RESOLUTION) * TIE_RESOLUTION


def test_features_equal_torch_features(data: SynthSet) -> None:
    b = data.batch
    assert not b.has_isocenter.all() and b.has_isocenter.any()
    ctx, rho = context_from_batch(b)
    with torch.no_grad():
        expected = torch_features(ctx, rho).numpy()
    got = numpy_features(b)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_energies_equal_torch_energies(data: SynthSet, decoder: EnergyDecoder) -> None:
    expected = energies(decoder.net, data.batch).numpy()
    got = decoder.numpy_net.energies(data.batch)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_decisions_equal_the_torch_path(data: SynthSet, decoder: EnergyDecoder) -> None:
    reference = TorchPathDecoder(decoder.net, decoder.ood_threshold, decoder.info)
    policy = DecisionPolicy()
    out_ours, out_theirs = decoder.decode(data.batch), reference.decode(data.batch)
    ours = decide(data.batch, out_ours, decoder.info, policy)
    theirs = decide(data.batch, out_theirs, decoder.info, policy)
    kinds = {r.decision for r in ours}
    assert len(kinds) >= 3  # confident, ambiguous and out-of-distribution cases all covered
    post_ours, post_theirs = np.exp(out_ours.log_posterior), np.exp(out_theirs.log_posterior)
    same_top = 0
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.decision == b.decision
        assert a.probability == pytest.approx(b.probability, abs=1e-6)
        assert a.energy == pytest.approx(b.energy, rel=1e-5, abs=1e-4)
        if a.convention == b.convention:
            same_top += 1
        else:  # a tie the float32 arithmetic breaks differently: each is the other's equal
            assert post_theirs[i].max() - post_theirs[i, HYPOTHESIS_INDEX[a.convention]] < 1e-5
            assert post_ours[i].max() - post_ours[i, HYPOTHESIS_INDEX[b.convention]] < 1e-5
        # the same credible set (its order among near-equal probabilities may differ)
        assert {x.convention for x in a.alternatives} | {a.convention} == {
            x.convention for x in b.alternatives} | {b.convention}
    assert same_top >= 0.999 * len(ours)


@pytest.mark.parametrize("which", ["ebm", "analytic"])
def test_residuals_from_the_decoders_implied_offsets(data: SynthSet, decoder: EnergyDecoder,
                                                     which: str) -> None:
    """decide() takes the best convention's residual from the offsets the decoder computed;
    they are the ones model.geometry computes."""
    model = decoder if which == "ebm" else AnalyticDecoder()
    out = model.decode(data.batch)
    assert out.implied_offsets is not None
    policy = DecisionPolicy()
    given = decide(data.batch, out, model.info, policy)
    computed = decide(data.batch, dataclasses.replace(out, implied_offsets=None), model.info,
                      policy)
    for a, b in zip(given, computed, strict=True):
        assert a.residual_rotation_deg == pytest.approx(b.residual_rotation_deg, abs=1e-6)
        if b.residual_translation_mm is None:
            assert a.residual_translation_mm is None
        else:
            assert a.residual_translation_mm == pytest.approx(b.residual_translation_mm, abs=1e-6)
