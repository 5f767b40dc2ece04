"""Choosing a decoder by name: ``analytic``, ``ebm`` (the shipped weights) or a weights file."""

from __future__ import annotations

from pathlib import Path

from model.decoder import Decoder
from model.decoders.analytic import AnalyticDecoder

#: The model used when none is named.
DEFAULT_MODEL = "ebm"


class UnknownModelError(ValueError):
    """The ``--model`` value names no decoder and no readable weights file."""


def load_decoder(spec: str | None = None) -> Decoder:
    """A decoder from ``analytic``, ``ebm`` or the path of a weights file."""
    name = spec or DEFAULT_MODEL
    if name == "analytic":
        return AnalyticDecoder()
    if name == "ebm" or Path(name).is_file():
        try:
            from model.decoders.energy.inference import load_energy_decoder
        except ImportError as exc:
            raise UnknownModelError("the energy model is not available in this build") from exc
        try:
            return load_energy_decoder(None if name == "ebm" else Path(name))
        except (OSError, ValueError, RuntimeError) as exc:  # not a weights file we can read
            raise UnknownModelError(f"--model {name!r}: {exc}") from exc
    raise UnknownModelError(f"--model {name!r} is neither 'ebm', 'analytic' nor a weights file")
