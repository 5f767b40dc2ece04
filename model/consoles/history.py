"""A console's history as evidence (docs/contract.md section 6): learning its convention, the
``console_convention`` check, the answer history gives an ambiguous decision, and a sequential
change detector.

- **Learning.** After ``learn_after`` consecutive ``confident`` decisions whose (order,
  direction) sets (the pairs of each credible set) have a common member, the intersection is
  established as ``learned``. Later confident, consistent decisions narrow a learned set to the
  pairs they share with it (never to nothing). A commissioned set is what the person gave.
- **The check.** ``consistent`` when the credible set holds a hypothesis clinically equivalent to
  an expected one (an established pair with the patient's position: the declared one, else the
  one this patient's earlier confident decisions settled, else any), ``changed`` when it does not,
  ``not_checked`` when nothing is established or the decision has no credible set.
- **History as a prior.** The posterior times a prior giving the expected hypotheses
  ``1 − error_rate`` of the mass (spread evenly) and the others ``error_rate``: the decision the
  expected hypotheses give with the console's history (``resolved``).
- **Change detector.** A CUSUM form of the sequential likelihood-ratio test between the
  established set and each other pair: ``S_k ← max(0, S_k + log L_k − log L_E)`` per decision,
  with ``L`` the likelihood (the posterior under the decoder's uniform prior) averaged over the
  expected positions. ``S_k ≥ sprt_threshold`` flags ``changed`` even when each SRO alone is
  ambiguous; the statistic restarts after each alarm. The threshold is set on held-out synthetic
  histories (``bench/bench_consoles.py --calibrate``) and written in the model card.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np

from model.consoles.convention import (
    PAIR_OF_HYPOTHESIS,
    PAIRS,
    POSITIONS,
    Establishment,
    OrderDirection,
    expected_mask,
    pairs_text,
)
from model.conventions import HYPOTHESES, Convention, PatientPosition
from model.decision import (
    Check,
    CheckName,
    CheckResult,
    Component,
    DecisionKind,
    DecisionPolicy,
    DecodeRecord,
    credible_sets,
)
from model.geometry import displacement_bound_mm, forward

#: the SRO-decoded decisions a console's history speaks to
_DECODED = (DecisionKind.CONFIDENT, DecisionKind.AMBIGUOUS)


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """The settings of a console's history (``[consoles]`` in the node's settings).

    ``error_rate`` is the stated prior probability that a decision of an established console does
    not follow its convention; ``sprt_threshold`` the log-likelihood ratio that flags a change;
    ``sprt_step_cap`` bounds one decision's contribution to it (one SRO alone flags through the
    check, not through the detector)."""

    learn_after: int = 5
    error_rate: float = 1e-3
    sprt_threshold: float = 3.0  # set on held-out histories (bench_consoles.py, model card)
    sprt_step_cap: float = 8.0
    likelihood_floor: float = 1e-12

    def __post_init__(self) -> None:
        if self.learn_after < 1:
            raise ValueError("learn_after must be at least 1")
        if not 0 < self.error_rate < 1:
            raise ValueError("error_rate must be in (0, 1)")
        if not self.sprt_threshold > 0 or not self.sprt_step_cap > 0:
            raise ValueError("sprt_threshold and sprt_step_cap must be positive")


@dataclass(frozen=True, slots=True)
class Established:
    """A console's established convention: its pairs and how (who and why for a person)."""

    pairs: frozenset[OrderDirection]
    how: Establishment
    by: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": [str(p) for p in sorted(self.pairs)], "how": self.how.value,
                "by": self.by, "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Established:
        return cls(frozenset(OrderDirection.parse(p) for p in data["pairs"]),
                   Establishment(data["how"]), data.get("by"), data.get("note"))

    def __str__(self) -> str:
        return f"{pairs_text(self.pairs)} ({self.how.value})"


