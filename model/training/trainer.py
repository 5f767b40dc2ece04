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
from dataclasses import dataclass
from pathlib import Path

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
from model.training.baseline import BASELINE_NAME, BaselineDecoder, fit_baseline, save_baseline
from model.training.config import (
    ProgressFn,
    TrainingConfig,
    config_to_toml,
)
from model.training.data import LabelledSet, Role, mixture
from model.training.evaluation import calibrate_threshold, evaluate_decoder, unexplained_mask
from model.training.sampler import LangevinSampler
from model.training.synth import position_weights

#: Share of corrupted cases in the calibration set (the OOD threshold is set on it).
CALIBRATION_CORRUPT_FRACTION = 0.5


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


def train_and_export(
    config: TrainingConfig,
    out_dir: Path,
    progress: ProgressFn | None = None,
    baseline_progress: ProgressFn | None = None,
    config_path: Path | None = None,
) -> ModelCard:
    """Generate data, fit, calibrate, evaluate on held-out sets, export weights and card."""
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
