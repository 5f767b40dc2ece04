"""Likely causes of an ``out_of_distribution`` decision (docs/contract.md section 7).

Each reporting error of the fixed list is undone on the reported offset and the result decoded
with the exact likelihood (:class:`model.decoders.analytic.AnalyticDecoder`), every variant of
every input in one batch: translations in cm read as mm (×10) or the reverse (÷10), rotations
in radians, one rotation's sign flipped (3), one translation's sign flipped (3), the rotation
axes relabelled (the 47 other signed permutations of pitch, roll and yaw, MOSAIQ's
coronal/sagittal/transverse naming among them). A cause is listed when some convention then
explains the data; causes are ordered by how well they fit (energy to 0.5 nats), then by the
list's order. A likely cause is a hint for a person, never a decision.

The list's last entry, the matrix of another registration of the same SRO (docs/contract.md
section 1), is tried in the same batch: the reported offset unchanged with each registration
that was not decoded (:class:`OtherRegistration`, its effective matrix), when the caller gives
them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.batch import InputBatch
from model.conventions import HYPOTHESES, FloatArray
from model.decision import Candidate, CauseKind, LikelyCause
from model.decoders.analytic import AnalyticDecoder
from model.geometry import implied_offsets, rotation_block_error


@dataclass(frozen=True, slots=True)
class OtherRegistration:
    """A registration of the same SRO that was not decoded, with its effective matrix
    ``inv(A_ref) · A_candidate`` (docs/contract.md sections 1 and 7)."""

    candidate: Candidate
    matrix: FloatArray  # (4, 4)


@dataclass(frozen=True, slots=True)
class _Variant:
    kind: CauseKind
    words: str
    t_scale: FloatArray  # (3,) multiplies the translation
    r_perm: tuple[int, int, int]  # the reported rotation's component that holds each axis
    r_sign: FloatArray  # (3,)
    r_radians: bool = False


def _variants() -> tuple[_Variant, ...]:
    one, axes = np.ones(3), ("pitch", "roll", "yaw")
    ident = (0, 1, 2)
    out = [
        _Variant(CauseKind.CENTIMETRES_AS_MM, "translations in cm read as mm (×10)",
                 one * 10, ident, one),
        _Variant(CauseKind.MM_AS_CENTIMETRES, "translations in mm read as cm (÷10)",
                 one / 10, ident, one),
        _Variant(CauseKind.RADIANS, "rotations in radians read as degrees", one, ident, one,
                 True),
    ]
    for a in range(3):
        s = one.copy()
        s[a] = -1
        out.append(_Variant(CauseKind.ROTATION_SIGN, f"the {axes[a]} rotation's sign flipped",
                            one, ident, s))
    for a in range(3):
        s = one.copy()
        s[a] = -1
        out.append(_Variant(CauseKind.TRANSLATION_SIGN,
                            f"the {'XYZ'[a]} translation's sign flipped", s, ident, one))
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            if perm == ident:
                continue  # identity with signs: the sign flips above (or all three flipped)
            names = ", ".join(f"{axes[i]} = {'−' if sg < 0 else ''}{axes[perm[i]]}"
                              for i, sg in enumerate(signs))
            out.append(_Variant(CauseKind.AXES_RELABELLED,
                                f"rotation axes relabelled ({names} as reported)", one,
                                (perm[0], perm[1], perm[2]), np.array(signs)))
    return tuple(out)


VARIANTS: tuple[_Variant, ...] = _variants()
_ORDER = {k: i for i, k in enumerate(CauseKind)}


def likely_causes(batch: InputBatch, *, max_causes: int = 3,
                  decoder: AnalyticDecoder | None = None,
                  expected: np.ndarray | None = None,
                  others: Sequence[Sequence[OtherRegistration]] | None = None,
                  ) -> list[tuple[LikelyCause, ...]]:
    """The likely causes of each input of ``batch`` (pass the out-of-distribution ones).

    ``expected`` (N, H), when known, marks the hypotheses the input should have (the declared
    patient position, the console's established convention): a cause whose corrected data fit
    one of them ranks before one that fits only others (a translation's sign flipped and a
    rotation's sign flipped can explain the same data under two patient positions).

    ``others`` (one sequence per input), when given, holds the registrations of the same SRO
    that were not decoded, each with its effective matrix (docs/contract.md section 1): the
    reported offset is tried unchanged with each matrix (the list's last cause, one per input:
    the registration that fits best, the first of equals)."""
    n, v = len(batch), len(VARIANTS)
    if n == 0:
        return []
    decoder = decoder or AnalyticDecoder()
    t_scale = np.stack([x.t_scale for x in VARIANTS])  # (V, 3)
    perm = np.array([x.r_perm for x in VARIANTS])  # (V, 3)
    sign = np.stack([x.r_sign for x in VARIANTS])  # (V, 3)
    rad = np.array([x.r_radians for x in VARIANTS])
    t = batch.translation_mm[:, None, :] * t_scale[None]  # (N, V, 3)
    r = batch.rotation_deg[:, perm] * sign[None]  # (N, V, 3)
    r = np.where(rad[None, :, None], np.degrees(r), r)
    step_t = batch.translation_step_mm[:, None] * np.abs(t_scale[None, :, 0])  # units scaled

    # the other registrations: (K,) owner input and the registration, (K, 4, 4) matrices
    owner = np.array([i for i, row in enumerate(others or ()) for _ in row], dtype=np.int64)
    regs = [o for row in (others or ()) for o in row]
    k_other = len(regs)
    other_m = np.array([o.matrix for o in regs], dtype=np.float64).reshape(k_other, 4, 4)

    def rep(a: np.ndarray) -> np.ndarray:
        return np.concatenate([np.repeat(a, v, axis=0), a[owner]])

    big = InputBatch(
        matrix=np.concatenate([np.repeat(batch.matrix, v, axis=0), other_m]),
        translation_mm=np.concatenate([t.reshape(n * v, 3), batch.translation_mm[owner]]),
        rotation_deg=np.concatenate([r.reshape(n * v, 3), batch.rotation_deg[owner]]),
        isocenter_mm=rep(batch.isocenter_mm), has_isocenter=rep(batch.has_isocenter),
        rotation_step_deg=rep(batch.rotation_step_deg),
        translation_step_mm=np.concatenate([step_t.reshape(n * v),
                                            batch.translation_step_mm[owner]]),
        orthonormality_error=np.concatenate([np.repeat(batch.orthonormality_error, v),
                                             rotation_block_error(other_m)[0]]),
        isocenter_bound_mm=rep(batch.isocenter_bound_mm))
    th, rh = implied_offsets(batch.matrix, batch.isocenter_mm)
    th_o, rh_o = implied_offsets(other_m, batch.isocenter_mm[owner])
    ll_all = decoder.log_likelihood(  # every variant and every other registration at once
        big, (np.concatenate([np.repeat(th, v, axis=0), th_o]),
              np.concatenate([np.repeat(rh, v, axis=0), rh_o])))
    if expected is None:
        expected = np.zeros((n, ll_all.shape[-1]), dtype=bool)
    row_expected = np.concatenate([np.repeat(expected, v, axis=0), expected[owner]])
    best_all = ll_all.max(axis=-1)
    explains_all = best_all >= decoder.min_log_likelihood
    fits_all = np.where(row_expected, ll_all, -np.inf).max(axis=-1) >= decoder.min_log_likelihood
    post_all = ll_all - np.logaddexp.reduce(ll_all, axis=-1, keepdims=True)
    rows_of: list[list[int]] = [[i * v + j for j in range(v)] for i in range(n)]
    for k, i in enumerate(owner):
        rows_of[int(i)].append(n * v + k)

    out: list[tuple[LikelyCause, ...]] = []
    for i in range(n):
        found: dict[CauseKind, tuple[bool, float, int]] = {}
        for row in rows_of[i]:
            if not explains_all[row]:
                continue
            kind = VARIANTS[row - i * v].kind if row < n * v else CauseKind.OTHER_REGISTRATION
            key = (bool(fits_all[row]), float(best_all[row]), row)
            if kind not in found or key[:2] > found[kind][:2]:
                found[kind] = key
        ranked = sorted(found.items(), key=lambda kv: (not kv[1][0], -round(kv[1][1] * 2) / 2,
                                                       _ORDER[kv[0]]))
        causes = []
        for kind, (pref, _, row) in ranked[:max_causes]:
            h = int(np.argmax(np.where(row_expected[row], ll_all[row], -np.inf) if pref
                              else ll_all[row]))
            p = float(math.exp(post_all[row, h]))
            conv = HYPOTHESES[h]
            corrected = {"translation_mm": [round(float(x), 4) for x in big.translation_mm[row]],
                         "rotation_deg": [round(float(x), 4) for x in big.rotation_deg[row]]}
            if row < n * v:
                words, reg = VARIANTS[row - i * v].words, None
            else:
                reg = regs[row - n * v].candidate
                words = f"the offset is that of another registration ({_name(reg)})"
            causes.append(LikelyCause(
                kind=kind, convention=conv, probability=p, corrected_offset=corrected,
                sentence=f"{words}: the data then fit {conv} (p={p:.2f})", registration=reg))
        out.append(tuple(causes))
    return out


def _name(candidate: Candidate) -> str:
    parts = [f"label {candidate.label!r}" if candidate.label else "",
             f"comment {candidate.comment!r}" if candidate.comment and
             candidate.comment != candidate.label else ""]
    return ", ".join(p for p in parts if p) or \
        f"item {candidate.item}.{candidate.matrix_item}"
