"""Retention (``[retention]``, ``sro-decoder purge``; docs/conformance.md section 3, Retention).

Real parts: DCMTK ``storescu`` into an in-process node on port 0, a real SQLite audit file, the
real archive, a real SMTP server (aiosmtpd). A 0-day policy removes every recorded object that
is acknowledged or not flagged, with its file; flagged, unacknowledged objects stay, as do
objects whose alert is still pending and archived files that have no record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.audit.models import CompanionPairing, ReceivedObject
from node.audit.store import open_database
from node.dimse.service import Node
from node.ingest.archive import Archive
from node.settings import Settings
from tests.node.conftest import (
    STORESCU,
    SmtpSink,
    cli,
    export,
    make_settings,
    sro_files,
    storescu,
    storescu_results,
)

pytestmark = pytest.mark.skipif(STORESCU is None, reason="DCMTK storescu not installed")

ZERO_DAYS = '[retention]\nenabled = true\ndays = 0\n'


def _push(port: int, paths: list[Path]) -> None:
    proc = storescu(port, paths)
    assert len(storescu_results(proc.stdout + proc.stderr)) == len(paths), proc.stderr


def _files(data_dir: Path) -> set[str]:
    archive = Archive(data_dir / "archive")
    return {archive.relative(p) for p in archive.files()}


def _purge(data_dir: Path, config: Path, *extra: str) -> dict[str, Any]:
    rc, out = cli("purge", "--data-dir", str(data_dir), "--json", *extra, "--config", str(config))
    assert rc == 0, out
    report: dict[str, Any] = json.loads(out)
    return report


def _received(settings: Settings, node_factory: Callable[[Settings], Node], paths: list[Path],
              sink: SmtpSink | None) -> dict[str, dict[str, Any]]:
    """Push ``paths``, wait for the alerts (when an SMTP server listens), stop the node."""
    node = node_factory(settings)
    _push(node.address[1], paths)
    rows = export(settings.data_dir)
    flagged = [u for u, r in rows.items() if r["flagged"]]
    if sink is not None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
                r["alert_state"] == "pending" for r in export(settings.data_dir).values()):
            time.sleep(0.1)
        assert len(sink.messages) == len(flagged)
    node.stop(grace_s=2.0)
    return export(settings.data_dir)


def test_zero_days_removes_acknowledged_and_unflagged_keeps_flagged_unacknowledged(
        tmp_path: Path, sro_dir: Path, smtp: tuple[SmtpSink, int],
        node_factory: Callable[[Settings], Node]) -> None:
    sink, port = smtp
    data = tmp_path / "data"
    settings = make_settings(data, port)
    rows = _received(settings, node_factory, sro_files(sro_dir)[:12], sink)
    flagged = sorted(u for u, r in rows.items() if r["flagged"])
    unflagged = sorted(set(rows) - set(flagged))
    assert len(flagged) >= 2 and unflagged, rows
    acked, waiting = flagged[: len(flagged) // 2], flagged[len(flagged) // 2:]
    for uid in acked:
        rc, _ = cli("audit", "--data-dir", str(data), "ack", uid, "--by", "physicist")
        assert rc == 0
    # an archived file without a record (the node was killed between archive and record)
    stray = Archive(settings.archive_dir).store("1.2.826.0.1.3680043.10.1433.99.1",
                                                sro_files(sro_dir)[20].read_bytes())
    config = tmp_path / "retention.toml"
    config.write_text(ZERO_DAYS)
    before = _files(data)

    dry = _purge(data, config, "--dry-run")
    assert dry["dry_run"] is True
    assert _files(data) == before and set(export(data)) == set(rows)  # nothing removed
    assert dry["removed"]["objects"] == len(acked) + len(unflagged)
    assert dry["removed"]["files"] == len(acked) + len(unflagged)
    assert dry["removed"]["acknowledgements"] == len(acked)
    assert dry["removed"]["alerts"] == len(acked)
    assert dry["kept"] == {"flagged_unacknowledged": len(waiting)}

    done = _purge(data, config)
    assert done["dry_run"] is False
    assert done["removed"] == dry["removed"] and done["kept"] == dry["kept"]
    left = export(data)
    assert sorted(left) == waiting  # flagged and unacknowledged: kept
    assert _files(data) == {left[u]["archive_path"] for u in waiting} | {stray.relative}
    assert stray.path.is_file()  # never recorded: never removed
    # a second purge finds nothing more to remove
    again = _purge(data, config)
    assert again["removed"]["objects"] == 0 and again["kept"] == dry["kept"]


def test_a_pending_alert_keeps_its_record_and_file(
        tmp_path: Path, sro_dir: Path, node_factory: Callable[[Settings], Node]) -> None:
    data = tmp_path / "data"
    settings = make_settings(data)  # the SMTP port is closed: alerts stay pending
    rows = _received(settings, node_factory, sro_files(sro_dir)[:8], None)
    flagged = sorted(u for u, r in rows.items() if r["flagged"])
    assert flagged and len(flagged) < len(rows)
    for uid in flagged:  # acknowledged, but the e-mail has not gone out yet
        assert cli("audit", "--data-dir", str(data), "ack", uid, "--by", "physicist")[0] == 0
    config = tmp_path / "retention.toml"
    config.write_text(ZERO_DAYS)
    done = _purge(data, config)
    assert done["kept"] == {"alert_pending": len(flagged)}
    left = export(data)
    assert sorted(left) == flagged
    assert all(left[u]["alert_state"] == "pending" for u in flagged)
    assert _files(data) == {left[u]["archive_path"] for u in flagged}


def test_purge_refuses_when_retention_is_disabled(tmp_path: Path) -> None:
    rc, _ = cli("purge", "--data-dir", str(tmp_path / "d"))
    assert rc == 1
    assert not (tmp_path / "d").exists()


def test_the_node_purges_on_its_own_and_stops_promptly(
        tmp_path: Path, sro_dir: Path, node_factory: Callable[[Settings], Node]) -> None:
    data = tmp_path / "data"
    settings = make_settings(data, retention={"enabled": True, "days": 0, "interval_h": 0.0003})
    node = node_factory(settings)
    _push(node.address[1], sro_files(sro_dir)[:6])
    engine = open_database(settings.database_url, migrate_schema=False)
    deadline = time.monotonic() + 20
    left: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        left = export(data)
        if all(r["flagged"] for r in left.values()):
            break
        time.sleep(0.2)
    assert left and all(r["flagged"] for r in left.values()), left  # the unflagged went
    assert _files(data) == {r["archive_path"] for r in left.values()}
    started = time.monotonic()
    node.stop(grace_s=2.0)
    assert time.monotonic() - started < 3.0
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ReceivedObject)) == len(left)
    engine.dispose()


def test_a_purge_interrupted_after_its_commit_is_finished_at_start_up(
        tmp_path: Path, sro_dir: Path, node_factory: Callable[[Settings], Node]) -> None:
    """A crash between the commit and the file removal: the next start-up removes the files of
    the purged records (from the purge journal) instead of recording them again; a file the
    journal lists whose record was never removed stays."""
    from node.audit.models import utcnow
    from node.audit.purge import plan_purge, remove_groups
    from node.ingest.purge import PurgeJournal

    data = tmp_path / "data"
    settings = make_settings(data)
    rows = _received(settings, node_factory, sro_files(sro_dir)[:6], None)
    unflagged = sorted(u for u, r in rows.items() if not r["flagged"])
    assert len(unflagged) >= 2
    gone, kept = rows[unflagged[0]]["archive_path"], rows[unflagged[1]]["archive_path"]
    archive = Archive(settings.archive_dir)
    engine = open_database(settings.database_url)
    with Session(engine) as session:
        plan = plan_purge(session, utcnow(), lambda p: (archive.root / p).is_file())
    group = next(g for g in plan.groups if any(path == gone for path, _ in g.files))
    journal = PurgeJournal(archive)
    journal.write([gone, kept])  # as a purge writes it before its commit
    with Session(engine) as session, session.begin():
        assert remove_groups(session.connection(), [group], utcnow(),
                             lambda p: (archive.root / p).is_file()) is not None
    engine.dispose()
    # ... and the process is killed here: the record is gone, the file still there
    assert (archive.root / gone).is_file()
    node_factory(settings).stop(grace_s=1.0)  # start-up: reconciliation
    left = export(data)
    assert unflagged[0] not in left and not (archive.root / gone).exists()
    assert unflagged[1] in left and (archive.root / kept).is_file()
    assert not journal.path.exists()


def test_a_companion_pair_goes_together_or_stays_together(
        tmp_path: Path, node_factory: Callable[[Settings], Node]) -> None:
    from tests.node.test_companion_pairing import xvi_set

    cases = xvi_set(tmp_path / "xvi", 4, seed=9)
    data = tmp_path / "data"
    settings = make_settings(data)
    paths = [p for c in cases for p in (c["sro"], c["rps"])]
    rows = _received(settings, node_factory, paths, None)
    # hold one pair: its companion flagged and unacknowledged is not enough reason to drop
    # the SRO decided from it, nor the reverse
    held = cases[0]
    for c in cases[1:]:
        for uid in (c["sro_uid"], c["rps_uid"]):
            if rows[uid]["flagged"]:
                assert cli("audit", "--data-dir", str(data), "ack", uid, "--by", "x")[0] == 0
    assert not rows[held["sro_uid"]]["flagged"]
    # make the held pair's companion need attention: a flagged, unacknowledged decision
    engine = open_database(settings.database_url)
    with engine.begin() as conn:
        from node.audit.models import DecisionRecord
        conn.execute(DecisionRecord.__table__.update()
                     .where(DecisionRecord.sop_instance_uid == held["rps_uid"])
                     .values(flagged=True))
    config = tmp_path / "retention.toml"
    config.write_text(ZERO_DAYS)
    done = _purge(data, config)
    left = export(data)
    assert set(left) == {held["sro_uid"], held["rps_uid"]}
    assert done["kept"] == {"flagged_unacknowledged": 1, "linked": 1}
    assert done["removed"]["pairings"] == len(cases) - 1
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(CompanionPairing)) == 1
    engine.dispose()
    assert _files(data) == {left[u]["archive_path"] for u in left}