@dataclass(frozen=True, slots=True)
class ConsoleState:
    """What the history of one console has established (JSON through ``as_dict``)."""

    established: Established | None = None
    #: the running intersection of the current streak of confident decisions, and its length
    streak_pairs: frozenset[OrderDirection] = frozenset()
    streak: int = 0
    #: a ``changed`` check stopped learning until a person commissions or confirms
    changed: bool = False
    #: the change detector's statistic per pair of :data:`PAIRS`
    cusum: tuple[float, ...] = (0.0,) * len(PAIRS)
    #: the position each patient's confident decisions settled (keyed by a hash of Patient ID)
    positions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "established": None if self.established is None else self.established.as_dict(),
            "streak_pairs": [str(p) for p in sorted(self.streak_pairs)],
            "streak": self.streak, "changed": self.changed,
            "cusum": [round(v, 6) for v in self.cusum], "positions": dict(self.positions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ConsoleState:
        if not data:
            return cls()
        est = data.get("established")
        cusum = tuple(float(v) for v in data.get("cusum") or ())
        return cls(
            established=None if est is None else Established.from_dict(est),
            streak_pairs=frozenset(OrderDirection.parse(p) for p in data.get("streak_pairs", ())),
            streak=int(data.get("streak", 0)), changed=bool(data.get("changed", False)),
            cusum=cusum if len(cusum) == len(PAIRS) else (0.0,) * len(PAIRS),
            positions={str(k): str(v) for k, v in (data.get("positions") or {}).items()},
        )

    def commissioned(self, pairs: frozenset[OrderDirection], by: str,
                     note: str | None) -> ConsoleState:
        """A person established ``pairs``: always wins over a learned set; clears ``changed``."""
        return replace(self, established=Established(pairs, Establishment.COMMISSIONED, by, note),
                       changed=False, cusum=(0.0,) * len(PAIRS), streak=0,
                       streak_pairs=frozenset())

    def decommissioned(self) -> ConsoleState:
        """Nothing established any more: the console learns again from its next decisions."""
        return replace(self, established=None, changed=False, cusum=(0.0,) * len(PAIRS),
                       streak=0, streak_pairs=frozenset())


class EventKind(str, Enum):
    """What a decision changed in a console's history (an added record each)."""

    LEARNED = "learned"
    NARROWED = "narrowed"
    CHANGED = "changed"
    COMMISSIONED = "commissioned"
    DECOMMISSIONED = "decommissioned"


@dataclass(frozen=True, slots=True)
class Assessment:
    """One decision against its console's history: the check, the new state, what changed."""

    check: Check
    state: ConsoleState
    events: tuple[tuple[EventKind, Established | None], ...] = ()
    #: for an ambiguous decision that the history settles: the convention it gives
    resolved: Convention | None = None


def patient_key(patient_id: str | None) -> str | None:
    """A Patient ID as the history keeps it: the first 16 hex digits of its SHA-256."""
    if not patient_id:
        return None
    return hashlib.sha256(patient_id.encode("utf-8", "replace")).hexdigest()[:16]


def _credible(record: DecodeRecord) -> list[int]:
    assert record.convention is not None
    return [record.convention.index, *(a.convention.index for a in record.alternatives)]


def _declared(record: DecodeRecord) -> PatientPosition | None:
    try:
        return None if record.declared_patient_position is None else PatientPosition(
            record.declared_patient_position.strip().upper())
    except ValueError:
        return None


def expected_positions(state: ConsoleState, record: DecodeRecord,
                       patient: str | None) -> tuple[PatientPosition, ...] | None:
    """The patient's position: the declared one, else the settled one, else unknown."""
    declared = _declared(record)
    if declared is not None:
        return (declared,)
    settled = state.positions.get(patient) if patient else None
    return None if settled is None else (PatientPosition(settled),)


def combine_with_history(posterior: np.ndarray, expected: np.ndarray,
                         error_rate: float) -> np.ndarray:
    """The posterior (N, H) times the console's prior: the expected hypotheses (N, H) share
    ``1 − error_rate``, the others ``error_rate``; renormalised per row."""
    n_exp = expected.sum(axis=-1, keepdims=True)
    n_other = expected.shape[-1] - n_exp
    prior = np.where(expected, (1.0 - error_rate) / np.maximum(n_exp, 1),
                     error_rate / np.maximum(n_other, 1))
    joint = posterior * prior
    return joint / np.maximum(joint.sum(axis=-1, keepdims=True), 1e-300)


def _no_check(sentence: str) -> Check:
    return Check(CheckName.CONSOLE_CONVENTION, CheckResult.NOT_CHECKED, sentence)


def assess(state: ConsoleState, record: DecodeRecord, *, patient: str | None = None,
           policy: HistoryPolicy | None = None,
           decision_policy: DecisionPolicy | None = None) -> Assessment:
    """The ``console_convention`` check of ``record`` and the console's next state."""
    policy = policy or HistoryPolicy()
    decision_policy = decision_policy or DecisionPolicy()
    est = state.established
    decoded = record.decision in _DECODED and record.convention is not None \
        and record.offset is not None
    if not decoded:
        if est is None:
            return Assessment(_no_check("nothing is established for this console yet"), state)
        if record.decision is DecisionKind.NO_OFFSET:
            return Assessment(_no_check(
                f"no offset to check; the console's convention {est} implies the offset "
                "listed for those conventions"), state)
        if record.decision is DecisionKind.OUT_OF_DISTRIBUTION:
            streak_reset = replace(state, streak=0, streak_pairs=frozenset())
            return Assessment(_no_check(
                f"no convention explains the data, so none is compared with {est}"),
                streak_reset if est is None else state)
        return Assessment(_no_check(f"{record.decision.value}: nothing to compare"), state)
    members = _credible(record)
    positions = expected_positions(state, record, patient)
    if est is None:
        return _learn(state, record, members, positions, patient, policy)
    return _check(state, record, members, positions, patient, policy, decision_policy)


def _member_pairs(members: list[int],
                  positions: tuple[PatientPosition, ...] | None) -> frozenset[OrderDirection]:
    keep = [k for k in members if positions is None or HYPOTHESES[k].patient_position in positions]
    return frozenset(PAIRS[int(PAIR_OF_HYPOTHESIS[k])] for k in (keep or members))


def _settle(state: ConsoleState, record: DecodeRecord, patient: str | None) -> ConsoleState:
    if (patient and record.decision is DecisionKind.CONFIDENT and record.convention is not None
            and Component.PATIENT_POSITION in record.settled and patient not in state.positions
            and _declared(record) is None):
        positions = dict(state.positions)
        positions[patient] = record.convention.patient_position.value
        return replace(state, positions=positions)
    return state


def _learn(state: ConsoleState, record: DecodeRecord, members: list[int],
           positions: tuple[PatientPosition, ...] | None, patient: str | None,
           policy: HistoryPolicy) -> Assessment:
    check = _no_check("nothing is established for this console yet")
    if state.changed:
        return Assessment(check, state)
    if record.decision is not DecisionKind.CONFIDENT:
        return Assessment(check, replace(state, streak=0, streak_pairs=frozenset()))
    pairs = _member_pairs(members, positions)
    common = state.streak_pairs & pairs if state.streak else pairs
    streak = state.streak + 1 if common else 1
    common = common or pairs
    new = _settle(replace(state, streak=streak, streak_pairs=common), record, patient)
    if streak >= policy.learn_after:
        learned = Established(common, Establishment.LEARNED)
        new = replace(new, established=learned, streak=0, streak_pairs=frozenset())
        return Assessment(check, new, ((EventKind.LEARNED, learned),))
    return Assessment(check, new)


def _displacements(record: DecodeRecord, rows: list[int], cols: np.ndarray,
                   radius_mm: float) -> np.ndarray:
    o = record.offset
    assert o is not None
    iso = np.zeros(3) if o.isocenter_mm is None else np.asarray(o.isocenter_mm, float)
    pred = forward(np.asarray(o.translation_mm)[None], np.asarray(o.rotation_deg)[None],
                   iso[None])[0]  # (H, 4, 4)
    return displacement_bound_mm(pred[rows][:, None], pred[cols][None, :], iso, radius_mm)


def _check(state: ConsoleState, record: DecodeRecord, members: list[int],
           positions: tuple[PatientPosition, ...] | None, patient: str | None,
           policy: HistoryPolicy, decision_policy: DecisionPolicy) -> Assessment:
    est = state.established
    assert est is not None and record.convention is not None
    mask = expected_mask(est.pairs, positions)
    cols = np.flatnonzero(mask)
    disp = _displacements(record, members, cols, decision_policy.radius_mm)  # (C, X)
    tol = decision_policy.tolerance_mm
    consistent = bool((disp <= tol).any())
    where = "" if positions is None else f" with the patient's {positions[0].value}"
    expected_text = f"{pairs_text(est.pairs)}{where}"
    details: dict[str, Any] = {
        "established": est.as_dict(),
        "expected": [str(HYPOTHESES[int(k)]) for k in cols],
        "decoded": str(record.convention),
        "displacement_mm": round(float(disp[0].min()), 3),
    }
    events: list[tuple[EventKind, Established | None]] = []
    new = state
    resolved: Convention | None = None

    # the change detector, on the likelihood of each pair against the established set
    post = np.asarray(record.posterior, dtype=np.float64)
    cusum = np.asarray(state.cusum, dtype=np.float64)
    alarm: int | None = None
    if post.size == len(HYPOTHESES):
        pos_mask = expected_mask(PAIRS, positions)
        floor = policy.likelihood_floor
        pair_lik = np.array([post[(k == PAIR_OF_HYPOTHESIS) & pos_mask].mean()
                             for k in range(len(PAIRS))])
        est_lik = float(post[mask].mean())
        step = np.log(np.maximum(pair_lik, floor)) - math.log(max(est_lik, floor))
        step = np.minimum(step, policy.sprt_step_cap)
        in_est = np.array([p in est.pairs for p in PAIRS])
        cusum = np.where(in_est, 0.0, np.maximum(0.0, cusum + step))
        k = int(np.argmax(cusum))
        if cusum[k] >= policy.sprt_threshold:
            alarm = k
        details["sequential_llr"] = round(float(cusum.max()), 3)

    if not consistent or alarm is not None:
        if not consistent:
            sentence = (f"changed: the console's established convention {est} expects "
                        f"{expected_text}; this SRO decodes as {record.convention}, "
                        f"{float(disp[0].min()):.1f} mm from the nearest expected convention "
                        f"at {decision_policy.radius_mm:g} mm")
        else:
            assert alarm is not None
            sentence = (f"changed: the console's recent SROs together favour "
                        f"{PAIRS[alarm]} over its established convention {est} "
                        f"(log likelihood ratio {cusum[alarm]:.1f} ≥ "
                        f"{policy.sprt_threshold:g}), though each alone was compatible")
            details["detector"] = {"favoured": str(PAIRS[alarm]),
                                   "log_likelihood_ratio": round(float(cusum[alarm]), 3),
                                   "threshold": policy.sprt_threshold}
        check = Check(CheckName.CONSOLE_CONVENTION, CheckResult.CHANGED, sentence + "; "
                      "the console stops learning until a person commissions or confirms it",
                      details)
        if not state.changed:
            events.append((EventKind.CHANGED, est))
        new = replace(state, changed=True, cusum=(0.0,) * len(PAIRS))
        return Assessment(check, new, tuple(events))

    new = replace(state, cusum=tuple(float(v) for v in cusum))
    if record.decision is DecisionKind.CONFIDENT:
        sentence = f"consistent with the console's established convention {est}"
        new = _settle(new, record, patient)
        if est.how is Establishment.LEARNED and not state.changed:
            ok = [members[i] for i in range(len(members)) if (disp[i] <= tol).any()]
            narrowed = est.pairs & _member_pairs(ok, positions)
            if narrowed and narrowed != est.pairs:
                smaller = Established(narrowed, Establishment.LEARNED)
                new = replace(new, established=smaller)
                events.append((EventKind.NARROWED, smaller))
    else:
        combined = combine_with_history(post[None], mask[None], policy.error_rate)[0] \
            if post.size == len(HYPOTHESES) else None
        sentence = f"consistent with the console's established convention {est}"
        if combined is not None:
            cset = [int(k) for k in credible_sets(combined[None],
                                                  decision_policy.credible_mass)[0]]
            d2 = _displacements(record, cset[:1], np.array(cset), decision_policy.radius_mm)[0]
            if bool((d2 <= tol).all()):
                resolved = HYPOTHESES[cset[0]]
                sentence = (f"consistent, resolved by the console's history: with "
                            f"{est} (prior error rate {policy.error_rate:g}) the credible set "
                            f"holds only conventions equivalent to {resolved} "
                            f"(p={combined[cset[0]]:.3f}); the decision stays ambiguous")
                details["resolved"] = {"convention": resolved.as_dict(),
                                       "probability": float(combined[cset[0]])}
    check = Check(CheckName.CONSOLE_CONVENTION, CheckResult.CONSISTENT, sentence, details)
    return Assessment(check, new, tuple(events), resolved)


__all__ = ["POSITIONS", "Assessment", "ConsoleState", "Established", "EventKind",
           "HistoryPolicy", "assess", "combine_with_history", "expected_positions",
           "patient_key"]
