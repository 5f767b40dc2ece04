"""Consoles over time (docs/contract.md sections 4, 6, 7): learning, the console check, history
as a prior, the change detector, likely causes, and the records a physicist reads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.batch import InputBatch
from model.consoles import (
    ConsoleState,
    Establishment,
    EventKind,
    HistoryPolicy,
    OrderDirection,
    assess,
    combine_with_history,
)
from model.consoles.causes import OtherRegistration, likely_causes
from model.conventions import HYPOTHESES, Convention, PatientPosition, RotationOrder
from model.decision import (
    Candidate,
    CauseKind,
    CheckResult,
    Component,
    DecisionKind,
    DecisionPolicy,
    decide,
)
from model.decoders.analytic import AnalyticDecoder
from model.geometry import forward, rotation_block_error
from model.training.console_eval import replay, summarise
from model.training.histories import EventKind as HistoryEvent
from model.training.histories import HistoryConfig, generate_histories, offset_of
from model.training.synth import Corruption, SynthConfig, generate

DECODER = AnalyticDecoder()


def _records(config: SynthConfig):  # type: ignore[no-untyped-def]
    data = generate(config)
    recs = decide(data.batch, DECODER.decode(data.batch), DECODER.info, DecisionPolicy())
    offsets = [dataclasses.replace(offset_of_synth(data, j)) for j in range(len(data))]
    return data, [dataclasses.replace(r, offset=o) for r, o in zip(recs, offsets, strict=True)]


def offset_of_synth(data, j):  # type: ignore[no-untyped-def]
    from model.offset import CouchOffset
    b = data.batch
    return CouchOffset(tuple(map(float, b.translation_mm[j])), tuple(map(float, b.rotation_deg[j])),
                       tuple(map(float, b.isocenter_mm[j])) if b.has_isocenter[j] else None)


def test_order_direction_parse() -> None:
    assert OrderDirection.parse("XYZ/Direct") == OrderDirection(RotationOrder.XYZ, False)
    assert str(OrderDirection.parse("zyx/inverse")) == "zyx/inverse"
    for bad in ("xyz", "abc/direct", "xyz/backwards"):
        with pytest.raises(ValueError):
            OrderDirection.parse(bad)


def test_records_say_equivalent_probability_settled_and_open() -> None:
    _, recs = _records(SynthConfig(n=60, seed=5))
    confident = [r for r in recs if r.decision is DecisionKind.CONFIDENT]
    assert confident
    for r in confident:
        assert r.equivalent_probability is not None and r.equivalent_probability >= 0.99
        assert set(r.settled) | set(r.open) == set(Component)
        if r.open:
            assert r.reason and "not determined" in r.reason
        else:
            assert r.reason is None
    d = confident[0].as_dict()
    assert "equivalent_probability" in d and "settled" in d and "posterior" not in d


def test_learns_after_five_confident_then_checks() -> None:
    cfg = HistoryConfig(n_consoles=1, fractions=12, seed=3, isocenter_share=1.0, wide_share=0.0)
    data = generate_histories(cfg)
    recs = decide(data.batch, DECODER.decode(data.batch), DECODER.info, DecisionPolicy())
    state = ConsoleState()
    results, events = [], []
    for j in range(len(recs)):
        rec = dataclasses.replace(recs[j], offset=offset_of(data, j),
                                  declared_patient_position=data.declared[j])
        a = assess(state, rec, patient=data.patient[j])
        state = a.state
        results.append(a.check.result)
        events += [k for k, _ in a.events]
    assert results[:5] == [CheckResult.NOT_CHECKED] * 5  # learning
    assert EventKind.LEARNED in events
    assert state.established is not None and state.established.how is Establishment.LEARNED
    truth = OrderDirection.of(Convention.from_dict(
        {"order": "xyz", "inverse": False, "patient_position": "HFS"}))
    del truth
    assert set(results[5:]) == {CheckResult.CONSISTENT}


def test_commissioned_console_flags_a_direction_change() -> None:
    _, recs = _records(SynthConfig(n=40, seed=8, n_consoles=1))
    rec = next(r for r in recs if r.decision is DecisionKind.CONFIDENT)
    assert rec.convention is not None
    own = OrderDirection.of(rec.convention)
    flipped = OrderDirection(own.order, not own.inverse)
    ok = assess(ConsoleState().commissioned(frozenset({own}), "Dr Test", "phantom"), rec)
    assert ok.check.result is CheckResult.CONSISTENT
    bad = assess(ConsoleState().commissioned(frozenset({flipped}), "Dr Test", "phantom"), rec)
    assert bad.check.result is CheckResult.CHANGED
    assert bad.state.changed and bad.check.details["displacement_mm"] > 1.0
    assert str(flipped) in bad.check.sentence and str(rec.convention) in bad.check.sentence
    # a changed console stops learning; commissioning again clears it
    assert bad.state.commissioned(frozenset({own}), "Dr Test", None).changed is False


def test_history_prior_resolves_only_to_expected() -> None:
    post = np.full((1, 96), 1e-6)
    a, b = Convention(RotationOrder.XYZ, False, PatientPosition.HFS), Convention(
        RotationOrder.XYZ, True, PatientPosition.HFS)
    post[0, a.index] = post[0, b.index] = 0.5
    mask = np.zeros((1, 96), dtype=bool)
    mask[0, b.index] = True
    combined = combine_with_history(post / post.sum(), mask, 1e-3)
    assert combined[0, b.index] > 0.99 and combined[0, a.index] < 0.01


def test_change_detector_accumulates_ambiguous_evidence() -> None:
    """Each SRO alone holds the established convention in its credible set, but together they
    favour another: the detector flags it (the per-SRO check alone would not)."""
    _, recs = _records(SynthConfig(n=40, seed=8, n_consoles=1))
    rec = next(r for r in recs if r.decision is DecisionKind.CONFIDENT)
    assert rec.convention is not None
    own = OrderDirection.of(rec.convention)
    other = OrderDirection(own.order, not own.inverse)
    post = np.full(96, 1e-9)
    post[rec.convention.index] = 0.8
    post[Convention(other.order, other.inverse, rec.convention.patient_position).index] = 0.2
    post /= post.sum()
    state = ConsoleState().commissioned(frozenset({other}), "x", None)
    policy = HistoryPolicy(sprt_threshold=3.0)
    seen = []
    for _ in range(5):
        fake = dataclasses.replace(rec, posterior=tuple(post), alternatives=(), checks=())
        # the credible set "holds" the expected pair: only the likelihood ratio can flag it
        fake = dataclasses.replace(fake, convention=Convention(
            other.order, other.inverse, rec.convention.patient_position))
        a = assess(state, fake, policy=policy)
        seen.append(a.check.result)
        state = a.state
    assert seen[0] is CheckResult.CONSISTENT
    assert CheckResult.CHANGED in seen
    changed = seen.index(CheckResult.CHANGED)
    assert changed >= 1  # not on the first: the evidence had to accumulate


@pytest.mark.parametrize("kind,cause", [
    (Corruption.CENTIMETRES, CauseKind.CENTIMETRES_AS_MM),
    (Corruption.RADIANS, CauseKind.RADIANS),
    (Corruption.SIGN_FLIP, CauseKind.ROTATION_SIGN),
])
def test_likely_causes_right_first(kind: Corruption, cause: CauseKind) -> None:
    data = generate(SynthConfig(n=60, seed=21, corrupt_fraction=1.0, corruptions=(kind,)))
    out = DECODER.decode(data.batch)
    ood = np.flatnonzero(out.out_of_distribution)
    assert len(ood) > 40
    causes = likely_causes(data.batch.subset(ood))
    right = sum(bool(c) and c[0].kind is cause for c in causes)
    assert right >= 0.95 * len(ood)


def test_likely_causes_translation_sign_and_relabel() -> None:
    data = generate(SynthConfig(n=60, seed=22))
    b = data.batch
    t = b.translation_mm.copy()
    t[:, 0] = -t[:, 0]
    r = b.rotation_deg[:, [1, 2, 0]] * np.array([1.0, 1.0, -1.0])  # MOSAIQ-like naming
    for changed, cause in ((dataclasses.replace(b, translation_mm=t), CauseKind.TRANSLATION_SIGN),
                           (dataclasses.replace(b, rotation_deg=r), CauseKind.AXES_RELABELLED)):
        assert isinstance(changed, InputBatch)
        ood = np.flatnonzero(DECODER.decode(changed).out_of_distribution)
        assert len(ood) > 30
        # the declared patient position (the truth's) breaks ties between explanations
        truth = [HYPOTHESES[int(k)].patient_position for k in data.truth[ood]]
        expected = np.array([[h.patient_position is q for h in HYPOTHESES] for q in truth])
        if cause is CauseKind.TRANSLATION_SIGN:  # ties with a rotation's sign without it
            assert sum(bool(c) and c[0].kind is cause
                       for c in likely_causes(changed.subset(ood))) < len(ood)
        causes = likely_causes(changed.subset(ood), expected=expected)
        assert sum(bool(c) and c[0].kind is cause for c in causes) >= 0.95 * len(ood)


def test_likely_cause_another_registration_names_the_registration_that_fits() -> None:
    """docs/contract.md section 7, last entry: the reported offset is another registration's."""
    data = generate(SynthConfig(n=40, seed=23, corrupt_fraction=1.0,
                                corruptions=(Corruption.OTHER_REGISTRATION,)))
    b = data.batch
    ood = np.flatnonzero(DECODER.decode(b).out_of_distribution)
    assert len(ood) > 30
    implied = forward(b.translation_mm[ood], b.rotation_deg[ood], b.isocenter_mm[ood])
    fits = [implied[k, int(data.truth[j])] for k, j in enumerate(ood)]
    decoy = Candidate("1.2.3", "Align.Mask1", None, 2, 3)
    clip = Candidate("1.2.3", "Align.Clip1", None, 2, 2)
    others = [(OtherRegistration(decoy, b.matrix[j]), OtherRegistration(clip, fits[k]))
              for k, j in enumerate(ood)]
    causes = likely_causes(b.subset(ood), others=others)
    first = [c[0] for c in causes if c]
    assert len(first) == len(ood)
    assert all(c.kind is CauseKind.OTHER_REGISTRATION and c.registration == clip
               and "Align.Clip1" in c.sentence for c in first)
    # the convention named explains that registration's matrix as well as the truth does
    ll = DECODER.log_likelihood(dataclasses.replace(  # with the registration's own DS noise
        b.subset(ood), matrix=np.array(fits),
        orthonormality_error=rotation_block_error(np.array(fits))[0]))
    truth = data.truth[ood]
    assert all(ll[k, c.convention.index] >= ll[k, truth[k]] - 1e-6 >= DECODER.min_log_likelihood
               for k, c in enumerate(first))
    only_decoy = likely_causes(b.subset(ood), others=[o[:1] for o in others])
    assert not any(x.kind is CauseKind.OTHER_REGISTRATION for c in only_decoy for x in c)
    assert only_decoy == likely_causes(b.subset(ood))  # no other registration: as before


def test_small_history_replay() -> None:
    data = generate_histories(HistoryConfig(n_consoles=24, fractions=20, seed=7, event_share=0.6,
                                            events=(HistoryEvent.DIRECTION_FLIP,),
                                            event_window=(10, 15)))
    figures = summarise(data, replay(data, DECODER))
    assert figures["stable"]["changed_flags"] == 0
    flip = figures["events"]["direction_flip"]
    assert flip["missed"] == 0 and flip["flagged"] >= 1
    assert flip["worst_delay_fractions"] == 0
