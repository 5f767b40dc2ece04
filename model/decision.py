"""The decisions of SPEC section 4 and the decode record of SPEC section 5.

Every SRO ends in exactly one :class:`DecisionKind`. The credible set is the fewest hypotheses
holding at least 0.99 of the posterior; two hypotheses are clinically equivalent when the
transforms they imply from the reported offset differ by at most ``tolerance_mm`` within
``radius_mm`` of the isocenter (``|Δu| + radius · ‖R₁ − R₂‖₂``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from model.batch import InputBatch
from model.conventions import HYPOTHESES, Convention
from model.decoder import DecoderOutput, ModelInfo
from model.errors import InvalidReason
from model.geometry import (
    DEFAULT_ISOCENTER_BOUND_MM,
    displacement_bound_mm,
    forward,
    implied_offsets,
    no_isocenter_excess,
    wrap_degrees,
)
from model.offset import CouchOffset, Precision

CREDIBLE_MASS = 0.99


class DecisionKind(str, Enum):
    """The one decision every received object ends in (SPEC section 4)."""

    CONFIDENT = "confident"
    AMBIGUOUS = "ambiguous"
    OUT_OF_DISTRIBUTION = "out_of_distribution"
    INVALID = "invalid"
    NO_OFFSET = "no_offset"

    @property
    def flagged(self) -> bool:
        """Whether an operator must be alerted."""
        return self in (
            DecisionKind.AMBIGUOUS,
            DecisionKind.OUT_OF_DISTRIBUTION,
            DecisionKind.INVALID,
        )


@dataclass(frozen=True, slots=True)
class DecisionPolicy:
    """Clinical-equivalence settings (SPEC section 4 defaults) and ``isocenter_bound_mm``, what
    the translation of an input without an isocenter is checked against (docs/contract.md
    section 3; default 2000)."""

    tolerance_mm: float = 1.0
    radius_mm: float = 100.0
    credible_mass: float = CREDIBLE_MASS
    isocenter_bound_mm: float = DEFAULT_ISOCENTER_BOUND_MM

    def __post_init__(self) -> None:
        if not self.tolerance_mm > 0 or not self.radius_mm > 0:
            raise ValueError("tolerance_mm and radius_mm must be positive")
        if not 0 < self.isocenter_bound_mm < float("inf"):
            raise ValueError("isocenter_bound_mm must be positive and finite")
        if not 0 < self.credible_mass < 1:
            raise ValueError("credible_mass must be in (0, 1)")


@dataclass(frozen=True, slots=True)
class Alternative:
    convention: Convention
    probability: float
    displacement_mm: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "convention": self.convention.as_dict(),
            "probability": self.probability,
            "displacement_mm": self.displacement_mm,
        }


@dataclass(frozen=True, slots=True)
class DecodeRecord:
    """One decode, in the shape of SPEC section 5 (``as_dict`` is the JSON line)."""

    decision: DecisionKind
    reason: str | None
    model: ModelInfo
    path: str | None = None
    sop_instance_uid: str | None = None
    reason_code: InvalidReason | None = None
    convention: Convention | None = None
    probability: float | None = None
    alternatives: tuple[Alternative, ...] = ()
    energy: float | None = None
    residual_rotation_deg: float | None = None
    residual_translation_mm: float | None = None
    offset: CouchOffset | None = None
    precision: Precision | None = None
    implied_offsets: tuple[dict[str, Any], ...] = ()
    top_conventions: tuple[tuple[Convention, float, float], ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def flagged(self) -> bool:
        return self.decision.flagged

    def as_dict(self) -> dict[str, Any]:
        residual = None
        if self.residual_rotation_deg is not None:
            residual = {
                "rotation_deg": self.residual_rotation_deg,
                "translation_mm": self.residual_translation_mm,
            }
        return {
            "path": self.path,
            "sop_instance_uid": self.sop_instance_uid,
            "decision": self.decision.value,
            "reason": self.reason,
            "reason_code": None if self.reason_code is None else self.reason_code.value,
            "convention": None if self.convention is None else self.convention.as_dict(),
            "probability": self.probability,
            "alternatives": [a.as_dict() for a in self.alternatives],
            "energy": self.energy,
            "residual": residual,
            "model": self.model.as_dict(),
            "offset": None if self.offset is None else self.offset.as_dict(),
            "precision": None
            if self.precision is None
            else {
                "rotation_step_deg": self.precision.rotation_step_deg,
                "translation_step_mm": self.precision.translation_step_mm,
            },
            "top_conventions": [
                {"convention": c.as_dict(), "probability": p, "displacement_mm": d}
                for c, p, d in self.top_conventions
            ],
            "implied_offsets": list(self.implied_offsets),
            "warnings": list(self.warnings),
        }


def invalid_record(
    model: ModelInfo,
    code: InvalidReason,
    message: str,
    *,
    path: str | None = None,
    sop_instance_uid: str | None = None,
) -> DecodeRecord:
    return DecodeRecord(
        decision=DecisionKind.INVALID,
        reason=message,
        reason_code=code,
        model=model,
        path=path,
        sop_instance_uid=sop_instance_uid,
    )


def no_offset_record(
    model: ModelInfo,
    matrix: np.ndarray,
    *,
    path: str | None = None,
    sop_instance_uid: str | None = None,
    warnings: tuple[str, ...] = (),
) -> DecodeRecord:
    """A valid SRO without an offset: each hypothesis's implied offset (rotation about origin)."""
    t, r = implied_offsets(matrix[None])
    implied = tuple(
        {
            "convention": h.as_dict(),
            "rotation_deg": [round(float(v), 6) for v in r[0, k]],
            "translation_about_origin_mm": [round(float(v), 6) for v in t[0, k]],
        }
        for k, h in enumerate(HYPOTHESES)
    )
    return DecodeRecord(
        decision=DecisionKind.NO_OFFSET,
        reason="the SRO carries no couch offset; the offset each convention implies is listed",
        model=model,
        path=path,
        sop_instance_uid=sop_instance_uid,
        implied_offsets=implied,
        warnings=warnings,
    )


