"""Synthetic console histories (docs/contract.md section 6): consoles with a fixed convention
over many fractions, and labelled events.

Each console treats a few patients (each in one position, declared in Patient Position
(0018,5100) for most of them) for ``fractions`` SROs in time order. A history may hold one
labelled :class:`EventKind` from fraction ``event_at`` on:

- ``upgrade``: the console's rotation order changes (a software upgrade);
- ``direction_flip``: the direction is reversed (MOSAIQ "Setup Offset Reference" Beam/Anatomy);
- ``sign_flip``: one rotation's sign is flipped in the reported offset for that fraction only;
- ``corrupted``: one SRO corrupted as :class:`model.training.synth.Corruption` says (cm, radians,
  sign flip, another registration's offset), that fraction only;
- ``shared_ae_title``: a second console (another Station Name, another convention) starts
  sending under the same calling AE title, its SROs interleaved with the first's.

``replay`` (:mod:`model.training.console_eval`) feeds a set through the history rules in time
order; ``sro-decoder synth --histories N`` writes it as SROs with ``histories.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.batch import InputBatch
from model.conventions import HYPOTHESES, Convention, PatientPosition, RotationOrder
from model.dicom.sro import ds_round, write
from model.geometry import rotation_block_error
from model.offset import CouchOffset, Precision
from model.training.synth import POSITION_WEIGHTS, Corruption, _correction, round_to_step


class EventKind(str, Enum):
    """A labelled event of a synthetic history."""

    UPGRADE = "upgrade"
    DIRECTION_FLIP = "direction_flip"
    SIGN_FLIP = "sign_flip"
    CORRUPTED = "corrupted"
    SHARED_AE_TITLE = "shared_ae_title"

    @property
    def one_fraction(self) -> bool:
        return self in (EventKind.SIGN_FLIP, EventKind.CORRUPTED)


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """Settings of a set of histories; ``events`` are drawn for ``event_share`` of them."""

    n_consoles: int = 200
    fractions: int = 30
    seed: int = 0
    event_share: float = 0.0
    events: tuple[EventKind, ...] = tuple(EventKind)
    #: the event happens at a fraction drawn in this range (after learning has had its chance)
    event_window: tuple[int, int] = (12, 24)
    patients_per_console: tuple[int, int] = (2, 4)
    declared_share: float = 0.7
    #: share of patients whose offsets carry the isocenter (the others: section 3's checks)
    isocenter_share: float = 0.5
    rotation_range_deg: float = 3.0
    #: share of fractions with a wider couch rotation (within ±``wide_range_deg``), where the
    #: rotation orders stop being clinically equivalent
    wide_share: float = 0.15
    wide_range_deg: float = 10.0
    shift_sigma_mm: float = 3.0
    precision: Precision = field(default_factory=Precision)
    matrix_digits: int = 8
    corruptions: tuple[Corruption, ...] = (Corruption.CENTIMETRES, Corruption.RADIANS,
                                           Corruption.SIGN_FLIP, Corruption.OTHER_REGISTRATION)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events"] = [e.value for e in self.events]
        out["corruptions"] = [c.value for c in self.corruptions]
        return out


@dataclass(frozen=True, slots=True)
class HistorySet:
    """Every SRO of every history, in time order within each console (arrays of length N)."""

    batch: InputBatch
    truth: npt.NDArray[np.int64]  # hypothesis that made the matrix
    console: npt.NDArray[np.int64]  # the history (first console) it belongs to
    sender: npt.NDArray[np.int64]  # 0: the history's console, 1: the second console (shared AE)
    fraction: npt.NDArray[np.int64]  # index in its history
    patient: list[str]
    declared: list[str | None]
    station: list[str]
    ae_title: list[str]
    #: per history: the event (None), its first fraction (−1), and the convention after it
    event: list[EventKind | None]
    event_at: npt.NDArray[np.int64]
    event_convention: list[Convention | None]
    #: per SRO: whether a labelled event affects it (the one corrupted fraction, every SRO after
    #: an upgrade or a flip, the second console's SROs)
    affected: npt.NDArray[np.bool_]
    corruption: list[Corruption | None]
    config: HistoryConfig

    def __len__(self) -> int:
        return len(self.truth)


def generate_histories(config: HistoryConfig) -> HistorySet:
    """Draw the histories of ``config``, deterministically from its seed."""
    rng = np.random.default_rng(config.seed)
    orders = list(RotationOrder)
    positions = list(POSITION_WEIGHTS)
    weights = np.array(list(POSITION_WEIGHTS.values()))
    weights = weights / weights.sum()
    prec = config.precision
    rr = config.rotation_range_deg
    rows: list[dict[str, Any]] = []
    events: list[EventKind | None] = []
    event_at: list[int] = []
    event_conv: list[Convention | None] = []
    for c in range(config.n_consoles):
        order, inverse = orders[int(rng.integers(0, 6))], bool(rng.random() < 0.5)
        n_pat = int(rng.integers(config.patients_per_console[0],
                                 config.patients_per_console[1] + 1))
        pats = [(f"C{c:04d}P{k}", positions[int(rng.choice(len(positions), p=weights))],
                 bool(rng.random() < config.declared_share),
                 np.round([rng.uniform(-80, 80), rng.uniform(-60, 80), rng.uniform(-600, 200)], 1),
                 bool(rng.random() < config.isocenter_share))
                for k in range(n_pat)]
        kind: EventKind | None = None
        at = -1
        if rng.random() < config.event_share:
            kind = config.events[int(rng.integers(0, len(config.events)))]
            last = config.fractions - 1
            lo, hi = min(config.event_window[0], last), min(config.event_window[1], last)
            at = int(rng.integers(lo, hi + 1))
        new_order, new_inverse = order, inverse
        if kind is EventKind.UPGRADE:
            new_order = orders[(orders.index(order) + int(rng.integers(1, 6))) % 6]
        elif kind is EventKind.DIRECTION_FLIP:
            new_inverse = not inverse
        elif kind is EventKind.SHARED_AE_TITLE:
            new_order, new_inverse = orders[int(rng.integers(0, 6))], not inverse
        events.append(kind)
        event_at.append(at)
        event_conv.append(None if kind is None else Convention(
            new_order, new_inverse, PatientPosition.HFS))
        corruption = config.corruptions[int(rng.integers(0, len(config.corruptions)))] \
            if kind is EventKind.CORRUPTED else None
        second_pats = [(f"C{c:04d}Q{k}", positions[int(rng.choice(len(positions), p=weights))],
                        True, np.round([rng.uniform(-80, 80), rng.uniform(-60, 80),
                                        rng.uniform(-600, 200)], 1), True) for k in range(2)]
        f = 0
        n_rows = config.fractions
        while f < n_rows:
            sender = 0
            if kind is EventKind.SHARED_AE_TITLE and f >= at and rng.random() < 0.5:
                sender = 1
            pid, pos, declared, iso, has_iso = (second_pats if sender else pats)[
                int(rng.integers(0, 2 if sender else n_pat))]
            changed = kind in (EventKind.UPGRADE, EventKind.DIRECTION_FLIP) and f >= at
            use_order, use_inverse = (new_order, new_inverse) if changed or sender else (
                order, inverse)
            wide = rng.random() < config.wide_share
            true_r = rng.uniform(-rr, rr, 3)
            if wide:
                true_r = rng.uniform(-1, 1, 3) * config.wide_range_deg
            true_t = np.clip(rng.normal(0, config.shift_sigma_mm, 3), -20, 20)
            rep_r = round_to_step(true_r, prec.rotation_step_deg)
            rep_t = round_to_step(true_t, prec.translation_step_mm)
            this_corruption: Corruption | None = None
            if kind is EventKind.SIGN_FLIP and f == at:
                axis = int(np.argmax(np.abs(rep_r)))  # the flip that matters most
                rep_r[axis] = -rep_r[axis]
                this_corruption = Corruption.SIGN_FLIP
            elif kind is EventKind.CORRUPTED and f == at:
                this_corruption = corruption
                if corruption is Corruption.CENTIMETRES:
                    rep_t = np.round(true_t / 10.0, 2).astype(np.float64)
                elif corruption is Corruption.RADIANS:
                    rep_r = np.round(np.radians(true_r), 4).astype(np.float64)
                elif corruption is Corruption.SIGN_FLIP:
                    axis = int(rng.integers(0, 3))
                    rep_r[axis] = -rep_r[axis]
                elif corruption is Corruption.OTHER_REGISTRATION:
                    rep_r = round_to_step(rng.uniform(-rr, rr, 3), prec.rotation_step_deg)
                    rep_t = round_to_step(np.clip(rng.normal(0, config.shift_sigma_mm, 3),
                                                  -20, 20), prec.translation_step_mm)
            conv = Convention(use_order, use_inverse, pos)
            m = ds_round(_correction(true_t, true_r, iso, use_order, use_inverse,
                                     conv.permutation), config.matrix_digits)
            rows.append({
                "matrix": m, "t": rep_t + 0.0, "r": rep_r + 0.0, "iso": iso, "has_iso": has_iso,
                "truth": conv.index, "console": c, "sender": sender, "fraction": f,
                "patient": pid, "declared": pos.value if declared else None,
                "station": f"XVI-{c:04d}" + ("-B" if sender else ""),
                "ae": f"IGRT{c:04d}",
                "affected": bool(sender or changed or (kind is not None and kind.one_fraction
                                                       and f == at)),
                "corruption": this_corruption,
            })
            f += 1
    n = len(rows)
    matrices = np.array([r["matrix"] for r in rows]).reshape(n, 4, 4)
    batch = InputBatch(
        matrix=matrices,
        translation_mm=np.array([r["t"] for r in rows]).reshape(n, 3),
        rotation_deg=np.array([r["r"] for r in rows]).reshape(n, 3),
        isocenter_mm=np.array([r["iso"] if r["has_iso"] else np.zeros(3) for r in rows],
                              dtype=np.float64).reshape(n, 3),
        has_isocenter=np.array([r["has_iso"] for r in rows], dtype=bool),
        rotation_step_deg=np.full(n, prec.rotation_step_deg),
        translation_step_mm=np.full(n, prec.translation_step_mm),
        orthonormality_error=rotation_block_error(matrices)[0],
    )
    return HistorySet(
        batch=batch, truth=np.array([r["truth"] for r in rows], dtype=np.int64),
        console=np.array([r["console"] for r in rows], dtype=np.int64),
        sender=np.array([r["sender"] for r in rows], dtype=np.int64),
        fraction=np.array([r["fraction"] for r in rows], dtype=np.int64),
        patient=[r["patient"] for r in rows], declared=[r["declared"] for r in rows],
        station=[r["station"] for r in rows], ae_title=[r["ae"] for r in rows],
        event=events, event_at=np.array(event_at, dtype=np.int64), event_convention=event_conv,
        affected=np.array([r["affected"] for r in rows]),
        corruption=[r["corruption"] for r in rows], config=config)


def offset_of(data: HistorySet, j: int) -> CouchOffset:
    b = data.batch
    return CouchOffset(
        translation_mm=(float(b.translation_mm[j, 0]), float(b.translation_mm[j, 1]),
                        float(b.translation_mm[j, 2])),
        rotation_deg=(float(b.rotation_deg[j, 0]), float(b.rotation_deg[j, 1]),
                      float(b.rotation_deg[j, 2])),
        isocenter_mm=(float(b.isocenter_mm[j, 0]), float(b.isocenter_mm[j, 1]),
                      float(b.isocenter_mm[j, 2])) if b.has_isocenter[j] else None,
        console=None)


def write_histories(data: HistorySet, out_dir: Path) -> Path:
    """One SRO per fraction (named so that sorting by name replays time order: fraction-major,
    so the consoles interleave as a clinic's day does) with Station Name, Manufacturer and
    Patient Position, and ``histories.jsonl`` (one line per SRO, its console's event labelled);
    returns the truth file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(data)), key=lambda j: (int(data.fraction[j]), int(data.console[j])))
    truth = out_dir / "histories.jsonl"
    with truth.open("w", encoding="utf-8") as fh:
        for rank, j in enumerate(order):
            c = int(data.console[j])
            ds = write(data.batch.matrix[j], offset_of(data, j), patient_id=data.patient[j],
                       patient_name=f"SYNTHETIC^{data.patient[j]}",
                       matrix_digits=data.config.matrix_digits, station_name=data.station[j])
            ds.Manufacturer = "SYNTHETIC"
            ds.ManufacturerModelName = "SRO Decoder Ring histories"
            if data.declared[j] is not None:
                ds.PatientPosition = data.declared[j]
            name = f"h{rank:06d}.dcm"
            ds.save_as(out_dir / name, enforce_file_format=True)
            kind = data.event[c]
            conv = data.event_convention[c]
            corruption = data.corruption[j]
            fh.write(json.dumps({
                "file": name, "sop_instance_uid": str(ds.SOPInstanceUID),
                "calling_ae_title": data.ae_title[j], "station_name": data.station[j],
                "history": c, "fraction": int(data.fraction[j]), "patient_id": data.patient[j],
                "declared_patient_position": data.declared[j],
                "convention": HYPOTHESES[int(data.truth[j])].as_dict(),
                "event": None if kind is None else kind.value,
                "event_at": int(data.event_at[c]),
                "event_order_direction": None if conv is None else
                f"{conv.order.value}/{'inverse' if conv.inverse else 'direct'}",
                "affected": bool(data.affected[j]),
                "corruption": None if corruption is None else corruption.value,
            }) + "\n")
    (out_dir / "histories_config.json").write_text(json.dumps(data.config.as_dict(), indent=2))
    return truth
