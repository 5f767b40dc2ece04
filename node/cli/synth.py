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
from node.cli.common import UsageError, fraction, positive_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write synthetic SROs with a truth.jsonl")
    p.add_argument("--n", type=int, default=None, help="number of SROs (or --histories)")
    p.add_argument("--histories", type=int, default=None, metavar="N",
                   help="instead: N consoles' histories over --fractions, with labelled events "
                   "(upgrade, direction flip, one-fraction sign flip or corruption, a second "
                   "console sharing an AE title) in --event-share of them, and histories.jsonl")
    p.add_argument("--fractions", type=int, default=30, help="SROs per history (default 30)")
    p.add_argument("--event-share", type=fraction, default=0.5,
                   help="share of histories with a labelled event (default 0.5)")
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
        type=fraction,
        default=None,
        help="share of patients whose offsets carry the isocenter (default 1)",
    )
    p.add_argument(
        "--corrupt-fraction",
        type=fraction,
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
    p.add_argument(
        "--layout",
        choices=("private-block", "xvi"),
        default="private-block",
        help="private-block: the offset in the SRO's own private block (default); xvi: Elekta "
        "XVI SRO-Standard files and their RPS companions",
    )
    p.add_argument("--frames", type=int, default=0,
                   help="--layout xvi: 4D frames per SRO (default 0)")
    p.add_argument(
        "--xvi-corrupt-fraction",
        type=fraction,
        default=0.0,
        help="--layout xvi: share of cases with an XVI corruption (labelled)",
    )
    p.set_defaults(func=run)


def run_histories(args: argparse.Namespace) -> int:
    from model.training.histories import HistoryConfig, generate_histories, write_histories

    if args.histories <= 0 or args.fractions <= 0:
        raise UsageError("--histories and --fractions must be positive")
    config = HistoryConfig(n_consoles=args.histories, fractions=args.fractions, seed=args.seed,
                           event_share=args.event_share,
                           precision=Precision(args.rotation_step, args.translation_step))
    truth = write_histories(generate_histories(config), args.out)
    print(f"wrote {args.histories} histories of {args.fractions} SROs and {truth}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.histories is not None:
        return run_histories(args)
    if args.n is None:
        raise UsageError("give --n (SROs) or --histories (consoles' histories)")
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
    if args.frames < 0:
        raise UsageError("--frames must not be negative")
    if args.layout == "xvi":
        from model.training.xvi import XviConfig, write_xvi_set

        truth = write_xvi_set(generate(config), args.out, XviConfig(
            frames=args.frames, corrupt_fraction=args.xvi_corrupt_fraction, seed=args.seed))
        print(f"wrote {args.n} XVI SROs, their RPS companions and {truth}")
        return 0
    truth = write_set(generate(config), args.out)
    print(f"wrote {args.n} SROs and {truth}")
    return 0
