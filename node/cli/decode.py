"""``sro-decoder decode``: decode SRO files and folders (docs/contract.md section 5)."""

from __future__ import annotations

import argparse
import json
import sys

from model.decision import DecisionKind, DecodeRecord
from model.decoders.registry import UnknownModelError, load_decoder
from model.inputs.profiles import DEFAULT_PROFILE, SHIPPED_PROFILES, OffsetProfile
from model.pipeline import DecodeOptions, decode_files, decode_options, expand_paths
from node.cli.common import UsageError, add_profile_arguments, floats


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode SRO files or folders")
    p.add_argument("paths", nargs="+", metavar="PATH", help="an SRO file or a folder of .dcm files")
    p.add_argument("--json", action="store_true", help="one JSON object per SRO per line")
    p.add_argument(
        "--model",
        default=None,
        metavar="ebm|analytic|WEIGHTS_FILE",
        help="decoder to use (default: the shipped model)",
    )
    p.add_argument(
        "--offset",
        type=floats(6),
        default=None,
        metavar="TX,TY,TZ,RX,RY,RZ",
        help="couch offset (mm, degrees), overriding the private block",
    )
    p.add_argument(
        "--isocenter",
        type=floats(3),
        default=None,
        metavar="CX,CY,CZ",
        help="isocenter in mm (patient coordinates), overriding the private block",
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="NAME",
        help=f"a shipped offset profile ({', '.join(SHIPPED_PROFILES)}; default: default); "
        "the flags below change it",
    )
    add_profile_arguments(p)
    p.set_defaults(func=run)


def options_from_args(
    args: argparse.Namespace, base: OffsetProfile = DEFAULT_PROFILE
) -> DecodeOptions:
    """The decode options of the flags (:func:`model.pipeline.decode_options`, which the REST
    API's decode calls too)."""
    return decode_options(
        offset=args.offset, isocenter=args.isocenter, rotation_step_deg=args.rotation_step,
        translation_step_mm=args.translation_step, translation_unit=args.translation_unit,
        tolerance_mm=args.tolerance_mm, radius_mm=args.radius_mm,
        isocenter_bound_mm=args.isocenter_bound_mm, base=base)


def _summary(record: DecodeRecord) -> str:
    name = record.path or record.sop_instance_uid or "?"
    line = f"{name}: {record.decision.value}"
    if record.convention is not None and record.probability is not None:
        line += f"  {record.convention} (p={record.probability:.3f}"
        line += f", intrinsic {record.convention.order.intrinsic_alias})"
        # docs/contract.md section 4 (no convention explains an out-of-distribution input)
        decoded = record.decision is not DecisionKind.OUT_OF_DISTRIBUTION
        if decoded and record.equivalent_probability is not None:
            line += f"; p={record.equivalent_probability:.3f} with the equivalent ones"
        if decoded and (record.settled or record.open):
            line += ("\n    settled: " + (", ".join(c.value for c in record.settled) or "nothing")
                     + "; open: " + (", ".join(c.value for c in record.open) or "nothing"))
        for alt in record.alternatives:
            line += (
                f"\n    or {alt.convention} (p={alt.probability:.3f}, "
                f"{alt.displacement_mm:.2f} mm away)"
            )
    if record.reason:
        line += f"\n    {record.reason}"
    for check in record.checks:
        if check.result.flags:
            line += f"\n    {check.name.value}: {check.sentence}"
    for k, cause in enumerate(record.likely_causes, 1):  # section 7: hints, not decisions
        line += f"\n    likely cause {k}: {cause.sentence}"
    return line


def run(args: argparse.Namespace) -> int:
    try:
        decoder = load_decoder(args.model)
    except UnknownModelError as exc:
        raise UsageError(str(exc)) from exc
    name = args.profile or "default"
    if name not in SHIPPED_PROFILES:
        raise UsageError(f"--profile: no profile {name!r} (one of {', '.join(SHIPPED_PROFILES)})")
    options = options_from_args(args, SHIPPED_PROFILES[name])
    paths = expand_paths(args.paths)
    if not paths:
        raise UsageError("no .dcm files found in the given paths")
    status = 0
    out = sys.stdout
    for record, readable in decode_files(paths, decoder, options):
        if not readable:
            status = 1
        out.write(json.dumps(record.as_dict()) + "\n" if args.json else _summary(record) + "\n")
    out.flush()
    return status
