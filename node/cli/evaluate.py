"""``sro-decoder evaluate``: energy model, analytic decoder and raw baseline side by side.

Given a synthetic set folder (``sro-decoder synth``) or generating a mixture from a seed, prints
one table (rich) and writes a reliability diagram and a confusion picture (PNG).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from node.cli.common import fraction, positive_float

DEFAULT_RANGES = (1.0, 3.0, 6.0, 10.0)
DEFAULT_PRECISIONS = ((0.1, 0.1), (0.1, 1.0), (0.25, 0.5), (0.5, 0.2), (1.0, 1.0), (1.0, 0.1))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="compare the energy model, analytic decoder and baseline")
    p.add_argument("set", nargs="?", type=Path, default=None, metavar="SET_DIR",
                   help="a folder written by `sro-decoder synth` (default: generate from --seed)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated set (default 7)")
    p.add_argument("--n", type=int, default=10_000, help="cases to generate (default 10000)")
    p.add_argument("--corrupt-fraction", type=fraction, default=0.2,
                   help="share of corrupted cases in the generated set (default 0.2)")
    p.add_argument("--isocenter-fraction", type=fraction, default=0.5)
    p.add_argument("--positions", default="clinic", metavar="clinic|all|HFS,HFDR,...",
                   help="patient positions of the generated set: a clinic's mix (default), all "
                        "eight equally often, or the listed ones equally often")
    p.add_argument("--isocenter-bound-mm", type=positive_float, default=None, metavar="MM",
                   help="without an isocenter, it lies within this of the origin (default 2000)")
    p.add_argument("--rotation-range", type=positive_float, default=None, metavar="DEG",
                   help="one rotation range instead of the default spread (1, 3, 6, 10°)")
    p.add_argument("--rotation-step", type=positive_float, default=None, metavar="DEG",
                   help="one display precision for rotations instead of the default spread")
    p.add_argument("--translation-step", type=positive_float, default=None, metavar="MM",
                   help="one display precision for translations instead of the default spread")
    p.add_argument("--tolerance-mm", type=positive_float, default=None, metavar="MM",
                   help="clinical-equivalence tolerance (default 1.0)")
    p.add_argument("--radius-mm", type=positive_float, default=None, metavar="MM")
    p.add_argument("--model", default=None, metavar="WEIGHTS_FILE",
                   help="energy-model weights (default: the shipped model)")
    p.add_argument("--baseline", type=Path, default=None, metavar="WEIGHTS_FILE",
                   help="raw-feature baseline weights (default: the shipped baseline)")
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="folder for reliability.png, confusion.png, metrics.json")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from model.decision import DecisionKind, DecisionPolicy
    from model.decoders.analytic import AnalyticDecoder
    from model.decoders.energy.inference import load_energy_decoder, shipped_weights_path
    from model.training.baseline import BASELINE_NAME, load_baseline
    from model.training.data import Role, load_set_folder, mixture
    from model.training.evaluation import (
        Evaluated,
        evaluate_decoder,
        write_confusion_png,
        write_reliability_png,
    )
    from model.training.synth import position_weights
    from node.cli.main import UsageError

    console = Console()
    if args.set is not None:
        if args.set.is_dir():
            try:
                data = load_set_folder(args.set)
            except (OSError, ValueError) as exc:
                raise UsageError(str(exc)) from exc
        else:
            raise UsageError(f"{args.set} is not a folder")
        source = str(args.set)
    else:
        if args.n <= 0:
            raise UsageError("--n must be positive")
        ranges = (args.rotation_range,) if args.rotation_range else DEFAULT_RANGES
        if args.rotation_step or args.translation_step:
            precisions: tuple[tuple[float, float], ...] = (
                (args.rotation_step or 0.1, args.translation_step or 0.1),
            )
        else:
            precisions = DEFAULT_PRECISIONS
        try:
            weights = position_weights(args.positions)
        except ValueError as exc:
            raise UsageError(f"--positions: {exc}") from exc
        data = mixture(args.n, args.seed, Role.EVALUATION, ranges, precisions,
                       isocenter_fraction=args.isocenter_fraction,
                       corrupt_fraction=args.corrupt_fraction, positions=weights)
        source = (f"generated: seed {args.seed}, n {args.n}, ranges {list(ranges)}°, "
                  f"precisions {[list(p) for p in precisions]}, "
                  f"corrupted {args.corrupt_fraction:g}, isocenter {args.isocenter_fraction:g}, "
                  f"positions {args.positions}")
    if args.isocenter_bound_mm is not None:
        data = dataclasses.replace(data, batch=dataclasses.replace(
            data.batch, isocenter_bound_mm=np.full(len(data), args.isocenter_bound_mm)))
    policy = DecisionPolicy(
        tolerance_mm=args.tolerance_mm or DecisionPolicy().tolerance_mm,
        radius_mm=args.radius_mm or DecisionPolicy().radius_mm,
        isocenter_bound_mm=args.isocenter_bound_mm or DecisionPolicy().isocenter_bound_mm,
    )
    try:
        ebm = load_energy_decoder(None if args.model is None else Path(args.model))
        base_path = args.baseline or shipped_weights_path().parent / BASELINE_NAME
        baseline = load_baseline(base_path)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    analytic = AnalyticDecoder()
    reference = analytic.decode(data.batch)
    unexplained = data.corrupted & reference.out_of_distribution
    results: dict[str, Evaluated] = {}
    for name, decoder in (("ebm", ebm), ("analytic", analytic), ("raw-mlp", baseline)):
        results[name] = evaluate_decoder(decoder, data, policy, unexplained, name=name)
    analytic_ambiguous = np.array(
        [k is DecisionKind.AMBIGUOUS for k in results["analytic"].decisions]
    )
    analytic_confident = results["analytic"].metrics.confident
    extra: dict[str, dict[str, float]] = {}
    for name, ev in results.items():
        conf = np.array([k is DecisionKind.CONFIDENT for k in ev.decisions])
        extra[name] = {
            "confident_where_analytic_ambiguous": int((conf & analytic_ambiguous).sum()),
            "confident_vs_analytic": ev.metrics.confident / analytic_confident
            if analytic_confident else float("nan"),
        }

    table = Table(title=f"SRO decoders on {len(data)} cases ({source}); tolerance "
                        f"{policy.tolerance_mm:g} mm at {policy.radius_mm:g} mm")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    rows: list[tuple[str, str, str]] = [
        ("clean cases", "n_clean", "d"),
        ("confident (share of clean)", "confident_share", ".4f"),
        ("confident, relative to analytic", "*confident_vs_analytic", ".4f"),
        ("confident-and-wrong", "confident_wrong", "d"),
        ("confident where analytic is ambiguous", "*confident_where_analytic_ambiguous", "d"),
        ("credible-set coverage of the truth", "coverage", ".4f"),
        ("corrupted cases (no convention explains)", "n_unexplained", "d"),
        ("OOD recall (unexplained corrupted)", "ood_recall", ".4f"),
        ("OOD recall (all corrupted)", "ood_recall_all", ".4f"),
        ("false alarms (clean flagged OOD)", "false_alarms", "d"),
        ("false-alarm rate", "false_alarm_rate", ".4f"),
        ("expected calibration error", "ece", ".4f"),
        ("top-1 exact accuracy", "top_accuracy", ".4f"),
        ("decode throughput (inputs/s)", "throughput", ",.0f"),
    ]
    dumped = {name: {**ev.metrics.as_dict(), **extra[name]} for name, ev in results.items()}
    for label, key, fmt in rows:
        cells = []
        for name in results:
            value = dumped[name][key.lstrip("*")]
            cells.append(format(value, fmt) if value == value else "n/a")
        table.add_row(label, *cells)
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_reliability_png(results, data, args.out / "reliability.png")
    write_confusion_png(results, data, args.out / "confusion.png")
    payload = {"source": source, "policy": {"tolerance_mm": policy.tolerance_mm,
                                            "radius_mm": policy.radius_mm},
               "models": {"ebm": ebm.info.as_dict(), "analytic": analytic.info.as_dict(),
                          "raw-mlp": baseline.info.as_dict()},
               "metrics": dumped}
    (args.out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.out / 'reliability.png'}, {args.out / 'confusion.png'}, "
                  f"{args.out / 'metrics.json'}")
    if args.json:
        print(json.dumps(payload))
    return 0