def credible_sets(posterior: np.ndarray, mass: float) -> list[np.ndarray]:
    """The fewest hypotheses holding ``mass`` of each posterior row, most probable first."""
    order = np.argsort(-posterior, axis=1, kind="stable")
    sorted_p = np.take_along_axis(posterior, order, axis=1)
    cum = np.cumsum(sorted_p, axis=1)
    # count of hypotheses needed: first index where the cumulative mass reaches `mass`
    sizes = np.minimum((cum < mass - 1e-12).sum(axis=1) + 1, posterior.shape[1])
    return [order[i, : sizes[i]] for i in range(posterior.shape[0])]


def decide(
    batch: InputBatch,
    output: DecoderOutput,
    model: ModelInfo,
    policy: DecisionPolicy,
    precisions: list[Precision] | None = None,
    offsets: list[CouchOffset] | None = None,
) -> list[DecodeRecord]:
    """Turn a decoder's posterior and energies into one record per input (SPEC section 4)."""
    n = len(batch)
    if n == 0:
        return []
    posterior = np.exp(output.log_posterior)
    predicted = forward(
        batch.translation_mm, batch.rotation_deg, batch.isocenter_mm
    )  # (N, H, 4, 4)
    centre = batch.isocenter_mm  # zeros (the origin of the rotation) where absent
    sets = credible_sets(posterior, policy.credible_mass)
    top_idx = np.argmax(posterior, axis=1)
    # the offsets the decoder computed (all but the baseline do), or computed here
    t_h, r_h = output.implied_offsets or implied_offsets(batch.matrix, batch.isocenter_mm)
    t_best, r_best = t_h[np.arange(n), top_idx], r_h[np.arange(n), top_idx]
    res_r_all = np.abs(wrap_degrees(r_best - batch.rotation_deg)).max(axis=1)
    res_t_all = np.abs(t_best - batch.translation_mm).max(axis=1)
    disp_all = displacement_bound_mm(
        predicted, predicted[np.arange(n), top_idx][:, None], centre[:, None, :], policy.radius_mm
    )  # (N, H)
    records = []
    for i in range(n):
        best = int(top_idx[i])
        members = [int(k) for k in sets[i]]
        alternatives = tuple(
            Alternative(HYPOTHESES[k], float(posterior[i, k]), float(disp_all[i, k]))
            for k in members
            if k != best
        )
        top5 = np.argsort(-posterior[i], kind="stable")[:5]
        top = tuple(
            (HYPOTHESES[int(k)], float(posterior[i, k]), float(disp_all[i, k])) for k in top5
        )
        res_r = float(res_r_all[i])
        res_t = float(res_t_all[i]) if batch.has_isocenter[i] else None
        far = [a for a in alternatives if a.displacement_mm > policy.tolerance_mm]
        if output.out_of_distribution[i]:
            kind = DecisionKind.OUT_OF_DISTRIBUTION
            where = f"{res_r:.3g}° in rotation"
            if res_t is not None:
                where += f" and {res_t:.3g} mm in translation"
            else:
                outside = float(no_isocenter_excess(
                    batch.matrix[i:i + 1], batch.translation_mm[i:i + 1],
                    batch.translation_step_mm[i:i + 1], batch.isocenter_bound_mm[i:i + 1],
                )[0, best].max())
                if outside > 0:
                    where += (f" and a translation {outside:.3g} mm beyond what any isocenter "
                              f"within {float(batch.isocenter_bound_mm[i]):g} mm allows")
            reason = (
                "no convention explains the data: the offset and the matrix disagree beyond the "
                f"display precision (the best, {HYPOTHESES[best]}, leaves {where}; "
                "check units, the registration the offset belongs to, and the patient position)"
            )
        elif far:
            kind = DecisionKind.AMBIGUOUS
            listed = ", ".join(
                f"{a.convention} (p={a.probability:.3f}, {a.displacement_mm:.2f} mm)" for a in far
            )
            reason = (
                f"the credible set holds conventions not clinically equivalent to "
                f"{HYPOTHESES[best]} within {policy.tolerance_mm:g} mm at "
                f"{policy.radius_mm:g} mm: {listed}"
            )
        else:
            kind = DecisionKind.CONFIDENT
            reason = None
        records.append(
            DecodeRecord(
                decision=kind,
                reason=reason,
                model=model,
                convention=HYPOTHESES[best],
                probability=float(posterior[i, best]),
                alternatives=alternatives,
                energy=float(output.energy[i]),
                residual_rotation_deg=res_r,
                residual_translation_mm=res_t,
                offset=None if offsets is None else offsets[i],
                precision=None if precisions is None else precisions[i],
                top_conventions=top,
            )
        )
    return records
