"""Training the energy model (JEM style) and exporting the shipped weights with their card.

Objective per iteration: cross-entropy of ``softmax(−E(x, ·))`` against the true convention,
plus ``cd_weight · (E(x⁺) − E(x⁻))`` (contrastive divergence on the input energy, negatives
``x⁻`` from :class:`~model.training.sampler.LangevinSampler`), plus ``energy_l2 · (E(x⁺)² +
E(x⁻)²)``.
Seeded and deterministic on CPU. The out-of-distribution threshold on the input energy is set
afterwards from held-out clean and corrupted sets and written in the weights and the card.
"""

from __future__ import annotations

import copy
import shutil
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.decision import DecisionPolicy
from model.decoder import ModelInfo
from model.decoders.analytic import AnalyticDecoder
from model.decoders.energy.card import ModelCard
from model.decoders.energy.features import Context, context_from_batch, hypothesis_features
from model.decoders.energy.inference import (
    CARD_NAME,
    WEIGHTS_NAME,
    EnergyDecoder,
    sha256_of,
    weights_payload,
)
from model.decoders.energy.network import EnergyNet, input_energy
from model.training.data import LabelledSet, Role, mixture
from model.training.evaluation import evaluate_decoder, unexplained_mask
from model.training.sampler import LangevinSampler, SamplerConfig
from model.training.synth import position_weights

#: Share of corrupted cases in the calibration set (the OOD threshold is set on it).
CALIBRATION_CORRUPT_FRACTION = 0.5


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


def make_sets(config: TrainingConfig) -> dict[str, LabelledSet]:
    """Training, validation and calibration mixtures (distinct seeds per role and cell)."""
    d = config.data

    def make(n: int, role: Role, corrupt: float = 0.0) -> LabelledSet:
        return mixture(n, config.seed, role, d.rotation_ranges_deg, d.precisions,
                       isocenter_fraction=d.isocenter_fraction, corrupt_fraction=corrupt,
                       shift_sigma_mm=d.shift_sigma_mm, positions=position_weights(d.positions))

    return {
        "train": make(d.n_train, Role.TRAIN),
        "validation": make(d.n_validation, Role.VALIDATION),
        "calibration": make(d.n_calibration, Role.CALIBRATION, CALIBRATION_CORRUPT_FRACTION),
    }


def seed_everything(seed: int, threads: int) -> torch.Generator:
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


ProgressFn = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True, slots=True)
class TrainResult:
    net: EnergyNet
    best_iteration: int
    best_validation_nll: float
    history: list[dict[str, float]]


