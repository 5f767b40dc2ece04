"""Synthetic IGRT data drawn from the forward model of docs/contract.md section 3.

Realistic by default: patients treated in several sessions on one console each, each console
with a fixed rotation order and direction, patients in one of the eight positions (mostly
supine, a few decubitus), couch rotations within ±3°, shifts of a few mm, isocenters inside the
body, display rounding and DS precision of the matrix. Options widen the ranges, draw the
positions uniformly, and corrupt a labelled fraction of cases the way real errors happen.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.batch import InputBatch
from model.conventions import (
    HYPOTHESES,
    PATIENT_TO_IEC,
    Convention,
    FloatArray,
    PatientPosition,
    RotationOrder,
)
from model.dicom.sro import ds_round, write
from model.geometry import euler_to_matrix, rigid_inverse, rotation_block_error
from model.offset import CouchOffset, Precision


class Corruption(str, Enum):
    """Ways real offsets fail to match their matrix (DOMAIN.md)."""

    RADIANS = "radians"  # rotations reported in radians, read as degrees
    CENTIMETRES = "cm"  # translations reported in cm, read as mm
    SIGN_FLIP = "sign_flip"  # one rotation's sign flipped
    OTHER_REGISTRATION = "other_registration"  # offset of another session of the patient
    #: patient axes in an orientation none of the eight positions has (upright, across the
    #: couch): an axis mapping the console does not model. (Contract version 1 drew decubitus
    #: here; decubitus is inside the hypothesis space since version 2.)
    OTHER_ORIENTATION = "other_orientation"


def _orientation_name(p: FloatArray) -> str:
    """``X=+z,Y=+x,Z=+y``: where each IEC axis points in patient (LPS) axes."""
    rows = []
    for axis, row in zip("XYZ", p, strict=True):
        k = int(np.abs(row).argmax())
        rows.append(f"{axis}={'+' if row[k] > 0 else '-'}{'xyz'[k]}")
    return ",".join(rows)


def _other_orientations() -> dict[str, FloatArray]:
    """The 16 proper signed permutations that are none of docs/contract.md section 2's eight
    ``P``."""
    known = [p for p in PATIENT_TO_IEC.values()]
    out: dict[str, FloatArray] = {}
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            p = np.zeros((3, 3))
            p[np.arange(3), perm] = signs
            if np.linalg.det(p) > 0 and not any(np.array_equal(p, q) for q in known):
                out[_orientation_name(p)] = p
    return out


#: Orientations outside the hypothesis space (:attr:`Corruption.OTHER_ORIENTATION`).
OTHER_ORIENTATIONS: dict[str, FloatArray] = _other_orientations()

#: A realistic clinic: mostly supine, decubitus rare (docs/contract.md section 2).
POSITION_WEIGHTS: dict[PatientPosition, float] = {
    PatientPosition.HFS: 0.62,
    PatientPosition.FFS: 0.13,
    PatientPosition.HFP: 0.1,
    PatientPosition.FFP: 0.05,
    PatientPosition.HFDR: 0.03,
    PatientPosition.HFDL: 0.03,
    PatientPosition.FFDR: 0.02,
    PatientPosition.FFDL: 0.02,
}
#: Every position equally often.
UNIFORM_POSITIONS: dict[PatientPosition, float] = {p: 1.0 for p in PatientPosition}


def position_weights(spec: str) -> dict[PatientPosition, float]:
    """``clinic`` (:data:`POSITION_WEIGHTS`), ``all`` (uniform over the eight) or a
    comma-separated list of positions (uniform over those)."""
    name = spec.strip()
    if name == "clinic":
        return dict(POSITION_WEIGHTS)
    if name == "all":
        return dict(UNIFORM_POSITIONS)
    chosen = [PatientPosition(v.strip().upper()) for v in name.split(",") if v.strip()]
    if not chosen:
        raise ValueError(f"no patient position in {spec!r}")
    return {p: 1.0 for p in chosen}


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Settings of a synthetic set; the defaults are the realistic clinic."""

    n: int = 1000
    seed: int = 0
    rotation_range_deg: float = 3.0
    shift_sigma_mm: float = 3.0
    shift_limit_mm: float = 20.0
    precision: Precision = field(default_factory=Precision)
    isocenter_fraction: float = 1.0
    corrupt_fraction: float = 0.0
    corruptions: tuple[Corruption, ...] = tuple(Corruption)
    n_consoles: int = 6
    sessions_per_patient: tuple[int, int] = (3, 12)
    matrix_digits: tuple[int, ...] = (15, 8, 6)
    #: relative frequency of each patient position (positions not listed never occur)
    positions: tuple[tuple[PatientPosition, float], ...] = tuple(POSITION_WEIGHTS.items())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["corruptions"] = [c.value for c in self.corruptions]
        out["positions"] = {p.value: w for p, w in self.positions}
        return out


