"""``sro-decoder train``: train the energy model, write checkpoints, export weights and card."""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path


def default_config_path() -> Path:
    return Path(str(resources.files("config") / "training.toml"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the energy model and export weights + model card")
    p.add_argument("--config", type=Path, default=None,
                   help="training config TOML (default: the shipped config/training.toml)")
    p.add_argument("--out", type=Path, default=Path("runs/ebm"),
                   help="run folder: checkpoints/best.pt, checkpoints/last.pt, training.toml, "
                        "ebm.pt, ebm.card.json, baseline.pt (default runs/ebm)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="also copy the weights, card and baseline here (model/weights ships them)")
    p.add_argument("--iterations", type=int, default=None, help="override optimiser.iterations")
    p.add_argument("--seed", type=int, default=None, help="override the seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from model.decoders.energy.inference import CARD_NAME, WEIGHTS_NAME
    from model.training.baseline import BASELINE_NAME
    from model.training.config import load_training_config
    from model.training.trainer import train_and_export
    from node.cli.main import UsageError

    path = args.config or default_config_path()
    try:
        config = load_training_config(path)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot read training config {path}: {exc}") from exc
    if args.iterations is not None:
        if args.iterations <= 0:
            raise UsageError("--iterations must be positive")
        config = replace(config, optimiser=replace(config.optimiser, iterations=args.iterations))
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
    ) as progress:
        task = progress.add_task("energy model", total=config.optimiser.iterations, status="")
        base_task = progress.add_task("raw baseline", total=config.baseline.iterations, status="",
                                      visible=False)

        def on_step(it: int, total: int, row: dict[str, float]) -> None:
            status = f"ce {row['ce']:.3f}  E+ {row['e_pos']:.2f}  E- {row['e_neg']:.2f}"
            if "validation_nll" in row:
                status += f"  val {row['validation_nll']:.3f}"
            progress.update(task, completed=it, status=status)

        def on_base(it: int, total: int, row: dict[str, float]) -> None:
            progress.update(base_task, completed=it, visible=True, status=f"ce {row['loss']:.3f}")

        overridden = args.iterations is not None or args.seed is not None
        card = train_and_export(config, args.out, on_step, on_base,
                                config_path=None if overridden else path)
    elapsed = time.perf_counter() - start
    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_NAME, CARD_NAME, BASELINE_NAME):
            shutil.copyfile(args.out / name, args.export / name)
    held = card.held_out["validation_clean"]
    console.print(
        f"trained in {elapsed:.0f} s; weights {args.out / WEIGHTS_NAME} sha256 {card.sha256}\n"
        f"held-out clean: confident {held['confident_share']:.4f}, "
        f"confident-and-wrong {held['confident_wrong']}, "
        f"OOD threshold {card.ood_threshold:.3f}"
        + (f"; exported to {args.export}" if args.export is not None else "")
    )
    return 0
