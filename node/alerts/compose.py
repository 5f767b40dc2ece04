"""The alert e-mail for a flagged decision (docs/contract.md section 4): what, from whom, why, what
to check.

Patient name and ID appear only when ``[alerts] include_patient_identity`` is true; otherwise
the object is identified by its SOP Instance UID, sender and archive path alone.

Every value a sender controls (UIDs, AE titles, peer address, patient name and ID, the console,
the reason quoting the data) enters the e-mail through :mod:`node.text`: the subject is one
bounded header line and no value can start a line of the body (issue 9).
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass

from model.decision import CheckName, DecisionKind, DecodeRecord
from model.errors import InvalidReason
from node.records import AlertMessage
from node.text import header_safe, line_safe

_WHAT_TO_CHECK: dict[DecisionKind, tuple[str, ...]] = {
    DecisionKind.AMBIGUOUS: (
        "Several conventions explain this offset and matrix but move the patient differently;",
        "the data alone cannot tell them apart. Do not rely on an automatic conversion for this",
        "sender until the convention is confirmed:",
        "- confirm the rotation order and the direction of the correction (correction vs. its",
        "  inverse, e.g. MOSAIQ 'Setup Offset Reference' Beam vs Anatomy) with the console's",
        "  documentation or a phantom shift of known sign;",
        "- confirm the patient position (HFS, HFP, FFS, FFP or decubitus) recorded for the",
        "  session;",
        "- larger couch rotations separate the conventions: the next fraction may decide it.",
    ),
    DecisionKind.OUT_OF_DISTRIBUTION: (
        "No convention explains the data: the reported couch offset and the registration matrix",
        "disagree beyond the console's display precision. Check:",
        "- units: translations in cm read as mm, rotations in radians read as degrees (the",
        "  offset profile for this calling AE title sets the unit);",
        "- that the offset belongs to this registration (not another session or fraction);",
        "- the patient position: an orientation other than the eight DICOM positions, or a",
        "  position entered wrongly at the console;",
        "- the display precision configured for this sender, and sign conventions of the axes.",
    ),
    DecisionKind.INVALID: (
        "The object is not a decodable Spatial Registration. It was archived but not decoded.",
        "Check the sender's export settings (SOP class, RIGID matrix type, one registered",
        "frame of reference), or whether the transfer was cut short, then resend.",
    ),
}

_INVALID_HINTS: dict[InvalidReason, str] = {
    InvalidReason.NOT_SPATIAL_REGISTRATION:
        "The data set is not Spatial Registration Storage: check what the sender exports.",
    InvalidReason.MATRIX_TYPE_NOT_RIGID:
        "Only RIGID matrices are decoded; RIGID_SCALE or AFFINE registrations are out of scope.",
    InvalidReason.UNREADABLE:
        "The data set could not be parsed: the transfer may have been cut short or corrupted.",
    InvalidReason.OFFSET_INVALID:
        "The couch offset block is present but malformed: check the offset profile for this AE.",
    InvalidReason.DATASET_TOO_LARGE:
        "The data set is larger than [node] max_dataset_bytes; it was refused and not archived.",
}


@dataclass(frozen=True, slots=True)
class ReceiptContext:
    """Where an object came from, for the e-mail (never patient data unless asked)."""

    sop_instance_uid: str | None
    calling_ae_title: str | None
    called_ae_title: str | None
    peer_address: str | None
    received_at: dt.datetime
    archive_path: str | None
    patient_name: str | None = None
    patient_id: str | None = None
    #: the SRO's Station Name (0008,1010) and Study Date/Time (0008,0020/0030), as sent
    station_name: str | None = None
    study_date_time: str | None = None
    #: the node's own ``--config``/``--data-dir``, so that the ack command reaches its database
    ack_options: tuple[str, ...] = ()


def _pct(p: float) -> str:
    return f"{100 * p:.2f}%" if p >= 1e-4 else f"{p:.1e}"


def compose_alert(
    record: DecodeRecord,
    ctx: ReceiptContext,
    recipients: tuple[str, ...],
    *,
    include_patient_identity: bool = False,
) -> AlertMessage:
    """The e-mail for one flagged record."""
    safe = line_safe  # every value from the sender, once, here
    sender = safe(ctx.calling_ae_title or "an unknown sender")
    uid = safe(ctx.sop_instance_uid or record.sop_instance_uid or "(no SOP Instance UID)")
    label = record.decision.value.replace("_", " ").upper()
    console_check = next((c for c in record.checks if c.name is CheckName.CONSOLE_CONVENTION),
                         None)
    failing = [c for c in record.checks if c.result.flags]
    if not record.decision.flagged and failing:
        label = f"{failing[0].name.value.replace('_', ' ')} {failing[0].result.value}".upper()
    station = safe(ctx.station_name) if ctx.station_name else None
    console = f"{station} ({sender})" if station else sender
    subject = header_safe(f"[SRO Decoder] {label}: console {console} ({uid})")

    lines = [f"Decision: {record.decision.value}", ""]
    # what a physicist must read first: a failing check, the likely causes
    for c in failing:
        lines += [f"{c.name.value}: {c.result.value}", f"  {safe(c.sentence)}"]
    if record.likely_causes:
        lines.append("Likely causes (hints, not decisions), most likely first:")
        lines += [f"  {k}. {safe(c.sentence)}" for k, c in enumerate(record.likely_causes, 1)]
    if failing or record.likely_causes:
        lines.append("")
    lines += ["What was received", "-----------------"]
    lines.append(f"SOP Instance UID:   {uid}")
    lines.append(f"Console:            {console}")
    if ctx.study_date_time:
        lines.append(f"Study date/time:    {safe(ctx.study_date_time)}")
    lines.append(f"Calling AE title:   {sender}"
                 + (f" at {safe(ctx.peer_address)}" if ctx.peer_address else ""))
    if ctx.called_ae_title:
        lines.append(f"To (called AE):     {safe(ctx.called_ae_title)}")
    lines.append(f"Received (UTC):     {ctx.received_at.astimezone(dt.UTC).isoformat()}")
    if ctx.archive_path:
        lines.append(f"Archived as:        {safe(ctx.archive_path)}")
    if record.offset is not None:
        o = record.offset
        lines.append("Reported offset:    translation (mm) "
                     + ", ".join(f"{v:g}" for v in o.translation_mm)
                     + "; rotation (deg) " + ", ".join(f"{v:g}" for v in o.rotation_deg))
        if o.isocenter_mm is not None:
            lines.append("Isocenter (mm):     " + ", ".join(f"{v:g}" for v in o.isocenter_mm))
        if o.console:
            lines.append(f"Console:            {safe(o.console)}")
    if include_patient_identity:
        lines.append(f"Patient name:       {safe(ctx.patient_name or '(none)')}")
        lines.append(f"Patient ID:         {safe(ctx.patient_id or '(none)')}")

    lines += ["", "Decision and why", "----------------", f"{record.decision.value}: "
              f"{safe(record.reason or 'no reason given')}"]
    if record.reason_code:
        lines.append(f"(code: {safe(record.reason_code.value)})")
    if record.convention is not None:
        declared = record.declared_patient_position
        lines.append(f"Patient position:   declared {safe(declared) if declared else '(none)'}"
                     f", decoded {record.convention.patient_position.value}")
    if record.equivalent_probability is not None:
        lines.append(f"Probability of {record.convention} and the conventions clinically "
                     f"equivalent to it: {_pct(record.equivalent_probability)}")
    if record.settled or record.open:
        lines.append("Settled: " + (", ".join(c.value for c in record.settled) or "nothing")
                     + "; open: " + (", ".join(c.value for c in record.open) or "nothing"))
    if console_check is not None and console_check not in failing:
        lines.append(f"Console check: {console_check.result.value}: "
                     f"{safe(console_check.sentence)}")

    if record.top_conventions:
        lines += ["", "Most probable conventions", "-------------------------",
                  "order  direction  position  probability  displacement from the first (mm)"]
        for conv, p, disp in record.top_conventions:
            lines.append(f"{conv.order.value:<6} {'inverse' if conv.inverse else 'direct':<10} "
                         f"{conv.patient_position.value:<9} {_pct(p):>11}  {disp:.2f}")
        if record.residual_rotation_deg is not None:
            res = f"Residual of the most probable: {record.residual_rotation_deg:.3g} deg"
            if record.residual_translation_mm is not None:
                res += f", {record.residual_translation_mm:.3g} mm"
            lines.append(res)
    if record.alternatives:
        lines += ["", "Credible set (0.99 of the probability) besides the most probable:"]
        for a in record.alternatives:
            lines.append(f"- {a.convention}: p={_pct(a.probability)}, "
                         f"{a.displacement_mm:.2f} mm from the most probable")

    lines += ["", "What to check", "-------------", *_WHAT_TO_CHECK.get(record.decision, ())]
    if record.decision is DecisionKind.INVALID and record.reason_code in _INVALID_HINTS:
        lines.append(_INVALID_HINTS[record.reason_code])

    m = record.model
    lines += ["", f"Model: {safe(m.name)} {safe(m.version)}"
              + (f" (sha256 {safe(m.sha256)})" if m.sha256 else ""),
              "",
              "Acknowledge after review with:",
              # quoted: the line is meant to be pasted into a shell
              f"  sro-decoder audit ack {shlex.quote(uid)} --by YOUR_NAME "
              "--note 'what was found'"
              + "".join(f" {shlex.quote(safe(o))}" for o in ctx.ack_options)]
    return AlertMessage(subject=subject, body="\n".join(lines) + "\n", recipients=recipients)
