"""``sro-decoder purge``: remove archived files and records older than ``[retention] days``.

The rule (docs/conformance.md section 3, Retention): what is received and recorded more than
``days`` ago goes, with its file, unless its decision is flagged and unacknowledged or its alert
is still pending; objects a duplicate or a companion pairing links go together or stay together;
an archived file without a record is never removed. ``--dry-run`` removes nothing and reports
what a purge would remove. Counts only: no UIDs, no patient data. It may run while the node
runs (the node's own daily purge is the same).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from node.cli.common import add_settings_arguments, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("purge", help="remove files and records older than [retention] days")
    add_settings_arguments(p)
    p.add_argument("--dry-run", action="store_true",
                   help="remove nothing; report what a purge would remove")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from node.audit.store import open_database
    from node.ingest.archive import Archive
    from node.ingest.purge import Purger

    settings = settings_from_args(args)
    retention = settings.retention
    if not retention.enabled and not args.dry_run:
        print("sro-decoder: retention is off ([retention] enabled = false): nothing removed "
              "(--dry-run shows what it would remove)", file=sys.stderr)
        return 1
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        print(f"sro-decoder: no audit database at {url.database} (check --data-dir/--config)",
              file=sys.stderr)
        return 1
    engine = open_database(settings.database_url,
                           sqlite_synchronous=settings.storage.sqlite_synchronous)
    try:
        report = Purger(engine, Archive(settings.archive_dir), retention).run(
            dry_run=args.dry_run)
    finally:
        engine.dispose()
    data = report.as_dict()
    if args.json:
        print(json.dumps(data))
        return 0
    verb = "would remove" if report.dry_run else "removed"
    r = report.removed
    print(f"{verb} {r.objects} object(s) received before {data['cutoff']} "
          f"([retention] days = {retention.days}): {r.files} file(s), {r.bytes} bytes, "
          f"{r.decisions} decision(s), {r.acknowledgements} acknowledgement(s), "
          f"{r.alerts} alert(s), {r.pairings} pairing link(s)")
    for reason, count in sorted(report.kept.items()):
        print(f"kept {count} older object(s): {reason.replace('_', ' ')}")
    if report.batches_deferred:
        print(f"{report.batches_deferred} batch(es) changed while purging: left for the next "
              "purge")
    if not retention.enabled:
        print("retention is off ([retention] enabled = false): serve purges nothing")
    return 0
