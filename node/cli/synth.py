"""``sro-decoder synth``: write synthetic SROs and their ``truth.jsonl``."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.offset import Precision
from model.training.synth import (
    Corruption,
    SynthConfig,
    generate,
    position_weights,
    write_set,
)
from node.cli.common import UsageError, positive_float


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1]: {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write synthetic SROs with a truth.jsonl")
    p.add_argument("--n", type=int, required=True, help="number of SROs")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rotation-range",
        type=positive_float,
        default=3.0,
        metavar="DEG",
        help="couch rotations drawn within ±DEG (default 3)",
    )
    p.add_argument(
        "--rotation-step",
        type=positive_float,
        default=0.1,
        metavar="DEG",
        help="display precision of rotations (default 0.1)",
    )
    p.add_argument(
        "--translation-step",
        type=positive_float,
        default=0.1,
        metavar="MM",
        help="display precision of translations (default 0.1)",
    )
    p.add_argument(
        "--no-isocenter", action="store_true", help="leave the isocenter out of every offset"
    )
    p.add_argument(
        "--isocenter-fraction",
        type=_fraction,
        default=None,
        help="share of patients whose offsets carry the isocenter (default 1)",
    )
    p.add_argument(
        "--corrupt-fraction",
        type=_fraction,
        default=0.0,
        help="share of cases corrupted the way real errors happen (labelled)",
    )
    p.add_argument(
        "--positions",
        default="clinic",
        metavar="clinic|all|HFS,HFDR,...",
        help="patient positions: a clinic's mix (default), all eight equally often, or the "
        "listed ones equally often",
    )
    p.add_argument(
        "--corruptions",
        default=",".join(c.value for c in Corruption),
        help="comma-separated corruption kinds to draw from",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n <= 0:
        raise UsageError("--n must be positive")
    try:
        kinds = tuple(Corruption(k.strip()) for k in args.corruptions.split(",") if k.strip())
    except ValueError as exc:
        raise UsageError(f"unknown corruption kind: {exc}") from exc
    try:
        weights = position_weights(args.positions)
    except ValueError as exc:
        raise UsageError(f"--positions: {exc}") from exc
    fraction = (
        0.0
        if args.no_isocenter
        else (1.0 if args.isocenter_fraction is None else args.isocenter_fraction)
    )
    config = SynthConfig(
        n=args.n,
        seed=args.seed,
        rotation_range_deg=args.rotation_range,
        precision=Precision(args.rotation_step, args.translation_step),
        isocenter_fraction=fraction,
        corrupt_fraction=args.corrupt_fraction,
        corruptions=kinds or tuple(Corruption),
        positions=tuple(weights.items()),
    )
    truth = write_set(generate(config), args.out)
    print(f"wrote {args.n} SROs and {truth}")
    return 0
