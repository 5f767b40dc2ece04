"""The model card: JSON next to the weights (training data, held-out metrics, SHA-256, version)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What a shipped model is, how it was trained, and how it did on held-out data."""

    name: str
    version: str
    weights_file: str
    sha256: str
    ood_threshold: float
    training: dict[str, Any]
    held_out: dict[str, Any]
    calibration: dict[str, Any]
    baseline: dict[str, Any] = field(default_factory=dict)
    training_seconds: float | None = None
    #: consoles over time: the change detector's threshold and its figures (bench_consoles.py)
    console_history: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "weights_file": self.weights_file,
            "sha256": self.sha256,
            "ood_threshold": self.ood_threshold,
            "training": self.training,
            "held_out": self.held_out,
            "calibration": self.calibration,
            "baseline": self.baseline,
            "training_seconds": self.training_seconds,
            "console_history": self.console_history,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        data = json.loads(path.read_text())
        return cls(**data)
