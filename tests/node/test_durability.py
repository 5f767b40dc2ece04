"""The durable path: archive files, group commit, the database failing, start-up reconciliation."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, _config
from pynetdicom.sop_class import SpatialRegistrationStorage  # type: ignore[attr-defined]
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from model.decision import DecisionKind
from model.decoders.registry import load_decoder
from model.dicom.statuses import StoreStatus
from model.training.synth import SynthConfig, generate, write_set
from node.audit.models import DecisionRecord, ReceivedObject, utcnow
from node.audit.store import open_database
from node.audit.writer import GroupCommitWriter
from node.ingest.archive import Archive, valid_uid
from node.records import Placement, Receipt, Source
from tests.node.conftest import export, make_settings, sro_files


def test_uid_check() -> None:
    assert valid_uid("1.2.840.10008.5.1.4.1.1.66.1")
    assert valid_uid("0.0")
    for bad in ("", "1", "1..2", "1.02", "../../etc/passwd", "1.2/3", "1.2.3 ", "1." * 40 + "1",
                None):
        assert not valid_uid(bad), bad


def test_archive_never_overwrites_and_never_trusts_names(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    first = archive.store("1.2.3.4", b"first")
    again = archive.store("1.2.3.4", b"second")
    odd = archive.store(None, b"no uid")
    assert first.placement is Placement.PRIMARY and first.path.read_bytes() == b"first"
    assert again.placement is Placement.DUPLICATE and again.path.read_bytes() == b"second"
    assert odd.placement is Placement.UNNAMED and odd.path.parent.name == "unnamed"
    assert first.path == archive.primary_path("1.2.3.4")
    with pytest.raises(ValueError):
        archive.primary_path("../../x")
    assert sorted(archive.files()) == sorted([first.path, again.path, odd.path])
    # a write interrupted before its rename leaves only a temporary file, removed at start-up
    (first.path.parent / ".1.2.3.5.dcm.abc.partial").write_bytes(b"half")
    assert archive.remove_partials() == 1
    assert not list(archive.root.rglob("*.partial"))
    assert all(oct(os.stat(p).st_mode)[-3:] == "640" for p in archive.files())


def _receipt(uid: str, path: str) -> Receipt:
    decoder = load_decoder("analytic")
    from model.decision import invalid_record
    from model.errors import InvalidReason

    record = invalid_record(decoder.info, InvalidReason.MISSING_VALUE, "test", sop_instance_uid=uid)
    return Receipt(sop_instance_uid=uid, sop_class_uid=None, transfer_syntax_uid=None,
                   archive_path=path, placement=Placement.PRIMARY, size_bytes=1,
                   calling_ae_title="T", called_ae_title=None, peer_address=None,
                   association_id=None, source=Source.C_STORE,
                   status=0xC001, received_at=utcnow(), record=record)


def test_group_commit_batches_concurrent_receipts(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    batch_sizes: list[int] = []
    writer = GroupCommitWriter(engine, batch_max=64)
    original = writer._commit

    def slow_commit(batch: Any) -> None:  # a slow disk: receipts pile up behind each commit
        batch_sizes.append(len(batch))
        time.sleep(0.02)
        original(batch)

    writer._combiner._process = slow_commit
    results: list[Any] = []
    lock = threading.Lock()

    def association(k: int) -> None:
        for i in range(10):
            r = writer.record(_receipt(f"1.2.3.{k}.{i}", f"objects/{k}-{i}.dcm"), timeout=10)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=association, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    writer.stop()
    assert len({r.object_id for r in results}) == 40
    assert writer.committed == 40
    assert writer.batches < 40 and max(batch_sizes) > 1  # shared transactions
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(DecisionRecord)) == 40


def test_one_batch_records_a_path_once_and_links_duplicates(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    writer = GroupCommitWriter(engine)
    first = _receipt("1.2.3.7", "objects/7.dcm")
    again = _receipt("1.2.3.7", "objects/7.dcm")  # the same file recorded by a racing path
    copy = _receipt("1.2.3.7", "duplicates/7.x.dcm")
    copy.duplicate, copy.record, copy.placement = True, None, Placement.DUPLICATE
    futures = [writer.submit(r) for r in (first, again, copy)]
    writer.flush()  # one transaction holds all three
    a, b, c = (f.result(timeout=0) for f in futures)
    writer.stop()
    assert writer.batches == 1
    assert (b.object_id, b.decision_id) == (a.object_id, a.decision_id)
    assert c.duplicate_of_id == a.object_id and c.decision_id is None and c.status == 0xC001
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ReceivedObject)) == 2
        assert session.scalar(select(func.count()).select_from(DecisionRecord)) == 1


def test_a_path_recorded_earlier_gets_its_record_back(tmp_path: Path) -> None:
    """The writer inserts without looking first; the unique archive path sends a second
    recording of one file (e.g. by reconciliation or a duplicate's handler) to the lookup."""
    engine = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    writer = GroupCommitWriter(engine)
    first = writer.record(_receipt("1.2.3.8", "objects/8.dcm"))
    others = [_receipt(f"1.2.3.{i}", f"objects/{i}.dcm") for i in (20, 21)]
    futures = [writer.submit(r) for r in (others[0], _receipt("1.2.3.8", "objects/8.dcm"),
                                          others[1])]
    writer.flush()  # the batch fails on the unique path, then each is recorded with a lookup
    a, again, b = (f.result(timeout=0) for f in futures)
    writer.stop()
    assert (again.object_id, again.decision_id) == (first.object_id, first.decision_id)
    assert len({a.object_id, b.object_id, first.object_id}) == 3
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ReceivedObject)) == 3
        assert session.scalar(select(func.count()).select_from(DecisionRecord)) == 3


