"""Labelled mixtures of synthetic sets spread over rotation ranges, precisions and isocenters.

:class:`~model.training.synth.SynthConfig` takes one precision per set, so a mixture concatenates
one
set per (rotation range, precision) cell, each seeded from ``(seed, role, cell)`` so training,
validation, calibration and evaluation never share a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from model.batch import DecodeInput, InputBatch
from model.conventions import PatientPosition
from model.offset import Precision
from model.training.synth import POSITION_WEIGHTS, Corruption, SynthConfig, SynthSet, generate


class Role(int, Enum):
    """What a mixture is for; part of every cell's seed."""

    TRAIN = 1
    VALIDATION = 2
    CALIBRATION = 3
    EVALUATION = 4


@dataclass(frozen=True, slots=True)
class LabelledSet:
    """Inputs with their true convention (−1 outside the hypotheses) and corruption labels."""

    batch: InputBatch
    truth: npt.NDArray[np.int64]
    corruption: list[Corruption | None]
    cell: npt.NDArray[np.int64]  # which mixture cell each case came from

    def __len__(self) -> int:
        return len(self.truth)

    @property
    def corrupted(self) -> npt.NDArray[np.bool_]:
        return np.array([c is not None for c in self.corruption], dtype=bool)

    def subset(self, index: npt.NDArray[np.int64]) -> LabelledSet:
        return LabelledSet(
            self.batch.subset(index),
            self.truth[index],
            [self.corruption[int(i)] for i in index],
            self.cell[index],
        )

    @classmethod
    def from_synth(cls, data: SynthSet, cell: int = 0) -> LabelledSet:
        return cls(data.batch, data.truth, list(data.corruption), np.full(len(data), cell))


def concat(parts: Sequence[LabelledSet]) -> LabelledSet:
    """One set from several (inputs in order)."""
    b = [p.batch for p in parts]
    batch = InputBatch(
        matrix=np.concatenate([x.matrix for x in b]),
        translation_mm=np.concatenate([x.translation_mm for x in b]),
        rotation_deg=np.concatenate([x.rotation_deg for x in b]),
        isocenter_mm=np.concatenate([x.isocenter_mm for x in b]),
        has_isocenter=np.concatenate([x.has_isocenter for x in b]),
        rotation_step_deg=np.concatenate([x.rotation_step_deg for x in b]),
        translation_step_mm=np.concatenate([x.translation_step_mm for x in b]),
        orthonormality_error=np.concatenate([x.orthonormality_error for x in b]),
        isocenter_bound_mm=np.concatenate([x.isocenter_bound_mm for x in b]),
    )
    return LabelledSet(
        batch,
        np.concatenate([p.truth for p in parts]),
        [c for p in parts for c in p.corruption],
        np.concatenate([p.cell for p in parts]),
    )


def cell_seed(seed: int, role: Role, cell: int) -> int:
    """A seed for one cell of one mixture; distinct roles never collide."""
    return int(np.random.SeedSequence([seed, int(role), cell]).generate_state(1)[0])


def mixture(
    n: int,
    seed: int,
    role: Role,
    rotation_ranges_deg: Sequence[float],
    precisions: Sequence[tuple[float, float]],
    isocenter_fraction: float = 0.5,
    corrupt_fraction: float = 0.0,
    shift_sigma_mm: float = 3.0,
    positions: dict[PatientPosition, float] | None = None,
) -> LabelledSet:
    """``n`` cases spread evenly over every (rotation range, precision) cell.

    ``positions``: relative frequency of each patient position (default
    :data:`model.training.synth.POSITION_WEIGHTS`).
    """
    weights = tuple((positions or POSITION_WEIGHTS).items())
    cells = [(r, p) for r in rotation_ranges_deg for p in precisions]
    per = [n // len(cells) + (1 if k < n % len(cells) else 0) for k in range(len(cells))]
    parts = []
    for k, ((rr, (step_r, step_t)), m) in enumerate(zip(cells, per, strict=True)):
        if m == 0:
            continue
        config = SynthConfig(
            n=m,
            seed=cell_seed(seed, role, k),
            rotation_range_deg=float(rr),
            shift_sigma_mm=shift_sigma_mm,
            precision=Precision(float(step_r), float(step_t)),
            isocenter_fraction=isocenter_fraction,
            corrupt_fraction=corrupt_fraction,
            positions=weights,
        )
        parts.append(LabelledSet.from_synth(generate(config), cell=k))
    return concat(parts)


def load_set_folder(folder: Path) -> LabelledSet:
    """A folder written by ``sro-decoder synth`` (SRO files and ``truth.jsonl``) as a set.

    Matrices and offsets are read back from the files (docs/contract.md section 1, default
    profile); the
    precision, true convention and corruption come from ``truth.jsonl``.
    """
    import json

    import pydicom

    from model.conventions import Convention
    from model.inputs import PRIVATE_BLOCK
    from model.inputs.profiles import OffsetProfile

    truth_path = folder / "truth.jsonl"
    if not truth_path.is_file():
        raise FileNotFoundError(f"{folder} has no truth.jsonl (write one with `sro-decoder synth`)")
    inputs: list[DecodeInput] = []
    truth: list[int] = []
    kinds: list[Corruption | None] = []
    for line in truth_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        prec = Precision(float(rec["precision"]["rotation_step_deg"]),
                         float(rec["precision"]["translation_step_mm"]))
        read = PRIVATE_BLOCK.read(pydicom.dcmread(folder / rec["file"]),
                                  OffsetProfile(precision=prec))
        reg = read.registration
        if read.offset is None:
            raise ValueError(f"{rec['file']} carries no couch offset")
        inputs.append(DecodeInput(np.asarray(reg.effective_matrix, dtype=np.float64).reshape(4, 4),
                                  read.offset, prec, reg.orthonormality_error))
        conv = rec.get("convention")
        truth.append(Convention.from_dict(conv).index if conv else -1)
        kinds.append(None if rec.get("corruption") is None else Corruption(rec["corruption"]))
    return LabelledSet(InputBatch.from_inputs(inputs), np.array(truth, dtype=np.int64), kinds,
                       np.zeros(len(truth), dtype=np.int64))
