"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.settings import Settings


class UsageError(Exception):
    """A command-line value that parses but makes no sense; exit status 2."""


def fraction(text: str) -> float:
    """An argparse type for a number within [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1]: {text!r}")
    return value


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
    """Flags of docs/contract.md section 5's offset profile and decision policy."""
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
    parser.add_argument(
        "--isocenter-bound-mm",
        type=positive_float,
        default=None,
        metavar="MM",
        help="without an isocenter, it lies within this of the origin (default 2000)",
    )


def add_settings_arguments(parser: argparse.ArgumentParser, *, after_action: bool = False
                           ) -> None:
    """``--config`` and ``--data-dir``, shared by ``serve``, ``web``, ``audit`` and ``users``.

    ``after_action``: for an action's own parser (``audit list --data-dir X``), so that the
    options are taken after the action as well as before it; given there, they win; not given
    there, they leave the value given before the action alone (``argparse.SUPPRESS``).
    """
    default = argparse.SUPPRESS if after_action else None
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="a TOML file layered over the shipped config/default.toml")
    parser.add_argument("--data-dir", metavar="DIR", default=default,
                        help="folder of the archive and audit.db (setting [storage] data_dir)")


def settings_from_args(args: argparse.Namespace, **flags: dict[str, Any]) -> Settings:
    """Build the settings from the layers, ``flags`` per section (``None``: flag not given);
    a wrong setting exits with status 2 naming it."""
    from node.settings import SettingsError, load_settings  # here: other commands need no pydantic

    overrides: dict[str, dict[str, Any]] = {"storage": {"data_dir": args.data_dir}, **flags}
    try:
        return load_settings(args.config, overrides=overrides)
    except SettingsError as exc:
        print(f"sro-decoder: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def existing_database(args: argparse.Namespace) -> Any:
    """The audit database of the settings ``args`` name, for review commands: an SQLite file
    that does not exist is an error (exit 1) rather than a new, empty database."""
    from sqlalchemy.engine import make_url

    from node.audit.store import open_database

    settings = settings_from_args(args)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        print(f"sro-decoder: no audit database at {url.database} (check --data-dir/--config)",
              file=sys.stderr)
        raise SystemExit(1)
    return open_database(settings.database_url)
