"""Pairing companions with SROs (docs/contract.md section 1): nearest in time, same patient and
study, within the window; ties and shared SROs are ambiguous, never guessed."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from model.inputs.pairing import PairingKey, PairingState, pair

T0 = dt.datetime(2024, 5, 6, 9, 30, 0)


def key(uid: str, seconds: float, patient: str = "P1", study: str = "S1") -> PairingKey:
    return PairingKey(uid, patient, study, T0 + dt.timedelta(seconds=seconds))


def test_nearest_sro_of_the_same_patient_and_study_is_chosen() -> None:
    sros = [key("sro.a", 0), key("sro.b", 300), key("sro.c", 20, patient="P2"),
            key("sro.d", 25, study="S2")]
    result = pair([key("rps.1", 30)], sros)
    got = result.by_companion["rps.1"]
    assert got.state is PairingState.PAIRED
    assert got.sro is not None and got.sro.sop_instance_uid == "sro.a"
    assert got.seconds == 30
    assert result.by_sro["sro.a"].companion == key("rps.1", 30)
    assert set(result.by_sro) == {"sro.a"}


def test_outside_the_window_or_without_time_is_unpaired() -> None:
    result = pair([key("rps.1", 601), PairingKey("rps.2", "P1", "S1", None)], [key("sro.a", 0)])
    assert result.by_companion["rps.1"].state is PairingState.UNPAIRED
    assert "600 s" in result.by_companion["rps.1"].sentence
    assert result.by_companion["rps.2"].state is PairingState.UNPAIRED
    assert result.by_sro == {}
    assert pair([key("rps.1", 601)], [key("sro.a", 0)], window_s=700).by_companion[
        "rps.1"].state is PairingState.PAIRED


def test_two_sros_equally_near_is_ambiguous_with_both_candidates() -> None:
    result = pair([key("rps.1", 100)], [key("sro.a", 0), key("sro.b", 200)])
    got = result.by_companion["rps.1"]
    assert got.state is PairingState.AMBIGUOUS and got.flagged
    assert [s.sop_instance_uid for s in got.candidates] == ["sro.a", "sro.b"]
    assert got.sro is None


def test_two_companions_for_one_sro_is_ambiguous_for_all_three() -> None:
    result = pair([key("rps.1", 10), key("rps.2", -20)], [key("sro.a", 0), key("sro.b", 5000)])
    for uid in ("rps.1", "rps.2"):
        assert result.by_companion[uid].state is PairingState.AMBIGUOUS
        assert result.by_companion[uid].sro is None
    sro = result.by_sro["sro.a"]
    assert sro.state is PairingState.AMBIGUOUS and sro.companion is None
    assert [c.sop_instance_uid for c in sro.competitors] == ["rps.1", "rps.2"]
    assert "rps.1" in sro.sentence and "rps.2" in sro.sentence


def test_order_of_arrival_does_not_matter() -> None:
    comps = [key("rps.1", 10), key("rps.2", 610), key("rps.3", 1290)]
    sros = [key("sro.a", 0), key("sro.b", 600), key("sro.c", 1200), key("sro.d", 1400)]
    expected = pair(comps, sros)
    for c_order, s_order in itertools.product(itertools.permutations(comps),
                                              itertools.permutations(sros)):
        assert pair(c_order, s_order) == expected
    assert {u: p.sro.sop_instance_uid for u, p in expected.by_companion.items() if p.sro} == {
        "rps.1": "sro.a", "rps.2": "sro.b", "rps.3": "sro.c"}


def test_aware_and_naive_times_are_never_compared_and_window_must_be_positive() -> None:
    aware = PairingKey("sro.a", "P1", "S1", T0.replace(tzinfo=dt.UTC))
    assert pair([key("rps.1", 0)], [aware]).by_companion["rps.1"].state is PairingState.UNPAIRED
    with pytest.raises(ValueError):
        pair([], [], window_s=0)
