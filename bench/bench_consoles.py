"""Consoles over time: the figures of issue 12's acceptance on synthetic histories
(docs/contract.md sections 6 and 7).

    python bench/bench_consoles.py                 # measure (seeds 2000+), both decoders
    python bench/bench_consoles.py --calibrate     # the detector's threshold (seeds 1000+)
    python bench/bench_consoles.py --card model/weights/ebm.card.json   # write both in the card

The change detector's threshold is set on held-out histories (``--calibrate``: stable consoles,
seeds never used for measuring): twice the largest statistic any stable console reached, and at
least 3 nats. The measurement uses other seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.consoles.history import HistoryPolicy
from model.conventions import HYPOTHESES
from model.decision import CauseKind
from model.decoders.registry import load_decoder
from model.training.console_eval import causes_figures, replay, summarise
from model.training.histories import EventKind, HistoryConfig, generate_histories
from model.training.synth import Corruption, SynthConfig, generate

CALIBRATION_SEED = 1000
MEASURE_SEED = 2000


def calibrate(decoder_name: str, n: int = 300) -> dict[str, Any]:
    dec = load_decoder(decoder_name)
    data = generate_histories(HistoryConfig(n_consoles=n, fractions=30, seed=CALIBRATION_SEED))
    rep = replay(data, dec, policy=HistoryPolicy(sprt_threshold=1e9))
    top = float(rep.max_cusum.max())
    return {"decoder": decoder_name, "stable_consoles": n, "seed": CALIBRATION_SEED,
            "max_stable_llr": top, "threshold": max(3.0, round(2 * top, 2))}


def causes_sets(seed: int, n: int = 600) -> tuple[Any, list[str], Any]:
    """Out-of-distribution cases made by each listed error, with labels."""
    batches, labels, truths = [], [], []
    for k, (kind, cause) in enumerate(((Corruption.CENTIMETRES, CauseKind.CENTIMETRES_AS_MM),
                                       (Corruption.RADIANS, CauseKind.RADIANS),
                                       (Corruption.SIGN_FLIP, CauseKind.ROTATION_SIGN))):
        d = generate(SynthConfig(n=n, seed=seed + k, corrupt_fraction=1.0, corruptions=(kind,)))
        batches.append(d.batch)
        labels += [cause.value] * n
        truths.append(d.truth)
    d = generate(SynthConfig(n=n, seed=seed + 7))
    t = d.batch.translation_mm.copy()
    axis = np.random.default_rng(seed).integers(0, 3, n)
    t[np.arange(n), axis] *= -1
    batches.append(dataclasses.replace(d.batch, translation_mm=t))
    labels += [CauseKind.TRANSLATION_SIGN.value] * n
    truths.append(d.truth)
    # MOSAIQ's naming: Cor = roll, Sag = rotation (yaw), Trans = minus pitch (DOMAIN.md)
    r = np.column_stack([d.batch.rotation_deg[:, 1], d.batch.rotation_deg[:, 2],
                         -d.batch.rotation_deg[:, 0]])
    batches.append(dataclasses.replace(d.batch, rotation_deg=r))
    labels += [CauseKind.AXES_RELABELLED.value] * n
    truths.append(d.truth)
    from model.batch import InputBatch
    fields = [f.name for f in dataclasses.fields(InputBatch)]
    big = InputBatch(**{f: np.concatenate([getattr(b, f) for b in batches]) for f in fields})
    return big, labels, np.concatenate(truths)


def measure(decoder_name: str, threshold: float) -> dict[str, Any]:
    dec = load_decoder(decoder_name)
    policy = HistoryPolicy(sprt_threshold=threshold)
    started = time.perf_counter()
    stable = generate_histories(HistoryConfig(n_consoles=200, fractions=30, seed=MEASURE_SEED))
    events = generate_histories(HistoryConfig(
        n_consoles=600, fractions=30, seed=MEASURE_SEED + 1, event_share=1.0,
        events=(EventKind.UPGRADE, EventKind.DIRECTION_FLIP, EventKind.SHARED_AE_TITLE)))
    single = generate_histories(HistoryConfig(
        n_consoles=1500, fractions=30, seed=MEASURE_SEED + 2, event_share=1.0,
        events=(EventKind.SIGN_FLIP, EventKind.CORRUPTED)))
    out: dict[str, Any] = {"decoder": decoder_name, "threshold": threshold,
                           "seeds": [MEASURE_SEED, MEASURE_SEED + 1, MEASURE_SEED + 2]}
    out["stable"] = summarise(stable, replay(stable, dec, policy=policy))["stable"]
    ev = summarise(events, replay(events, dec, policy=policy))
    out["events"] = ev["events"]
    out["stable_in_event_set"] = ev["stable"]
    shared = replay(events, dec, policy=policy, identity_by_ae_title_only=True)
    out["shared_ae_title_if_identity_were_the_ae_title_only"] = summarise(
        events, shared)["events"].get("shared_ae_title")
    sg = summarise(single, replay(single, dec, policy=policy))
    out["single_sro_events"] = sg["events"]
    amb = [ev["ambiguous_on_established"], sg["ambiguous_on_established"],
           summarise(stable, replay(stable, dec, policy=policy))["ambiguous_on_established"]]
    out["ambiguous_on_established"] = {
        "decisions": sum(a["decisions"] for a in amb),
        "resolved": sum(a["resolved"] for a in amb),
        "resolved_not_equivalent_to_truth": sum(a["resolved_not_equivalent_to_truth"]
                                                for a in amb)}
    a = out["ambiguous_on_established"]
    a["share_resolved"] = a["resolved"] / a["decisions"] if a["decisions"] else None
    batch, labels, truth = causes_sets(MEASURE_SEED + 3)
    expected = np.array([[h.patient_position is HYPOTHESES[int(k)].patient_position
                          for h in HYPOTHESES] for k in truth])
    out["likely_causes_without_declared_position"] = causes_figures(batch, labels, dec)
    out["likely_causes"] = causes_figures(batch, labels, dec, expected=expected)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--decoders", default="ebm,analytic")
    ap.add_argument("--card", type=Path, default=None, help="write into this model card")
    args = ap.parse_args()
    names = [n.strip() for n in args.decoders.split(",") if n.strip()]
    cal = {n: calibrate(n) for n in names}
    if args.calibrate:
        print(json.dumps(cal, indent=2))
        return 0
    threshold = max(c["threshold"] for c in cal.values())
    result = {"calibration": cal, "threshold": threshold,
              "measured": {n: measure(n, threshold) for n in names}}
    print(json.dumps(result, indent=2))
    if args.card is not None:
        card = json.loads(args.card.read_text())
        card["console_history"] = {
            "what": "consoles over time (docs/contract.md section 6): the change detector's "
                    "threshold, set on held-out stable histories, and the figures measured on "
                    "other seeds (bench/bench_consoles.py)",
            "policy": {"learn_after": HistoryPolicy().learn_after,
                       "error_rate": HistoryPolicy().error_rate,
                       "sprt_threshold": threshold,
                       "sprt_step_cap": HistoryPolicy().sprt_step_cap},
            **result}
        args.card.write_text(json.dumps(card, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