@dataclass(frozen=True, slots=True)
class SynthSet:
    """``N`` synthetic cases as arrays (what the files hold) plus their labels."""

    batch: InputBatch  # matrix as read back from DS, reported offset, precision
    truth: npt.NDArray[np.int64]  # (N,) hypothesis index, −1 outside them (other orientation)
    corruption: list[Corruption | None]
    true_translation_mm: FloatArray  # (N, 3) before display rounding
    true_rotation_deg: FloatArray
    patient: npt.NDArray[np.int64]
    console: npt.NDArray[np.int64]
    session: npt.NDArray[np.int64]
    matrix_digits: npt.NDArray[np.int64]
    true_position: list[str]
    config: SynthConfig

    def __len__(self) -> int:
        return len(self.truth)

    @property
    def corrupted(self) -> npt.NDArray[np.bool_]:
        return np.array([c is not None for c in self.corruption])


def round_to_step(values: FloatArray, step: float | FloatArray) -> FloatArray:
    """Display rounding: the nearest multiple of ``step`` (half away from zero)."""
    q = np.asarray(values) / step
    # the last round() removes binary noise (6.6000000000000005 is written as 6.6)
    return np.round(np.sign(q) * np.floor(np.abs(q) + 0.5) * step, 10)


def _correction(
    t: FloatArray, r: FloatArray, c: FloatArray, order: RotationOrder, inverse: bool, p: FloatArray
) -> FloatArray:
    """docs/contract.md section 3 for one case with an arbitrary signed permutation ``p``."""
    rot = p.T @ euler_to_matrix(order, r) @ p
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = c - rot @ c + p.T @ t
    return rigid_inverse(m) if inverse else m


