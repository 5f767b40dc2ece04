"""Replaying synthetic console histories through the history rules (docs/contract.md section 6)
and the figures of issue 12's acceptance: false ``changed`` flags on stable consoles, the delay
to flag each labelled event, corrupted single SROs flagged, ambiguous decisions resolved by
history, and the likely causes of out-of-distribution cases (section 7)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.consoles.causes import likely_causes
from model.consoles.convention import OrderDirection
from model.consoles.history import ConsoleState, HistoryPolicy, assess, patient_key
from model.consoles.identity import ConsoleIdentity
from model.conventions import HYPOTHESES, Convention
from model.decision import CheckResult, DecisionKind, DecisionPolicy, DecodeRecord, decide
from model.decoder import Decoder
from model.geometry import displacement_bound_mm, forward
from model.training.histories import EventKind, HistorySet, offset_of


@dataclass(frozen=True, slots=True)
class Replayed:
    """Per SRO of a :class:`HistorySet`: its record (with the check), established or not."""

    records: list[DecodeRecord]
    established: np.ndarray  # (N,) bool: the console had an established convention before it
    max_cusum: np.ndarray  # (N,) the detector's statistic after it


def replay(data: HistorySet, decoder: Decoder, *, policy: HistoryPolicy | None = None,
           decision_policy: DecisionPolicy | None = None,
           identity_by_ae_title_only: bool = False) -> Replayed:
    """Decode every SRO in one batch, then run each console's history in time order."""
    policy = policy or HistoryPolicy()
    decision_policy = decision_policy or DecisionPolicy()
    out = decoder.decode(data.batch)
    records = decide(data.batch, out, decoder.info, decision_policy)
    states: dict[str, ConsoleState] = {}
    final: list[DecodeRecord] = [records[0]] * len(records)
    established = np.zeros(len(records), dtype=bool)
    cusum = np.zeros(len(records))
    order = sorted(range(len(records)), key=lambda j: (int(data.fraction[j]),
                                                       int(data.console[j])))
    for j in order:
        ident = ConsoleIdentity.of(data.ae_title[j], None if identity_by_ae_title_only
                                   else data.station[j], "SYNTHETIC")
        state = states.get(ident.key, ConsoleState())
        established[j] = state.established is not None
        record = dataclasses.replace(records[j], offset=offset_of(data, j),
                                     declared_patient_position=data.declared[j])
        a = assess(state, record, patient=patient_key(data.patient[j]), policy=policy,
                   decision_policy=decision_policy)
        states[ident.key] = a.state
        cusum[j] = max(a.state.cusum)
        if "sequential_llr" in a.check.details:
            cusum[j] = max(cusum[j], float(a.check.details["sequential_llr"]))
        final[j] = dataclasses.replace(record, checks=(*record.checks, a.check))
    return Replayed(final, established, cusum)


def _result(r: DecodeRecord) -> CheckResult:
    return r.checks[-1].result


def _equivalent(data: HistorySet, j: int, a: Convention, b_pairs: list[OrderDirection],
                tol: float, radius: float) -> bool:
    """Whether ``a`` is clinically equivalent at SRO ``j``'s offset to one of ``b_pairs`` with
    ``a``'s position."""
    b = data.batch
    pred = forward(b.translation_mm[j:j + 1], b.rotation_deg[j:j + 1], b.isocenter_mm[j:j + 1])[0]
    others = [Convention(p.order, p.inverse, a.patient_position).index for p in b_pairs]
    d = displacement_bound_mm(pred[a.index][None], pred[others], b.isocenter_mm[j], radius)
    return bool((d <= tol).any())


def _close(data: HistorySet, j: int, a: Convention, b_: Convention, tol: float,
           radius: float) -> bool:
    b = data.batch
    pred = forward(b.translation_mm[j:j + 1], b.rotation_deg[j:j + 1], b.isocenter_mm[j:j + 1])[0]
    d = displacement_bound_mm(pred[a.index], pred[b_.index], b.isocenter_mm[j], radius)
    return bool(d <= tol)


