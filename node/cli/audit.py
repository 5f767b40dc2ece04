"""``sro-decoder audit``: review the audit database (list, show, ack, export).

Takes the same ``--config`` and ``--data-dir`` as ``serve`` and so opens the same database.
Acknowledgements are added rows, never edits.

What a sender wrote (AE titles, UIDs, reasons) is shown literally in the table (no ``rich``
markup, control characters escaped) and cannot run as a formula from the CSV export (a cell
starting with ``= + - @``, tab or CR gets a leading ``'``); the operator's ``--by`` and
``--note`` are refused with a message when they cannot be stored as given (issue 9).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import shutil
import sys
from typing import Any

from node.cli.common import (
    UsageError,
    add_settings_arguments,
    existing_database,
)
from node.text import NOTE_MAX, OPERATOR_NAME_MAX, csv_safe, is_utf8, operator_text, table_safe

DECISIONS = ("confident", "ambiguous", "out_of_distribution", "invalid", "no_offset",
             "offset_only")
CSV_FIELDS = (
    "sop_instance_uid", "decision", "reason_code", "reason", "convention", "probability",
    "energy", "residual_rotation_deg", "residual_translation_mm", "alternatives",
    "model_name", "model_version", "model_sha256", "received_at", "console", "calling_ae_title",
    "peer_address", "archive_path", "dimse_status", "duplicates", "flagged", "alert_state",
    "acknowledgements", "offset_source", "pairing_state", "paired_sop_instance_uids",
    "equivalent_probability", "settled", "open", "likely_causes",
)
#: ``audit list``'s letters for the open components (docs/contract.md section 4)
_OPEN_LETTERS = {"order": "O", "direction": "D", "patient_position": "P"}


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 date or date-time (UTC when no offset is given)."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from exc
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="review the audit database")
    add_settings_arguments(p)
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    lst = asub.add_parser("list", help="decisions as a table (fits 120 columns)")
    add_settings_arguments(lst, after_action=True)
    lst.add_argument("--flagged", action="store_true", help="only flagged decisions")
    lst.add_argument("--unacknowledged", action="store_true",
                     help="only decisions no one has acknowledged yet")
    lst.add_argument("--decision", choices=DECISIONS, default=None,
                     help="only decisions of this kind")
    lst.add_argument("--since", type=parse_time, default=None, metavar="T",
                     help="received at or after T (ISO 8601, UTC by default)")
    lst.set_defaults(func=run_list)

    show = asub.add_parser("show", help="one object's full record")
    add_settings_arguments(show, after_action=True)
    show.add_argument("uid", metavar="UID", help="SOP Instance UID")
    show.set_defaults(func=run_show)

    ack = asub.add_parser("ack", help="acknowledge a decision (adds a record)")
    add_settings_arguments(ack, after_action=True)
    ack.add_argument("uid", metavar="UID", help="SOP Instance UID")
    ack.add_argument("--by", required=True, metavar="NAME",
                     help=f"who acknowledges (at most {OPERATOR_NAME_MAX} characters)")
    ack.add_argument("--note", default=None, metavar="TEXT",
                     help=f"what was found (at most {NOTE_MAX} characters)")
    ack.set_defaults(func=run_ack)

    export = asub.add_parser(
        "export", help="every record, docs/contract.md section 5 plus the node's fields")
    add_settings_arguments(export, after_action=True)
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                        help="one JSON object a line (default) or CSV with a header row")
    export.add_argument("--flagged", action="store_true", help="only flagged decisions")
    export.add_argument("--unacknowledged", action="store_true",
                        help="only decisions no one has acknowledged yet")
    export.add_argument("--since", type=parse_time, default=None, metavar="T",
                        help="received at or after T (ISO 8601, UTC by default)")
    export.set_defaults(func=run_export)


def run_list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy.orm import Session

    from node.audit.store import alert_state, duplicate_counts, query_decisions

    engine = existing_database(args)
    with Session(engine) as session:
        rows = query_decisions(session, flagged=True if args.flagged else None,
                               decision=args.decision, since=args.since,
                               unacknowledged=args.unacknowledged)
        dups = duplicate_counts(session)
        table = Table(title=f"{len(rows)} decision(s)", box=box.SIMPLE_HEAD,
                      collapse_padding=True, pad_edge=False)
        # the console: the offset's console text, else the calling AE title (`audit show` has
        # both); the UID comes last and is the only column that folds, so it reads whole
        # p≡: the equivalent probability, with the open components' letters (section 4)
        for col, width in (("received (UTC)", None), ("console", 32), ("decision", None),
                           ("convention", None), ("p", None), ("p≡ open", None),
                           ("alert", None), ("acks", None), ("dups", None),
                           ("SOP Instance UID", None)):
            uid = col == "SOP Instance UID"
            table.add_column(col, overflow="fold" if uid else "ellipsis", no_wrap=not uid,
                             max_width=width)
        for d in rows:
            obj = d.received_object
            style = "red" if d.flagged and not d.acknowledgements else None
            cells = (
                obj.received_at.strftime("%Y-%m-%d %H:%M"), d.console or "", d.decision,
                d.convention or "", "" if d.probability is None else f"{d.probability:.3f}",
                _equivalent_cell(d.record_json), alert_state(d).value,
                str(len(d.acknowledgements)), str(dups.get(obj.id, 0)),
                d.sop_instance_uid or "",
            )
            # Text cells: shown as written, never read as rich markup
            table.add_row(*(table_safe(c) for c in cells), style=style)
        table.caption = ("p≡: probability of the conventions clinically equivalent to the most "
                         "probable; open: O order, D direction, P patient position")
    # at most 120 columns (a terminal's width when narrower)
    width = min(120, shutil.get_terminal_size((120, 24)).columns) if sys.stdout.isatty() else 120
    Console(soft_wrap=False, width=width).print(table)
    engine.dispose()
    return 0


def _equivalent_cell(record_json: str) -> str:
    """``audit list``'s p≡ cell: the equivalent probability and the open components' letters
    (empty for a decision without a convention, or recorded before they were)."""
    try:
        data = json.loads(record_json)
    except ValueError:
        return ""
    p = data.get("equivalent_probability")
    if not isinstance(p, int | float):
        return ""
    letters = "".join(_OPEN_LETTERS.get(c, "?") for c in data.get("open") or ())
    return f"{p:.3f} {letters}".rstrip()


def _uid(text: str) -> str:
    if not is_utf8(text):
        raise UsageError("UID is not valid UTF-8 text (a SOP Instance UID is digits and dots)")
    return text


def _find(session: Any, uid: str) -> Any:
    from node.audit.store import query_decisions

    found = query_decisions(session, sop_instance_uid=uid)
    if not found:
        print(f"sro-decoder: no record of SOP Instance UID {uid}", file=sys.stderr)
        return None
    return found[0]


def run_show(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from node.audit.store import duplicates_of, export_record

    uid = _uid(args.uid)
    engine = existing_database(args)
    with Session(engine) as session:
        d = _find(session, uid)
        if d is None:
            return 1
        dups = duplicates_of(session, d.received_object.id)
        data = export_record(d, len(dups))
        data["duplicate_receipts"] = [
            {"received_at": o.received_at.isoformat(), "calling_ae_title": o.calling_ae_title,
             "archive_path": o.archive_path} for o in dups
        ]
        data["alerts"] = [
            {"id": a.id, "state": a.state, "attempts": a.attempts, "last_error": a.last_error,
             "sent_at": None if a.sent_at is None else a.sent_at.isoformat(),
             "subject": a.subject} for a in d.alerts
        ]
    print(json.dumps(data, indent=2))
    engine.dispose()
    return 0


def run_ack(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from node.audit.store import acknowledge

    uid = _uid(args.uid)
    try:
        by = operator_text(args.by.strip(), "--by", OPERATOR_NAME_MAX)
        note = None if args.note is None else operator_text(args.note, "--note", NOTE_MAX,
                                                            multiline=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not by:
        raise UsageError("--by must name who acknowledges")
    engine = existing_database(args)
    with Session(engine) as session, session.begin():
        d = _find(session, uid)
        if d is None:
            return 1
        ack = acknowledge(session, d, by, note)
        session.flush()
        print(f"acknowledged {uid} ({d.decision}) by {ack.acknowledged_by} "
              f"at {ack.acknowledged_at.isoformat()}")
    engine.dispose()
    return 0


def _csv_row(data: dict[str, Any]) -> dict[str, Any]:
    conv = data.get("convention")
    residual = data.get("residual") or {}
    model = data.get("model") or {}
    return {
        **{k: data.get(k) for k in CSV_FIELDS},
        "convention": "" if conv is None else
        f"{conv['order']}/{'inverse' if conv['inverse'] else 'direct'}/{conv['patient_position']}",
        "residual_rotation_deg": residual.get("rotation_deg"),
        "residual_translation_mm": residual.get("translation_mm"),
        "alternatives": json.dumps(data.get("alternatives", [])),
        "model_name": model.get("name"),
        "model_version": model.get("version"),
        "model_sha256": model.get("sha256"),
        "acknowledgements": json.dumps(data.get("acknowledgements", [])),
        "settled": " ".join(data.get("settled") or ()),
        "open": " ".join(data.get("open") or ()),
        "likely_causes": json.dumps([c.get("sentence") for c in data.get("likely_causes") or ()
                                     if isinstance(c, dict)]),
        **_pairing_cells(data),
    }


def _pairing_cells(data: dict[str, Any]) -> dict[str, Any]:
    """The companion pairing both ways (docs/contract.md section 1): where the offset came from
    (``companion:UID``), the pairing state, and the objects paired with this one."""
    source = data.get("offset_source") or {}
    pairing = data.get("pairing") or {}
    paired = pairing.get("companion_sop_instance_uids") or pairing.get(
        "sro_sop_instance_uids") or []
    text = source.get("kind")
    if text and source.get("sop_instance_uid") and text == "companion":
        text = f"companion:{source['sop_instance_uid']}"
    return {"offset_source": text, "pairing_state": pairing.get("state"),
            "paired_sop_instance_uids": " ".join(paired)}


def run_export(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from node.audit.store import duplicate_counts, export_record, query_decisions

    engine = existing_database(args)
    out = sys.stdout
    with Session(engine) as session:
        dups = duplicate_counts(session)
        rows = query_decisions(session, flagged=True if args.flagged else None, since=args.since,
                               unacknowledged=args.unacknowledged)
        if args.format == "csv":
            writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for d in rows:
                row = _csv_row(export_record(d, dups.get(d.object_id, 0)))
                writer.writerow({k: csv_safe(v) for k, v in row.items()})
        else:
            for d in rows:
                out.write(json.dumps(export_record(d, dups.get(d.object_id, 0))) + "\n")
    out.flush()
    engine.dispose()
    return 0
