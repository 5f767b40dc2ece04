"""The one command-line program, ``sro-decoder``, and its subcommands.

Each subcommand lives in ``node.cli.<name>`` and exposes ``register(subparsers)`` (which
sets ``func`` on its parser) so that this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from model import __version__
from node.cli.common import UsageError

#: Subcommand modules under ``node.cli``, in the order ``--help`` lists them.
COMMANDS = ("serve", "web", "decode", "inspect", "audit", "consoles", "users", "purge", "synth",
            "train", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sro-decoder",
        description="Decode the convention of DICOM Spatial Registration Objects (IGRT).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"node.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"node.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        parser.error(str(exc))  # exits with status 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
