"""``sro-decoder consoles``: the consoles the node has seen and their conventions
(docs/contract.md section 6): ``list``, ``show``, ``commission``, ``decommission``.

Takes the same ``--config`` and ``--data-dir`` as ``serve`` (before or after the action).
Commissioning and decommissioning are added records, never edits; a commissioned convention is
an (order, direction) pair, since the patient position belongs to the patient. What a sender
wrote (AE titles, station names) is shown literally (:func:`node.text.table_safe`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

from node.cli.common import (
    UsageError,
    add_settings_arguments,
    existing_database,
)
from node.text import NOTE_MAX, OPERATOR_NAME_MAX, operator_text, table_safe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("consoles", help="consoles and their established conventions")
    add_settings_arguments(p)
    csub = p.add_subparsers(dest="consoles_command", metavar="ACTION", required=True)

    lst = csub.add_parser("list", help="consoles as a table")
    add_settings_arguments(lst, after_action=True)
    lst.add_argument("--json", action="store_true", help="one JSON object per console per line")
    lst.set_defaults(func=run_list)

    show = csub.add_parser("show", help="one console: its convention, history, recent checks")
    add_settings_arguments(show, after_action=True)
    show.add_argument("console", metavar="CONSOLE", help="id, station name, AE title or key")
    show.set_defaults(func=run_show)

    com = csub.add_parser("commission", help="establish a console's convention (a record)")
    add_settings_arguments(com, after_action=True)
    com.add_argument("console", metavar="CONSOLE", help="id, station name, AE title or key")
    com.add_argument("--convention", required=True, action="append", metavar="ORDER/DIRECTION",
                     help="e.g. xyz/direct or zyx/inverse; repeat for several equivalent pairs")
    com.add_argument("--by", required=True, help="who commissions")
    com.add_argument("--note", default=None, help="why (a phantom test, the vendor's manual)")
    com.set_defaults(func=run_commission)

    dec = csub.add_parser("decommission", help="nothing established any more (a record)")
    add_settings_arguments(dec, after_action=True)
    dec.add_argument("console", metavar="CONSOLE", help="id, station name, AE title or key")
    dec.add_argument("--by", required=True, help="who decommissions")
    dec.add_argument("--note", default=None)
    dec.set_defaults(func=run_decommission)


def _operator(args: argparse.Namespace) -> tuple[str, str | None]:
    try:
        by = operator_text(args.by.strip(), "--by", OPERATOR_NAME_MAX)
        note = None if args.note is None else operator_text(args.note, "--note", NOTE_MAX,
                                                            multiline=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not by:
        raise UsageError("--by must name who it is")
    return by, note


def _one(session: Any, name: str) -> Any:
    from node.consoles.store import find_console

    found = find_console(session, name)
    if not found:
        print(f"sro-decoder: no console {name!r} (see `sro-decoder consoles list`)",
              file=sys.stderr)
        raise SystemExit(1)
    if len(found) > 1:
        ids = ", ".join(str(c.id) for c in found)
        print(f"sro-decoder: {name!r} names several consoles ({ids}); give the id",
              file=sys.stderr)
        raise SystemExit(1)
    return found[0]


def _how(state: Any) -> str:
    est = state.established
    if est is None:
        return "changed" if state.changed else "learning"
    how = est.how.value + (f" by {est.by}" if est.by else "")
    return how + (" (changed since)" if state.changed else "")


def run_list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy.orm import Session

    from node.consoles.store import list_consoles

    engine = existing_database(args)
    with Session(engine) as session:
        rows = list_consoles(session)
    engine.dispose()
    if args.json:
        for c in rows:
            print(json.dumps({"id": c.id, **c.identity.as_dict(),
                              "first_seen_at": c.first_seen_at.isoformat(),
                              "last_seen_at": c.last_seen_at.isoformat(),
                              "established": c.established_text, "how": _how(c.state),
                              "state": c.state.as_dict(), "decisions_30d": c.decisions_30d,
                              "flagged_30d": c.flagged_30d, "changed_30d": c.changed_30d}))
        return 0
    table = Table(title=f"{len(rows)} console(s)", box=box.SIMPLE_HEAD, collapse_padding=True,
                  pad_edge=False)
    for col in ("id", "station", "AE title", "manufacturer / model", "last seen (UTC)",
                "convention", "how", "30 d", "flagged", "changed"):
        table.add_column(col, overflow="fold", no_wrap=col not in ("manufacturer / model",))
    for c in rows:
        i = c.identity
        style = "red" if c.state.changed else None
        cells = (str(c.id), i.station_name or "", i.calling_ae_title or "",
                 " / ".join(v for v in (i.manufacturer, i.manufacturer_model_name) if v),
                 c.last_seen_at.strftime("%Y-%m-%d %H:%M"), c.established_text, _how(c.state),
                 str(c.decisions_30d), str(c.flagged_30d), str(c.changed_30d))
        table.add_row(*(table_safe(x) for x in cells), style=style)
    width = min(120, shutil.get_terminal_size((120, 24)).columns) if sys.stdout.isatty() else 120
    Console(soft_wrap=False, width=width).print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from model.consoles import ConsoleState, pairs_text
    from node.consoles.store import console_history, recent_checks

    engine = existing_database(args)
    with Session(engine) as session:
        c = _one(session, args.console)
        state = ConsoleState.from_dict(json.loads(c.state_json))
        est = state.established
        out = [f"Console {c.id}: {table_safe(c.station_name or '')} "
               f"(AE title {table_safe(c.calling_ae_title or '')}; "
               f"{table_safe(c.manufacturer or '')} {table_safe(c.manufacturer_model_name or '')})",
               f"  first seen {c.first_seen_at.isoformat()}, "
               f"last seen {c.last_seen_at.isoformat()}",
               f"  established: {'nothing yet' if est is None else pairs_text(est.pairs)} "
               f"({_how(state)})"]
        if est is None:
            out.append(f"  learning: {state.streak} consecutive confident decision(s)")
        out += ["", "History (added records, oldest first):"]
        for e in console_history(session, c.id):
            line = f"  {e.at.isoformat()}  {e.kind:<14} {e.pairs or '':<24}"
            if e.by:
                line += f" by {table_safe(e.by)}"
            if e.note:
                line += f": {table_safe(e.note)}"
            if e.sop_instance_uid:
                line += f" (SRO {table_safe(e.sop_instance_uid)})"
            out.append(line)
        out += ["", "Recent checks (newest first):"]
        for check, d in recent_checks(session, c.id):
            out.append(f"  {check.checked_at.isoformat()}  {check.result:<12} {d.decision:<20} "
                       f"{table_safe(d.sop_instance_uid or '')}")
            out.append(f"      {table_safe(check.sentence)}")
    engine.dispose()
    print("\n".join(out))
    return 0


def run_commission(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from model.consoles import OrderDirection, pairs_text
    from node.consoles.store import commission

    try:
        pairs = frozenset(OrderDirection.parse(v) for v in args.convention)
    except ValueError as exc:
        raise UsageError(f"--convention {exc}") from None
    by, note = _operator(args)
    engine = existing_database(args)
    with Session(engine) as session, session.begin():
        c = _one(session, args.console)
        commission(session, c, pairs, by, note)
        name = c.station_name or c.calling_ae_title or c.key
    engine.dispose()
    print(f"console {table_safe(name)}: commissioned {pairs_text(pairs)} by {table_safe(by)}")
    return 0


def run_decommission(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from node.consoles.store import decommission

    by, note = _operator(args)
    engine = existing_database(args)
    with Session(engine) as session, session.begin():
        c = _one(session, args.console)
        decommission(session, c, by, note)
        name = c.station_name or c.calling_ae_title or c.key
    engine.dispose()
    print(f"console {table_safe(name)}: decommissioned by {table_safe(by)}; it learns again")
    return 0
