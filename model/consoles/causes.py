"""Likely causes of an ``out_of_distribution`` decision (docs/contract.md section 7).

Each reporting error of the fixed list is undone on the reported offset and the result decoded
with the exact likelihood (:class:`model.decoders.analytic.AnalyticDecoder`), every variant of
every input in one batch: translations in cm read as mm (×10) or the reverse (÷10), rotations
in radians, one rotation's sign flipped (3), one translation's sign flipped (3), the rotation
axes relabelled (the 47 other signed permutations of pitch, roll and yaw, MOSAIQ's
coronal/sagittal/transverse naming among them). A cause is listed when some convention then
explains the data; causes are ordered by how well they fit (energy to 0.5 nats), then by the
list's order. A likely cause is a hint for a person, never a decision.

The matrix of another registration of the same SRO (the list's last entry) needs the other
candidates' matrices, which the record does not carry; it is not tried here.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from model.batch import InputBatch
from model.conventions import HYPOTHESES, FloatArray
from model.decision import CauseKind, LikelyCause
from model.decoders.analytic import AnalyticDecoder
from model.geometry import implied_offsets


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
                  expected: np.ndarray | None = None) -> list[tuple[LikelyCause, ...]]:
    """The likely causes of each input of ``batch`` (pass the out-of-distribution ones).

    ``expected`` (N, H), when known, marks the hypotheses the input should have (the declared
    patient position, the console's established convention): a cause whose corrected data fit
    one of them ranks before one that fits only others (a translation's sign flipped and a
    rotation's sign flipped can explain the same data under two patient positions)."""
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

    def rep(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, v, axis=0)

    big = InputBatch(
        matrix=rep(batch.matrix), translation_mm=t.reshape(n * v, 3),
        rotation_deg=r.reshape(n * v, 3), isocenter_mm=rep(batch.isocenter_mm),
        has_isocenter=rep(batch.has_isocenter), rotation_step_deg=rep(batch.rotation_step_deg),
        translation_step_mm=step_t.reshape(n * v), orthonormality_error=rep(
            batch.orthonormality_error), isocenter_bound_mm=rep(batch.isocenter_bound_mm))
    th, rh = implied_offsets(batch.matrix, batch.isocenter_mm)
    ll = decoder.log_likelihood(big, (rep(th), rep(rh))).reshape(n, v, -1)  # (N, V, H)
    best = ll.max(axis=-1)  # (N, V)
    explains = best >= decoder.min_log_likelihood
    if expected is None:
        fits_expected = np.zeros_like(explains)
    else:
        fits_expected = np.where(expected[:, None, :], ll, -np.inf).max(axis=-1) \
            >= decoder.min_log_likelihood
    log_post = ll - np.logaddexp.reduce(ll, axis=-1, keepdims=True)
    out: list[tuple[LikelyCause, ...]] = []
    for i in range(n):
        found: dict[CauseKind, tuple[bool, float, int]] = {}
        for jj in np.flatnonzero(explains[i]):
            j = int(jj)
            kind = VARIANTS[j].kind
            key = (bool(fits_expected[i, j]), float(best[i, j]), j)
            if kind not in found or key[:2] > found[kind][:2]:
                found[kind] = key
        ranked = sorted(found.items(), key=lambda kv: (not kv[1][0], -round(kv[1][1] * 2) / 2,
                                                       _ORDER[kv[0]]))
        causes = []
        for kind, (pref, _, j) in ranked[:max_causes]:
            row = ll[i, j] if expected is None or not pref else np.where(
                expected[i], ll[i, j], -np.inf)
            h = int(np.argmax(row))
            p = float(math.exp(log_post[i, j, h]))
            conv = HYPOTHESES[h]
            corrected = {"translation_mm": [round(float(x), 4) for x in t[i, j]],
                         "rotation_deg": [round(float(x), 4) for x in r[i, j]]}
            causes.append(LikelyCause(
                kind=kind, convention=conv, probability=p, corrected_offset=corrected,
                sentence=f"{VARIANTS[j].words}: the data then fit {conv} (p={p:.2f})"))
        out.append(tuple(causes))
    return out