def generate(config: SynthConfig) -> SynthSet:
    """Draw ``config.n`` cases, deterministically from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    n = config.n
    orders = list(RotationOrder)
    positions = [p for p, _ in config.positions]
    weights = np.array([w for _, w in config.positions], dtype=np.float64)
    console_order = rng.integers(0, len(orders), config.n_consoles)
    console_inverse = rng.random(config.n_consoles) < 0.5
    console_digits = rng.choice(np.array(config.matrix_digits), config.n_consoles)

    patient = np.empty(n, dtype=np.int64)
    session = np.empty(n, dtype=np.int64)
    i = pid = 0
    lo, hi = config.sessions_per_patient
    while i < n:
        k = min(int(rng.integers(lo, hi + 1)), n - i)
        patient[i : i + k] = pid
        session[i : i + k] = np.arange(k)
        i += k
        pid += 1
    n_patients = pid
    patient_console = rng.integers(0, config.n_consoles, n_patients)
    patient_position = rng.choice(len(positions), n_patients, p=weights / weights.sum())
    # isocenter inside the body, LPS mm: lateral, AP and along the couch
    patient_iso = np.round(
        np.column_stack(
            [
                rng.uniform(-80, 80, n_patients),
                rng.uniform(-60, 80, n_patients),
                rng.uniform(-600, 200, n_patients),
            ]
        ),
        1,
    )  # consoles report the isocenter to 0.1 mm
    patient_has_iso = rng.random(n_patients) < config.isocenter_fraction

    rr = config.rotation_range_deg
    lim = config.shift_limit_mm
    true_r = rng.uniform(-rr, rr, (n, 3))
    true_t = np.clip(rng.normal(0.0, config.shift_sigma_mm, (n, 3)), -lim, lim)
    console = patient_console[patient]
    iso = patient_iso[patient]
    has_iso = patient_has_iso[patient]
    prec = config.precision
    rep_r = round_to_step(true_r, prec.rotation_step_deg)
    rep_t = round_to_step(true_t, prec.translation_step_mm)

    corrupt = rng.random(n) < config.corrupt_fraction
    kinds: list[Corruption | None] = [None] * n
    truth = np.empty(n, dtype=np.int64)
    true_pos: list[str] = []
    matrices = np.empty((n, 4, 4))
    digits = console_digits[console]
    for j in range(n):
        order = orders[int(console_order[console[j]])]
        inverse = bool(console_inverse[console[j]])
        position = positions[int(patient_position[patient[j]])]
        conv = Convention(order, inverse, position)
        p = conv.permutation
        pos_name = position.value
        kind: Corruption | None = None
        if corrupt[j]:
            kind = config.corruptions[int(rng.integers(0, len(config.corruptions)))]
            if kind is Corruption.OTHER_ORIENTATION:
                pos_name = str(rng.choice(list(OTHER_ORIENTATIONS)))
                p = OTHER_ORIENTATIONS[pos_name]
            elif kind is Corruption.RADIANS:
                rep_r[j] = np.round(np.radians(true_r[j]), 4)
            elif kind is Corruption.CENTIMETRES:
                rep_t[j] = np.round(true_t[j] / 10.0, 2)
            elif kind is Corruption.SIGN_FLIP:
                axis = int(rng.integers(0, 3))
                rep_r[j, axis] = -rep_r[j, axis]
            elif kind is Corruption.OTHER_REGISTRATION:
                other_r = rng.uniform(-rr, rr, 3)
                other_t = np.clip(rng.normal(0, config.shift_sigma_mm, 3), -lim, lim)
                rep_r[j] = round_to_step(other_r, prec.rotation_step_deg)
                rep_t[j] = round_to_step(other_t, prec.translation_step_mm)
        kinds[j] = kind
        truth[j] = conv.index if kind is not Corruption.OTHER_ORIENTATION else -1
        true_pos.append(pos_name)
        m = _correction(true_t[j], true_r[j], iso[j], order, inverse, p)
        matrices[j] = ds_round(m, int(digits[j]))
    batch = InputBatch(
        matrix=matrices,
        translation_mm=rep_t + 0.0,
        rotation_deg=rep_r + 0.0,
        isocenter_mm=np.where(has_iso[:, None], iso, 0.0),
        has_isocenter=has_iso.copy(),
        rotation_step_deg=np.full(n, prec.rotation_step_deg),
        translation_step_mm=np.full(n, prec.translation_step_mm),
        orthonormality_error=rotation_block_error(matrices)[0],
    )
    return SynthSet(
        batch=batch,
        truth=truth,
        corruption=kinds,
        true_translation_mm=true_t,
        true_rotation_deg=true_r,
        patient=patient,
        console=console,
        session=session,
        matrix_digits=digits.astype(np.int64),
        true_position=true_pos,
        config=config,
    )


def write_set(data: SynthSet, out_dir: Path) -> Path:
    """Write one SRO per case and ``truth.jsonl``; returns the truth file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    b = data.batch
    width = max(5, len(str(len(data))))
    truth_path = out_dir / "truth.jsonl"
    with truth_path.open("w", encoding="utf-8") as fh:
        for j in range(len(data)):
            iso = tuple(float(v) for v in b.isocenter_mm[j]) if b.has_isocenter[j] else None
            offset = CouchOffset(
                translation_mm=_vec(b.translation_mm[j]),
                rotation_deg=_vec(b.rotation_deg[j]),
                isocenter_mm=iso,  # type: ignore[arg-type]
                console=f"CONSOLE{int(data.console[j]) + 1}",
            )
            pid = f"SYNTH{int(data.patient[j]):05d}"
            ds = write(
                b.matrix[j],
                offset,
                patient_id=pid,
                patient_name=f"SYNTHETIC^{pid}",
                matrix_digits=int(data.matrix_digits[j]),
                station_name=offset.console,
            )
            name = f"sro_{j:0{width}d}.dcm"
            ds.save_as(out_dir / name, enforce_file_format=True)
            truth_conv = None
            if data.truth[j] >= 0:
                truth_conv = HYPOTHESES[int(data.truth[j])].as_dict()
            kind = data.corruption[j]
            record = {
                "file": name,
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "convention": truth_conv,
                "patient_position": data.true_position[j],
                "offset": offset.as_dict(),
                "true_offset": {
                    "translation_mm": [float(v) for v in data.true_translation_mm[j]],
                    "rotation_deg": [float(v) for v in data.true_rotation_deg[j]],
                },
                "precision": {
                    "rotation_step_deg": float(b.rotation_step_deg[j]),
                    "translation_step_mm": float(b.translation_step_mm[j]),
                },
                "patient_id": pid,
                "session": int(data.session[j]),
                "console": offset.console,
                "matrix_digits": int(data.matrix_digits[j]),
                "corruption": None if kind is None else kind.value,
            }
            fh.write(json.dumps(record) + "\n")
    (out_dir / "synth_config.json").write_text(json.dumps(data.config.as_dict(), indent=2))
    return truth_path


def _vec(values: Sequence[float] | FloatArray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))
