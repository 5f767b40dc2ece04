"""The decisions of docs/contract.md section 4 and the decode record of docs/contract.md section 5.

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
    """The one decision every received object ends in (docs/contract.md section 4)."""

    CONFIDENT = "confident"
    AMBIGUOUS = "ambiguous"
    OUT_OF_DISTRIBUTION = "out_of_distribution"
    INVALID = "invalid"
    NO_OFFSET = "no_offset"
    OFFSET_ONLY = "offset_only"  # a companion object: an offset and no matrix (section 1)

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
    """Clinical-equivalence settings (docs/contract.md section 4 defaults) and
    ``isocenter_bound_mm``, what
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


class CheckName(str, Enum):
    """The checks that can flag a decision beyond its kind (docs/contract.md section 4)."""

    DECLARED_POSITION = "declared_position"  # section 1: the SRO's Patient Position (0018,5100)
    CONSOLE_CONVENTION = "console_convention"  # section 6: the console's established convention
    PAIRING = "pairing"  # section 1: the companion object pairing


class CheckResult(str, Enum):
    """A check's result: ``passed``/``consistent`` do not flag, the failing ones do."""

    PASSED = "passed"
    FAILED = "failed"  # declared_position: the decoded position is not the declared one
    CONSISTENT = "consistent"  # console_convention
    CHANGED = "changed"  # console_convention: flagged
    AMBIGUOUS = "ambiguous"  # pairing: two candidates equally near, or two companions: flagged
    NOT_CHECKED = "not_checked"  # nothing to check against (not flagged)

    @property
    def flags(self) -> bool:
        """Whether this result flags the record (and alerts an operator)."""
        return self in (CheckResult.FAILED, CheckResult.CHANGED, CheckResult.AMBIGUOUS)


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a record: its name, result and a sentence a physicist reads; ``details``
    holds what the check compared (JSON-serialisable)."""

    name: CheckName
    result: CheckResult
    sentence: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name.value, "result": self.result.value, "sentence": self.sentence,
                "details": dict(self.details)}


class OffsetSourceKind(str, Enum):
    """Where a record's couch offset came from (docs/contract.md sections 1 and 4)."""

    OVERRIDE = "override"  # --offset / --isocenter on the command line
    PRIVATE_ELEMENTS = "private_elements"  # the SRO's own private elements (the sender's profile)
    COMPANION = "companion"  # a companion object (the XVI RPS export), named by its UID


