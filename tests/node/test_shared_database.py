"""Several nodes on one database (issue 14 item 3): the database decides what is a duplicate, a
copy whose bytes differ is a conflict, alerts are claimed by one sender at a time, migrations run
under a lock, reconciliation covers the node's own archive. On SQLite and on a real PostgreSQL
server (tests/postgres.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from model.dicom.statuses import StoreStatus
from model.errors import InvalidReason
from node.alerts.sender import OutboxSender
from node.audit.models import AlertOutbox, DecisionRecord, ReceivedObject, utcnow
from node.audit.store import open_database
from node.dimse.service import Node
from node.records import AlertState, Origin
from tests.node.conftest import make_settings, sro_files
from tests.postgres import Cluster, cluster, needs_postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster() as c:
        yield c


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg").database())


def _origin(aet: str = "CONSOLE1") -> Origin:
    return Origin(calling_ae_title=aet, called_ae_title="SRO_DECODER", peer_address="127.0.0.1:1",
                  association_id=None, received_at=utcnow())


def _nodes(tmp_path: Path, url: str, smtp_port: int, names: tuple[str, ...] = ("a", "b"),
           ) -> list[Node]:
    out = []
    for name in names:
        s = make_settings(tmp_path / name, smtp_port, storage={"database_url": url},
                          node={"name": f"node-{name}"})
        node = Node(s)
        node.start()
        out.append(node)
    return out


def _changed(path: Path, folder: Path) -> bytes:
    """The file at ``path`` with the same SOP Instance UID and other content."""
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = "changed after the first copy"
    out = folder / "changed.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out.read_bytes()


def test_the_database_decides_duplicates_across_nodes_and_flags_conflicts(
    tmp_path: Path, db_url: str, sro_dir: Path, smtp: Any
) -> None:
    sink, port = smtp
    a, b = _nodes(tmp_path, db_url, port)
    try:
        assert a.store is not None and b.store is not None
        files = sro_files(sro_dir)[:6]
        first = [a.store.receive_part10(f.read_bytes(), _origin()) for f in files]
        # the same objects on the other node: its archive has none of them
        second = [b.store.receive_part10(f.read_bytes(), _origin()) for f in files]
        assert [s.status for s in second] == [s.status for s in first]
        # same UID, other bytes: a conflict, flagged, alerted once; answered as a failure
        conflict = b.store.receive_part10(_changed(files[0], tmp_path), _origin())
        assert conflict.status == int(StoreStatus.CANNOT_UNDERSTAND_INVALID_REGISTRATION)
        # and on the first node
        again = a.store.receive_part10(_changed(files[0], tmp_path), _origin())
        assert again.status == conflict.status
        for node in (a, b):
            assert node.writer is not None
            node.writer.flush()
        engine = create_engine(db_url)
        with Session(engine) as session:
            uid = first[0].sop_instance_uid
            objects = session.scalars(select(ReceivedObject).order_by(ReceivedObject.id)).all()
            assert len(objects) == 14
            assert {o.node for o in objects} == {"node-a", "node-b"}
            primaries = [o for o in objects if o.duplicate_of_id is None]
            assert sorted(o.sop_instance_uid for o in primaries) == sorted(
                s.sop_instance_uid for s in first)
            assert all(o.node == "node-a" for o in primaries)
            decisions = session.scalars(select(DecisionRecord)).all()
            by_uid: dict[str | None, list[DecisionRecord]] = {}
            for d in decisions:
                by_uid.setdefault(d.sop_instance_uid, []).append(d)
            conflicts = by_uid[uid][1:]
            assert len(by_uid[uid]) == 3 and all(
                d.reason_code == InvalidReason.DUPLICATE_CONFLICT.value and d.flagged
                for d in conflicts)
            assert all(len(v) == 1 for k, v in by_uid.items() if k != uid)
            conflicted = [o for o in objects if o.conflict]
            assert len(conflicted) == 2 and all(o.duplicate_of_id == primaries[0].id
                                                for o in conflicted)
            flagged_first = sum(1 for v in by_uid.values() if v[0].flagged)
            alerts = session.scalar(select(func.count()).select_from(AlertOutbox))
            assert alerts == flagged_first + 2
        engine.dispose()
        messages = sink.wait_for(flagged_first + 2, timeout=15)
        assert len(messages) == flagged_first + 2
        assert sum("conflict" in str(m["Subject"]).lower() or
                   "differs" in m.get_payload() for m in messages) >= 2
    finally:
        for node in (a, b):
            node.stop(grace_s=1.0)


def test_reconciliation_covers_the_nodes_own_archive_only(
    tmp_path: Path, db_url: str, sro_dir: Path
) -> None:
    a, = _nodes(tmp_path, db_url, 1, ("a",))
    f = sro_files(sro_dir)[0]
    try:
        assert a.store is not None
        a.store.receive_part10(f.read_bytes(), _origin())
    finally:
        a.stop(grace_s=1.0)
    # node b holds the same object in its own archive, at the same relative path, unrecorded
    relative = next((tmp_path / "a" / "archive").rglob("*.dcm")).relative_to(
        tmp_path / "a" / "archive")
    target = tmp_path / "b" / "archive" / relative
    target.parent.mkdir(parents=True)
    target.write_bytes(next((tmp_path / "a" / "archive").rglob("*.dcm")).read_bytes())
    b, = _nodes(tmp_path, db_url, 1, ("b",))
    try:
        assert b.reconciled == 1
    finally:
        b.stop(grace_s=1.0)
    a2, = _nodes(tmp_path, db_url, 1, ("a",))  # a's own archive is recorded: nothing to do
    try:
        assert a2.reconciled == 0
    finally:
        a2.stop(grace_s=1.0)
    engine = create_engine(db_url)
    with Session(engine) as session:
        rows = session.scalars(select(ReceivedObject).order_by(ReceivedObject.id)).all()
        assert [(r.node, r.duplicate_of_id is None) for r in rows] == [
            ("node-a", True), ("node-b", False)]
        assert session.scalar(select(func.count()).select_from(DecisionRecord)) == 1
    engine.dispose()


def test_two_senders_send_each_alert_once(tmp_path: Path, db_url: str, sro_dir: Path,
                                          smtp: Any) -> None:
    sink, port = smtp
    settings = make_settings(tmp_path, port)
    # queue alerts with no sender running: a node whose SMTP port refuses is stopped at once
    a, = _nodes(tmp_path, db_url, 1, ("a",))
    try:
        assert a.store is not None and a.sender is not None
        a.sender.stop()
        for f in sro_files(sro_dir):
            a.store.receive_part10(f.read_bytes(), _origin())
        assert a.writer is not None
        a.writer.flush()
    finally:
        a.stop(grace_s=1.0)
    engine = open_database(db_url)
    with Session(engine) as session, session.begin():
        session.execute(AlertOutbox.__table__.update().values(next_attempt_at=utcnow(),
                                                              attempts=0))
        queued = int(session.scalar(select(func.count()).select_from(AlertOutbox)) or 0)
    assert queued >= 5
    senders = [OutboxSender(open_database(db_url), settings.smtp, settings.alerts,
                            node=f"sender-{i}") for i in range(3)]
    barrier = threading.Barrier(len(senders))

    def run(sender: OutboxSender) -> None:
        barrier.wait()
        while sender.run_once():
            pass

    threads = [threading.Thread(target=run, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sink.wait_for(queued, timeout=10)
    ids = [str(m["X-SRO-Decoder-Alert"]) for m in sink.messages]
    assert len(ids) == queued and len(set(ids)) == queued
    assert sum(s.sent for s in senders) == queued
    with Session(engine) as session:
        states = session.execute(select(AlertOutbox.state, AlertOutbox.claimed_by)).all()
        assert all(state == AlertState.SENT and by is None for state, by in states)
    engine.dispose()


@needs_postgres
def test_simultaneous_start_ups_migrate_once(pg: Cluster) -> None:
    url = pg.database()
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            open_database(url).dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "start-ups still waiting on each other"
    assert errors == []
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