def fit(
    config: TrainingConfig,
    train: LabelledSet,
    validation: LabelledSet,
    progress: ProgressFn | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Fit the energy network; keeps the best (validation NLL) and the last state."""
    gen = seed_everything(config.seed, config.threads)
    opt_cfg, obj = config.optimiser, config.objective
    net = EnergyNet(hidden=config.hidden)
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=opt_cfg.learning_rate, weight_decay=opt_cfg.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=opt_cfg.iterations)
    ctx, rho = context_from_batch(train.batch)
    labels = torch.from_numpy(train.truth)
    val_ctx, val_rho = context_from_batch(validation.batch)
    val_labels = torch.from_numpy(validation.truth)
    sampler = LangevinSampler(config.sampler, len(train), gen)

    def energy_fn(c: Context, r: torch.Tensor) -> torch.Tensor:
        return input_energy(net(hypothesis_features(c, r)))

    best_state = copy.deepcopy(net.state_dict())
    best_nll, best_it = float("inf"), 0
    history: list[dict[str, float]] = []
    for it in range(1, opt_cfg.iterations + 1):
        net.train()
        idx = torch.randint(0, len(train), (opt_cfg.batch_size,), generator=gen)
        # negatives first: the sampler needs gradients w.r.t. the offset, not the weights
        for p in net.parameters():
            p.requires_grad_(False)
        neg_idx, neg_rho = sampler.sample(ctx, energy_fn)
        for p in net.parameters():
            p.requires_grad_(True)
        e_pos = net(hypothesis_features(ctx.index(idx), rho[idx]))
        ce = F.cross_entropy(-e_pos, labels[idx])
        ein_pos = input_energy(e_pos)
        ein_neg = energy_fn(ctx.index(neg_idx), neg_rho)
        cd = ein_pos.mean() - ein_neg.mean()
        reg = (ein_pos.pow(2).mean() + ein_neg.pow(2).mean())
        loss = ce + obj.cd_weight * cd + obj.energy_l2 * reg
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimiser.step()
        schedule.step()
        row = {"iteration": float(it), "loss": loss.item(), "ce": ce.item(), "cd": cd.item(),
               "e_pos": ein_pos.mean().item(), "e_neg": ein_neg.mean().item()}
        if it % opt_cfg.validate_every == 0 or it == opt_cfg.iterations:
            net.eval()
            with torch.no_grad():
                nll = float(_chunked_nll(net, val_ctx, val_rho, val_labels))
            row["validation_nll"] = nll
            if nll < best_nll:
                best_nll, best_it = nll, it
                best_state = copy.deepcopy(net.state_dict())
                if checkpoint_dir is not None:
                    _save_checkpoint(checkpoint_dir / "best.pt", net, config, it, nll)
            if checkpoint_dir is not None:
                _save_checkpoint(checkpoint_dir / "last.pt", net, config, it, nll)
        history.append(row)
        if progress is not None:
            progress(it, opt_cfg.iterations, row)
    net.load_state_dict(best_state)
    net.eval()
    return TrainResult(net, best_it, best_nll, history)


def _chunked_nll(net: EnergyNet, ctx: Context, rho: torch.Tensor, labels: torch.Tensor,
                 chunk: int = 512) -> torch.Tensor:
    total = torch.zeros(())
    for start in range(0, len(ctx), chunk):
        sl = torch.arange(start, min(start + chunk, len(ctx)))
        e = net(hypothesis_features(ctx.index(sl), rho[sl]))
        total = total + F.cross_entropy(-e, labels[sl], reduction="sum")
    return total / max(len(ctx), 1)


def _save_checkpoint(path: Path, net: EnergyNet, config: TrainingConfig, it: int,
                     nll: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"iteration": it, "validation_nll": nll, "hidden": net.hidden,
         "state_dict": net.state_dict(), "config": config.as_dict()},
        path,
    )


def calibrate_threshold(
    energy: np.ndarray, clean: np.ndarray, unexplained: np.ndarray, config: CalibrationConfig
) -> dict[str, float]:
    """The input-energy threshold above which an input is out of distribution.

    From held-out data: the ``clean_quantile`` of clean energies and the ``corrupt_quantile``
    of unexplained corrupted ones; midway between them when they are apart. When they overlap,
    the clean quantile wins (the false-alarm limit), and the card says so.
    """
    hi_clean = float(np.quantile(energy[clean], config.clean_quantile))
    lo_bad = float(np.quantile(energy[unexplained], config.corrupt_quantile)) if unexplained.any() \
        else hi_clean + 1.0
    threshold = 0.5 * (hi_clean + lo_bad) if lo_bad > hi_clean else hi_clean
    return {
        "threshold": threshold,
        "clean_quantile_energy": hi_clean,
        "corrupt_quantile_energy": lo_bad,
        "separated": float(lo_bad > hi_clean),
        "clean_max_energy": float(energy[clean].max()),
        "corrupt_min_energy":
            float(energy[unexplained].min()) if unexplained.any() else float("nan"),
    }


def train_and_export(
    config: TrainingConfig,
    out_dir: Path,
    progress: ProgressFn | None = None,
    baseline_progress: ProgressFn | None = None,
    config_path: Path | None = None,
) -> ModelCard:
    """Generate data, fit, calibrate, evaluate on held-out sets, export weights and card."""
    from model.training.baseline import (
        BASELINE_NAME,
        BaselineDecoder,
        fit_baseline,
        save_baseline,
    )

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if config_path is not None:
        shutil.copyfile(config_path, out_dir / "training.toml")
    else:
        (out_dir / "training.toml").write_text(config_to_toml(config))
    sets = make_sets(config)
    result = fit(config, sets["train"], sets["validation"], progress, out_dir / "checkpoints")

    calib = sets["calibration"]
    analytic_out = AnalyticDecoder().decode(calib.batch)
    unexplained = unexplained_mask(calib, analytic_out)
    clean = ~calib.corrupted
    provisional = EnergyDecoder(result.net, float("inf"), ModelInfo("ebm", config.version))
    energy = provisional.decode(calib.batch).energy
    cal = calibrate_threshold(energy, clean, unexplained, config.calibration)

    weights = out_dir / WEIGHTS_NAME
    torch.save(weights_payload(result.net, cal["threshold"], config.version), weights)
    sha = sha256_of(weights)
    decoder = EnergyDecoder(result.net, cal["threshold"], ModelInfo("ebm", config.version, sha))

    baseline = fit_baseline(config, sets["train"], sets["calibration"], baseline_progress)
    save_baseline(baseline, out_dir / BASELINE_NAME)

    policy = DecisionPolicy()
    val = sets["validation"]
    val_unexpl = np.zeros(len(val), dtype=bool)
    held_out = {
        "validation_clean":
            evaluate_decoder(decoder, val, policy, val_unexpl).metrics.as_dict(),
        "calibration_mixed":
            evaluate_decoder(decoder, calib, policy, unexplained).metrics.as_dict(),
        "best_iteration": result.best_iteration,
        "best_validation_nll": result.best_validation_nll,
    }
    base_metrics = evaluate_decoder(
        BaselineDecoder(baseline), val, policy, val_unexpl
    ).metrics.as_dict()
    d = config.data
    card = ModelCard(
        name="ebm",
        version=config.version,
        weights_file=WEIGHTS_NAME,
        sha256=sha,
        ood_threshold=cal["threshold"],
        training={
            "config": config.as_dict(),
            "data": {
                "generator": "model.training.synth.generate, one SynthConfig per "
                             "(rotation range, precision)",
                "seeds": "numpy SeedSequence([seed, role, cell]); roles train=1, validation=2, "
                         "calibration=3 (evaluation uses 4)",
                "n_train": d.n_train, "n_validation": d.n_validation,
                "n_calibration": d.n_calibration,
                "rotation_ranges_deg": list(d.rotation_ranges_deg),
                "precisions": [list(p) for p in d.precisions],
                "isocenter_fraction": d.isocenter_fraction,
                "positions": d.positions,
                "calibration_corrupt_fraction": CALIBRATION_CORRUPT_FRACTION,
            },
            "final": result.history[-1] if result.history else {},
        },
        held_out=held_out,
        calibration=cal,
        baseline={"weights_file": BASELINE_NAME, "sha256": sha256_of(out_dir / BASELINE_NAME),
                  "validation_clean": base_metrics, "ood_threshold": baseline.ood_threshold},
        training_seconds=round(time.perf_counter() - start, 1),
    )
    card.write(out_dir / CARD_NAME)
    return card


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