@dataclass(frozen=True, slots=True)
class OffsetSource:
    """Where the offset came from: ``kind`` and, for a companion, its SOP Instance UID; for
    private elements, the profile that read them (docs/contract.md section 4)."""

    kind: OffsetSourceKind
    sop_instance_uid: str | None = None  # COMPANION: the companion's SOP Instance UID
    profile: str | None = None  # PRIVATE_ELEMENTS / COMPANION: the offset profile's name

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "sop_instance_uid": self.sop_instance_uid,
                "profile": self.profile}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One registration found in an SRO (docs/contract.md section 1, "several registrations"):
    a Matrix Registration Sequence item of a registered Registration Sequence item, its label
    (the sender's private label element, e.g. XVI's (0021,xx39)) and Frame of Reference
    Transformation Comment (3006,00C8); ``decoded`` marks the one selected. ``item`` and
    ``matrix_item`` are 1-based positions in the Registration Sequence and in that item's Matrix
    Registration Sequence."""

    frame_of_reference_uid: str
    label: str | None
    comment: str | None
    item: int
    matrix_item: int
    decoded: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"frame_of_reference_uid": self.frame_of_reference_uid, "label": self.label,
                "comment": self.comment, "item": self.item, "matrix_item": self.matrix_item,
                "decoded": self.decoded}


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


class Component(str, Enum):
    """The three components of a convention (docs/contract.md section 4: settled or open)."""

    ORDER = "order"
    DIRECTION = "direction"
    PATIENT_POSITION = "patient_position"


class CauseKind(str, Enum):
    """The reporting errors tried, in this fixed order, for an ``out_of_distribution`` decision
    (docs/contract.md section 7)."""

    CENTIMETRES_AS_MM = "translations_cm_read_as_mm"
    MM_AS_CENTIMETRES = "translations_mm_read_as_cm"
    RADIANS = "rotations_in_radians"
    ROTATION_SIGN = "rotation_sign_flipped"
    TRANSLATION_SIGN = "translation_sign_flipped"
    AXES_RELABELLED = "rotation_axes_relabelled"
    OTHER_REGISTRATION = "other_registration"


@dataclass(frozen=True, slots=True)
class LikelyCause:
    """A reporting error that would explain an out-of-distribution input, with the convention
    that then fits (docs/contract.md section 7): a hint for a person, never a decision."""

    kind: CauseKind
    sentence: str
    convention: Convention
    probability: float  # of ``convention`` once the error is undone
    corrected_offset: dict[str, Any] = field(default_factory=dict)
    #: the registration whose matrix explains the offset (``OTHER_REGISTRATION`` only)
    registration: Candidate | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"cause": self.kind.value, "sentence": self.sentence,
               "convention": self.convention.as_dict(), "probability": self.probability,
               "corrected_offset": dict(self.corrected_offset)}
        if self.registration is not None:
            out["registration"] = self.registration.as_dict()
        return out


@dataclass(frozen=True, slots=True)
class DecodeRecord:
    """One decode, in the shape of docs/contract.md section 5 (``as_dict`` is the JSON line)."""

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
    checks: tuple[Check, ...] = ()
    #: where ``offset`` came from (``None``: no offset)
    offset_source: OffsetSource | None = None
    #: the registrations found in the SRO, the decoded one marked (section 1)
    candidates: tuple[Candidate, ...] = ()
    #: Patient Position (0018,5100) as the SRO declares it (a defined term of PS3.3 C.7.3.1.1.2,
    #: or the sender's text when it is none of the eight), ``None`` when absent
    declared_patient_position: str | None = None
    #: the other object of a companion pair: for an SRO, its companion's SOP Instance UID; for
    #: an ``offset_only`` companion record, its SRO's
    paired_sop_instance_uid: str | None = None
    #: the posterior mass of the hypotheses clinically equivalent to the most probable one
    equivalent_probability: float | None = None
    #: components the same across the credible set, and those that are not (section 4)
    settled: tuple[Component, ...] = ()
    open: tuple[Component, ...] = ()
    #: for ``out_of_distribution``: the reporting errors that would explain it (section 7)
    likely_causes: tuple[LikelyCause, ...] = ()
    #: the whole posterior over :data:`HYPOTHESES` (not in the JSON line: the console's
    #: history combines it with the established convention, docs/contract.md section 6)
    posterior: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def flagged(self) -> bool:
        """Flagged by its decision or by a failing check (docs/contract.md section 4)."""
        return self.decision.flagged or any(c.result.flags for c in self.checks)

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
            "checks": [c.as_dict() for c in self.checks],
            "offset_source": None if self.offset_source is None else self.offset_source.as_dict(),
            "candidates": [c.as_dict() for c in self.candidates],
            "declared_patient_position": self.declared_patient_position,
            "paired_sop_instance_uid": self.paired_sop_instance_uid,
            "equivalent_probability": self.equivalent_probability,
            "settled": [c.value for c in self.settled],
            "open": [c.value for c in self.open],
            "likely_causes": [c.as_dict() for c in self.likely_causes],
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


def offset_only_record(
    model: ModelInfo,
    offset: CouchOffset,
    *,
    path: str | None = None,
    sop_instance_uid: str | None = None,
    paired_sop_instance_uid: str | None = None,
    precision: Precision | None = None,
    checks: tuple[Check, ...] = (),
    warnings: tuple[str, ...] = (),
    profile: str | None = None,
) -> DecodeRecord:
    """A companion object's record (docs/contract.md section 4, ``offset_only``): the offset it
    carries, its source (the companion itself), and the SRO it is paired with, if any. Flagged
    only through ``checks`` (a ``pairing`` check that is ambiguous); a companion that cannot be
    read is an ``invalid`` record instead."""
    if paired_sop_instance_uid is None:
        reason = "a companion object: its offset waits for the SRO it belongs to"
    else:
        reason = f"a companion object: its offset decodes the SRO {paired_sop_instance_uid}"
    return DecodeRecord(
        decision=DecisionKind.OFFSET_ONLY,
        reason=reason,
        model=model,
        path=path,
        sop_instance_uid=sop_instance_uid,
        offset=offset,
        precision=precision,
        offset_source=OffsetSource(OffsetSourceKind.COMPANION, sop_instance_uid, profile),
        paired_sop_instance_uid=paired_sop_instance_uid,
        checks=checks,
        warnings=warnings,
    )


_COMPONENT_NAMES = {Component.ORDER: "rotation order", Component.DIRECTION: "direction",
                    Component.PATIENT_POSITION: "patient position"}


def settled_components(
    members: list[Convention],
) -> tuple[tuple[Component, ...], tuple[Component, ...]]:
    """Which of order, direction and patient position are the same across ``members`` (the
    credible set), and which are open (docs/contract.md section 4)."""
    counts = {
        Component.ORDER: len({h.order for h in members}),
        Component.DIRECTION: len({h.inverse for h in members}),
        Component.PATIENT_POSITION: len({h.patient_position for h in members}),
    }
    settled = tuple(c for c, n in counts.items() if n <= 1)
    return settled, tuple(c for c, n in counts.items() if n > 1)


def open_components_reason(open_: tuple[Component, ...], members: list[Convention],
                           spread_mm: float, policy: DecisionPolicy) -> str:
    """The reason of a ``confident`` decision with open components, in words
    (docs/contract.md section 4: "rotation order not determined: 6 orders within 0.3 mm at
    100 mm")."""
    counts: dict[Component, tuple[int, str]] = {
        Component.ORDER: (len({h.order for h in members}), "orders"),
        Component.DIRECTION: (len({h.inverse for h in members}), "directions"),
        Component.PATIENT_POSITION: (len({h.patient_position for h in members}), "positions"),
    }
    parts = [f"{_COMPONENT_NAMES[c]} not determined: {counts[c][0]} {counts[c][1]}"
             for c in open_]
    return (f"{'; '.join(parts)} within {spread_mm:.2g} mm at {policy.radius_mm:g} mm "
            f"(clinically equivalent within {policy.tolerance_mm:g} mm, so the decision is "
            "confident)")


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
    """Turn a decoder's posterior and energies into one record per input (docs/contract.md section
    4)."""
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
        settled, open_ = settled_components([HYPOTHESES[k] for k in members])
        if kind is DecisionKind.CONFIDENT and open_:
            reason = open_components_reason(open_, [HYPOTHESES[k] for k in members],
                                            float(disp_all[i, members].max()), policy)
        records.append(
            DecodeRecord(
                decision=kind,
                reason=reason,
                model=model,
                convention=HYPOTHESES[best],
                probability=float(posterior[i, best]),
                equivalent_probability=float(
                    posterior[i][disp_all[i] <= policy.tolerance_mm].sum()),
                settled=settled,
                open=open_,
                posterior=tuple(float(v) for v in posterior[i]),
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
