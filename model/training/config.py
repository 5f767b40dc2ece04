"""The training configuration (config/training.toml), read and written as TOML.

Shared by the energy model's trainer and the raw-feature baseline, so that neither imports the
other for it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.training.sampler import SamplerConfig

#: ``progress(iteration, iterations, figures)``, called while training
ProgressFn = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True, slots=True)
class DataConfig:
    n_train: int = 36_000
    n_validation: int = 6_000
    n_calibration: int = 12_000
    rotation_ranges_deg: tuple[float, ...] = (1.0, 3.0, 6.0, 10.0)
    precisions: tuple[tuple[float, float], ...] = (
        (0.1, 0.1), (0.1, 1.0), (0.25, 0.5), (0.5, 0.2), (1.0, 1.0), (1.0, 0.1)
    )
    isocenter_fraction: float = 0.5
    shift_sigma_mm: float = 4.0
    #: patient positions (:func:`model.training.synth.position_weights`): ``clinic``, ``all``
    positions: str = "all"


@dataclass(frozen=True, slots=True)
class OptimiserConfig:
    iterations: int = 2500
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    validate_every: int = 250


@dataclass(frozen=True, slots=True)
class ObjectiveConfig:
    cd_weight: float = 0.1
    energy_l2: float = 0.01


@dataclass(frozen=True, slots=True)
class CalibrationConfig:
    clean_quantile: float = 0.999
    corrupt_quantile: float = 0.005


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    iterations: int = 3000
    batch_size: int = 256
    learning_rate: float = 3e-3


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Everything ``sro-decoder train`` needs (config/training.toml)."""

    seed: int = 20261124
    threads: int = 2
    version: str = "0.1.0"
    hidden: int = 32
    data: DataConfig = field(default_factory=DataConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_training_config(path: Path) -> TrainingConfig:
    """Read a training TOML; unknown keys are an error (no silent typos)."""
    raw = tomllib.loads(path.read_text())

    def section(name: str, cls: Any) -> Any:
        values = dict(raw.pop(name, {}))
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown key(s) in [{name}] of {path}: {sorted(unknown)}")
        for key, value in values.items():
            if isinstance(value, list):
                values[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        return cls(**values)

    data = section("data", DataConfig)
    optimiser = section("optimiser", OptimiserConfig)
    objective = section("objective", ObjectiveConfig)
    sampler = section("sampler", SamplerConfig)
    calibration = section("calibration", CalibrationConfig)
    baseline = section("baseline", BaselineConfig)
    network = raw.pop("network", {})
    top = {"seed", "threads", "version"}
    unknown = set(raw) - top
    unknown |= set(network) - {"hidden"}
    if unknown:
        raise ValueError(f"unknown key(s) in {path}: {sorted(unknown)}")
    return TrainingConfig(
        seed=int(raw.get("seed", 20261124)),
        threads=int(raw.get("threads", 2)),
        version=str(raw.get("version", "0.1.0")),
        hidden=int(network.get("hidden", 32)),
        data=data, optimiser=optimiser, objective=objective, sampler=sampler,
        calibration=calibration, baseline=baseline,
    )


def config_to_toml(config: TrainingConfig) -> str:
    """The config as TOML that :func:`load_training_config` reads back to the same config."""
    data = config.as_dict()
    hidden = data.pop("hidden")
    data["network"] = {"hidden": hidden}
    return _to_toml(data)


def _to_toml(data: dict[str, Any]) -> str:
    """A minimal TOML writer (scalars, lists, one level of tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"