def test_a_failing_receipt_fails_alone(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    writer = GroupCommitWriter(engine)
    good = [_receipt(f"1.2.3.{i}", f"objects/{i}.dcm") for i in range(5)]
    bad = _receipt("1.2.3.99", "objects/99.dcm")
    bad.record = None  # neither a decision nor a recorded first copy: refused
    bad.duplicate = False
    futures = [writer.submit(r) for r in (*good[:2], bad, *good[2:])]
    writer.flush()  # one batch of six: it fails, then each is retried alone
    outcomes = []
    for f in futures:
        try:
            f.result(timeout=0)
            outcomes.append(True)
        except ValueError:
            outcomes.append(False)
    writer.stop()
    assert outcomes == [True, True, False, True, True, True]
    with pytest.raises(RuntimeError):
        writer.record(good[0], timeout=1)


def _send(port: int, path: Path) -> int:
    ae = AE(ae_title="CONSOLE1")
    ae.add_requested_context(SpatialRegistrationStorage)
    ae.dimse_timeout = 10
    for _ in range(3):  # pynetdicom can lose a fast response (DOMAIN.md)
        assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
        assert assoc.is_established
        try:
            status = assoc.send_c_store(path)
        finally:
            assoc.release()
        if status:
            return int(status.Status)
    raise AssertionError("no C-STORE response")


def test_database_unavailable_then_reconciled(
    tmp_path: Path, sro_dir: Path, node_factory: Any
) -> None:
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        data = tmp_path / "data"
        settings = make_settings(data, storage={"commit_timeout_s": 5.0})
        node = node_factory(settings)
        port = node.address[1]
        files = sro_files(sro_dir)[:3]
        assert _send(port, files[0]) == StoreStatus.SUCCESS

        # the database goes away (its engine now points where no database can be opened)
        assert node.writer is not None
        good_engine = node.writer._engine
        node.writer._engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'x' / 'a.db'}")
        assert _send(port, files[1]) == StoreStatus.OUT_OF_RESOURCES
        assert _send(port, files[2]) == StoreStatus.OUT_OF_RESOURCES
        uid1, uid2 = (str(pydicom.dcmread(f).SOPInstanceUID) for f in files[1:3])
        archive = Archive(settings.archive_dir)
        assert archive.primary_path(uid1).is_file()  # kept, though not acknowledged
        assert set(export(data)) == {str(pydicom.dcmread(files[0]).SOPInstanceUID)}

        # back again: a resend of files[1] records the first copy from the archive
        node.writer._engine = good_engine
        assert _send(port, files[1]) == StoreStatus.SUCCESS
        rows = export(data)
        assert uid1 in rows and rows[uid1]["duplicates"] == 1
        assert uid2 not in rows
        node.stop()

        # files[2] is recorded by start-up reconciliation
        restarted = node_factory(make_settings(data))
        assert restarted.reconciled == 1
        rows = export(data)
        assert uid2 in rows and rows[uid2]["source"] == "reconciliation"
        assert rows[uid2]["calling_ae_title"] == "CONSOLE1"  # from the file meta
        assert len(rows) == 3
        engine = open_database(settings.database_url)
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(ReceivedObject)) == 4
        engine.dispose()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def test_reconciliation_uses_the_senders_profile(tmp_path: Path, node_factory: Any) -> None:
    """An archived object from a cm console is decoded with that console's profile."""
    out = tmp_path / "cm"
    synth = generate(SynthConfig(n=3, seed=2))
    write_set(synth, out)
    data = tmp_path / "data"
    archive = Archive(data / "archive")
    from pynetdicom.dsutils import encode

    from model.dicom.file_meta import FileMeta

    for f in sro_files(out):
        ds = pydicom.dcmread(f)
        block = ds.private_block(0x0071, "SRO DECODER RING")
        t = block[0x01].value
        block[0x01].value = [v / 10 for v in t]  # the console reports cm
        meta = FileMeta(ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID,
                        sending_application_entity_title="XVI_CM")
        archive.store(str(ds.SOPInstanceUID), meta.part10(encode(ds, False, True)))
    profiles = {"default": {}, "xvi": {"calling_ae_titles": ["XVI_CM"], "translation_unit": "cm"}}
    from node.settings import load_settings

    settings = load_settings(env={}, overrides={
        "node": {"host": "127.0.0.1", "port": 0},
        "storage": {"data_dir": str(data)},
        "profiles": profiles,
        "model": {"name": "analytic"},
    })
    node = node_factory(settings)
    assert node.reconciled == 3
    rows = export(data)
    assert {r["decision"] for r in rows.values()} == {DecisionKind.CONFIDENT.value}
    assert {r["calling_ae_title"] for r in rows.values()} == {"XVI_CM"}
