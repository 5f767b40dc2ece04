"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import math


class UsageError(Exception):
    """A command-line value that parses but makes no sense; exit status 2."""


def floats(count: int):  # type: ignore[no-untyped-def]
    """An argparse type for ``count`` comma-separated finite numbers."""

    def parse(text: str) -> tuple[float, ...]:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != count:
            raise argparse.ArgumentTypeError(
                f"expected {count} comma-separated numbers, got {text!r}"
            )
        try:
            values = tuple(float(p) for p in parts)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number in {text!r}") from exc
        if not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"values must be finite: {text!r}")
        return values

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of SPEC section 5's offset profile and decision policy."""
    parser.add_argument(
        "--rotation-step",
        type=positive_float,
        default=None,
        metavar="DEG",
        help="display precision of rotations (default 0.1)",
    )
    parser.add_argument(
        "--translation-step",
        type=positive_float,
        default=None,
        metavar="MM",
        help="display precision of translations in mm (default 0.1)",
    )
    parser.add_argument(
        "--translation-unit",
        choices=("mm", "cm"),
        default=None,
        help="unit of the reported translation (default mm)",
    )
    parser.add_argument(
        "--tolerance-mm",
        type=positive_float,
        default=None,
        metavar="MM",
        help="clinical-equivalence tolerance (default 1.0)",
    )
    parser.add_argument(
        "--radius-mm",
        type=positive_float,
        default=None,
        metavar="MM",
        help="radius around the isocenter for equivalence (default 100)",
    )
