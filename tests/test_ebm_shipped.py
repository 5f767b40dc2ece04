"""The shipped energy model: loads, matches its card, is the default, and is never confidently
wrong on fresh cases (seeds not used in training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.decision import DecisionKind, DecisionPolicy, decide
from model.decoders.analytic import AnalyticDecoder
from model.decoders.energy.card import ModelCard
from model.decoders.energy.inference import (
    CARD_NAME,
    load_energy_decoder,
    sha256_of,
    shipped_weights_path,
)
from model.decoders.registry import DEFAULT_MODEL, load_decoder
from model.pipeline import DecodeOptions, decode_dataset
from model.training.baseline import BASELINE_NAME
from model.training.data import Role, mixture
from model.training.evaluation import evaluate_decoder, unexplained_mask

WEIGHTS = shipped_weights_path()
CARD = WEIGHTS.parent / CARD_NAME
RANGES = (1.0, 3.0, 6.0, 10.0)
PRECISIONS = ((0.1, 0.1), (0.1, 1.0), (0.25, 0.5), (1.0, 1.0), (1.0, 0.1), (0.5, 0.2))


@pytest.fixture(scope="module")
def decoder():  # type: ignore[no-untyped-def]
    return load_energy_decoder(None)


def test_weights_are_small_and_match_the_card(decoder) -> None:  # type: ignore[no-untyped-def]
    assert WEIGHTS.stat().st_size < 2_000_000
    card = ModelCard.read(CARD)
    assert card.sha256 == sha256_of(WEIGHTS) == decoder.info.sha256
    assert decoder.info.name == "ebm" and decoder.info.version == card.version
    assert decoder.ood_threshold == pytest.approx(card.ood_threshold)
    assert card.training_seconds is not None and card.training_seconds < 15 * 60
    assert card.held_out["validation_clean"]["confident_wrong"] == 0
    base = WEIGHTS.parent / BASELINE_NAME
    assert json.loads(CARD.read_text())["baseline"]["sha256"] == sha256_of(base)


def test_default_model_is_the_energy_model() -> None:
    assert DEFAULT_MODEL == "ebm"
    d = load_decoder(None)
    assert d.info.name == "ebm" and d.info.sha256 == sha256_of(WEIGHTS)
    assert load_decoder(str(WEIGHTS)).info.sha256 == d.info.sha256


def test_never_confident_and_wrong_on_fresh_cases(decoder) -> None:  # type: ignore[no-untyped-def]
    data = mixture(600, 424242, Role.EVALUATION, RANGES, PRECISIONS, corrupt_fraction=0.25)
    analytic = AnalyticDecoder().decode(data.batch)
    unexplained = unexplained_mask(data, analytic)
    policy = DecisionPolicy()
    m = evaluate_decoder(decoder, data, policy, unexplained).metrics
    a = evaluate_decoder(AnalyticDecoder(), data, policy, unexplained).metrics
    assert m.n_clean > 400 and m.n_unexplained > 50
    assert m.confident_wrong == 0
    assert m.confident >= 0.97 * a.confident
    assert m.coverage >= 0.99
    assert m.ood_recall >= 0.95
    assert m.false_alarm_rate <= 0.01


def test_coarse_precision_ambiguity_is_never_called_confident(decoder) -> None:  # type: ignore[no-untyped-def]
    data = mixture(300, 515151, Role.EVALUATION, (3.0, 10.0), ((1.0, 1.0),))
    policy = DecisionPolicy(tolerance_mm=0.25)
    ana = decide(data.batch, AnalyticDecoder().decode(data.batch), AnalyticDecoder().info, policy)
    ebm = decide(data.batch, decoder.decode(data.batch), decoder.info, policy)
    ambiguous = [i for i, r in enumerate(ana) if r.decision is DecisionKind.AMBIGUOUS]
    assert len(ambiguous) > 20  # the check has cases to bite on
    assert all(ebm[i].decision is not DecisionKind.CONFIDENT for i in ambiguous)


def test_garbage_offsets_are_out_of_distribution(decoder) -> None:  # type: ignore[no-untyped-def]
    data = mixture(200, 616161, Role.EVALUATION, (3.0,), ((0.1, 0.1),), isocenter_fraction=1.0)
    b = data.batch
    rng = np.random.default_rng(0)
    shuffled = type(b)(b.matrix, b.translation_mm + rng.choice([-5.0, 5.0], (200, 3)),
                       b.rotation_deg, b.isocenter_mm, b.has_isocenter, b.rotation_step_deg,
                       b.translation_step_mm, b.orthonormality_error)
    out = decoder.decode(shuffled)
    assert out.out_of_distribution.all()
    clean = decoder.decode(b)
    assert np.median(out.energy) > np.median(clean.energy) + 3.0  # unexplained: higher energy


def test_record_through_the_pipeline_names_the_model(valid_sro, decoder) -> None:  # type: ignore[no-untyped-def]
    record = decode_dataset(valid_sro, decoder, DecodeOptions())
    d = record.as_dict()
    assert d["decision"] == "confident"
    assert d["convention"]["order"] == "xyz" and d["convention"]["patient_position"] == "HFS"
    assert d["convention"]["inverse"] is False
    assert d["model"] == {"name": "ebm", "version": decoder.info.version,
                          "sha256": sha256_of(Path(WEIGHTS))}
    assert d["energy"] < decoder.ood_threshold


def test_conventions_that_explain_the_data_equally_tie_exactly(decoder) -> None:  # type: ignore[no-untyped-def]
    import torch

    from model.decoders.energy.features import context_from_batch, hypothesis_features

    data = mixture(200, 717171, Role.EVALUATION, (3.0,), ((1.0, 1.0),))
    feats = hypothesis_features(*context_from_batch(data.batch))
    post = decoder.decode(data.batch).log_posterior
    checked = 0
    for i in range(len(data)):
        inside = torch.nonzero(feats[i, :, 0] == -1).flatten().tolist()
        same = [k for k in inside if torch.equal(feats[i, k], feats[i, inside[0]])]
        if len(same) >= 2:
            checked += 1
            assert len({float(post[i, k]) for k in same}) == 1
    assert checked > 50


def test_a_file_that_is_not_energy_weights_is_a_usage_error(tmp_path: Path) -> None:
    from model.decoders.registry import UnknownModelError

    bogus = tmp_path / "weights.pt"
    bogus.write_bytes(b"not torch")
    with pytest.raises(UnknownModelError):
        load_decoder(str(bogus))
    with pytest.raises(UnknownModelError, match="not an energy-model weights file"):
        load_decoder(str(WEIGHTS.parent / "baseline.pt"))