def summarise(data: HistorySet, rep: Replayed, decision_policy: DecisionPolicy | None = None
              ) -> dict[str, Any]:
    """The acceptance figures of issue 12 for one replayed set."""
    dp = decision_policy or DecisionPolicy()
    tol, radius = dp.tolerance_mm, dp.radius_mm
    recs = rep.records
    by_console: dict[int, list[int]] = {}
    for j in sorted(range(len(recs)), key=lambda j: int(data.fraction[j])):
        by_console.setdefault(int(data.console[j]), []).append(j)
    stable = [c for c, k in enumerate(data.event) if k is None]
    stable_flags = sum(_result(recs[j]) is CheckResult.CHANGED
                       for c in stable for j in by_console[c])
    stable_checked = sum(_result(recs[j]) is not CheckResult.NOT_CHECKED
                         for c in stable for j in by_console[c])
    out: dict[str, Any] = {
        "stable": {"consoles": len(stable), "sros": sum(len(by_console[c]) for c in stable),
                   "checked": int(stable_checked), "changed_flags": int(stable_flags),
                   "max_sequential_llr": float(max((rep.max_cusum[j] for c in stable
                                                    for j in by_console[c]), default=0.0))},
    }
    events: dict[str, Any] = {}
    for kind in EventKind:
        cons = [c for c, k in enumerate(data.event) if k is kind]
        if not cons:
            continue
        delays, not_established, missed, flagged_after_ok = [], 0, 0, 0
        explained = explained_flagged = ood = harmful = harmful_flagged = 0
        false_flags = never = never_flagged = 0
        for c in cons:
            js = by_console[c]
            at = int(data.event_at[c])
            first = next(j for j in js if int(data.fraction[j]) >= at)
            if not rep.established[first] and kind is not EventKind.SHARED_AE_TITLE:
                not_established += 1
                continue
            if kind is EventKind.SHARED_AE_TITLE:
                false_flags += sum(_result(recs[j]) is CheckResult.CHANGED for j in js)
                continue
            if kind.one_fraction:
                r = recs[first]
                if r.decision is DecisionKind.OUT_OF_DISTRIBUTION:
                    ood += 1
                else:
                    explained += 1
                    flagged = _result(r) is CheckResult.CHANGED
                    explained_flagged += flagged
                    truth = HYPOTHESES[int(data.truth[first])]
                    cred = [r.convention, *(a.convention for a in r.alternatives)]
                    # harmful: no member of the credible set moves the patient as the truth
                    # does (within the tolerance at the radius)
                    hurts = not any(_close(data, first, h, truth, tol, radius)
                                    for h in cred if h is not None)
                    harmful += hurts
                    harmful_flagged += hurts and flagged
                after = [j for j in js if int(data.fraction[j]) > at]
                flagged_after_ok += sum(_result(recs[j]) is CheckResult.CHANGED for j in after)
                continue
            old = HYPOTHESES[int(data.truth[js[0]])]
            after = [j for j in js if int(data.fraction[j]) >= at]
            first_diff = next((j for j in after if not _equivalent(
                data, j, HYPOTHESES[int(data.truth[j])], [OrderDirection.of(old)], tol,
                radius)), None)
            flag = next((j for j in after if _result(recs[j]) is CheckResult.CHANGED), None)
            if first_diff is None:  # never distinguishable within the history
                never += 1
                never_flagged += flag is not None
                continue
            if flag is None:
                missed += 1
                continue
            delays.append(max(0, int(data.fraction[flag]) - int(data.fraction[first_diff])))
        entry: dict[str, Any] = {"histories": len(cons), "not_established_at_event":
                                 not_established}
        if kind is EventKind.SHARED_AE_TITLE:
            entry["changed_flags"] = int(false_flags)
        elif kind.one_fraction:
            entry.update(out_of_distribution=ood, explained_by_a_convention=explained,
                         explained_flagged_changed=explained_flagged,
                         explained_not_equivalent_to_truth=harmful,
                         explained_not_equivalent_flagged=harmful_flagged,
                         changed_flags_after_the_event=flagged_after_ok)
        else:
            d = np.array(delays) if delays else np.zeros(0)
            entry.update(flagged=len(delays), missed=missed, never_distinguishable=never,
                         never_distinguishable_flagged=never_flagged,
                         median_delay_fractions=float(np.median(d)) if delays else None,
                         worst_delay_fractions=float(np.max(d)) if delays else None,
                         share_flagged_on_first=float(np.mean(d == 0)) if delays else None)
        events[kind.value] = entry
    out["events"] = events
    amb = [j for j in range(len(recs)) if rep.established[j]
           and recs[j].decision is DecisionKind.AMBIGUOUS and not data.affected[j]]
    resolved = [j for j in amb if "resolved" in recs[j].checks[-1].details]
    wrong = 0
    for j in resolved:
        conv = Convention.from_dict(recs[j].checks[-1].details["resolved"]["convention"])
        truth = HYPOTHESES[int(data.truth[j])]
        if conv.patient_position is not truth.patient_position or not _equivalent(
                data, j, conv, [OrderDirection.of(truth)], tol, radius):
            wrong += 1
    out["ambiguous_on_established"] = {"decisions": len(amb), "resolved": len(resolved),
                                       "share_resolved": len(resolved) / len(amb) if amb else None,
                                       "resolved_not_equivalent_to_truth": wrong}
    return out


def causes_figures(data_batch: Any, labels: list[str], decoder: Decoder,
                   expected: np.ndarray | None = None) -> dict[str, Any]:
    """Likely causes right first, per listed error (``labels``: the cause each case was made
    by, a :class:`model.decision.CauseKind` value; ``expected``: the declared position's
    hypotheses, (N, H))."""
    out = decoder.decode(data_batch)
    ood = np.flatnonzero(out.out_of_distribution)
    causes = likely_causes(data_batch.subset(ood),
                           expected=None if expected is None else expected[ood])
    per: dict[str, Counter[str]] = {}
    for j, cs in zip(ood, causes, strict=True):
        per.setdefault(labels[j], Counter())["first" if cs and cs[0].kind.value == labels[j]
                                             else "other"] += 1
    return {k: {"out_of_distribution": v["first"] + v["other"], "right_first": v["first"],
                "share": v["first"] / (v["first"] + v["other"])} for k, v in per.items()}
