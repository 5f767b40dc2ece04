"""Two ``sro-decoder serve`` processes on one real PostgreSQL (issue 14 item 3, acceptance):
each file of 300 pushed to both nodes at once over 4 associations each gives one decision per
SOP Instance UID, the second copies recorded as duplicates, each alert e-mailed once; then one
node is killed with SIGKILL in a second burst and restarted: nothing acknowledged is lost and
no alert is sent twice, but for the one the killed node may have had in flight: handed to the
SMTP server and not yet marked sent when it died (``node.alerts.sender``); that one comes again
with the same Message-ID."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from model.training.synth import SynthConfig, generate, write_set
from node.audit.models import AlertOutbox, DecisionRecord, ReceivedObject
from tests.node.conftest import STORESCU, needs_dcmtk, smtp_server, storescu_results
from tests.node.test_crash_and_shutdown import ServeProcess
from tests.postgres import cluster, needs_postgres

CONFIG = """
[node]
host = "127.0.0.1"
port = 0
name = "{name}"
[storage]
database_url = "{url}"
[smtp]
host = "127.0.0.1"
port = {smtp_port}
[alerts]
recipients = ["physics@example.org"]
poll_s = 0.2
retry_initial_s = 0.2
retry_max_s = 1.0
digest_window_s = 0
[log]
format = "json"
[model]
name = "analytic"
"""


def serve(tmp_path: Path, name: str, url: str, smtp_port: int) -> ServeProcess:
    """One node process of the pair, on the shared database ``url``."""
    return ServeProcess(tmp_path, tmp_path / name,
                        CONFIG.format(name=name, url=url, smtp_port=smtp_port),
                        name=name, start_timeout_s=90)


def _push(port: int, files: list[Path]) -> list[subprocess.Popen[str]]:
    assert STORESCU is not None
    return [subprocess.Popen(
        [STORESCU, "-v", "-aet", "CONSOLE1", "-aec", "SRO_DECODER", "127.0.0.1", str(port),
         *map(str, files[i::4])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(4)]


def _succeeded(senders: list[subprocess.Popen[str]]) -> set[str]:
    ok = set()
    for p in senders:
        out, _ = p.communicate(timeout=180)
        ok |= {Path(f).name for f, status in storescu_results(out)
               if status.startswith("(Success)")}
    return ok


def _truth(folder: Path) -> dict[str, str]:
    return {json.loads(line)["file"]: json.loads(line)["sop_instance_uid"]
            for line in (folder / "truth.jsonl").read_text().splitlines()}


def _check_database(url: str, uids: set[str]) -> tuple[int, int]:
    """Every UID one first copy with one decision, no conflicts; (objects, outbox rows)."""
    engine = create_engine(url)
    with Session(engine) as session:
        firsts = Counter(session.scalars(select(ReceivedObject.sop_instance_uid).where(
            ReceivedObject.duplicate_of_id.is_(None))))
        decided = Counter(session.scalars(select(DecisionRecord.sop_instance_uid)))
        conflicts = session.scalar(select(func.count()).select_from(ReceivedObject)
                                   .where(ReceivedObject.conflict.is_(True)))
        objects = int(session.scalar(select(func.count()).select_from(ReceivedObject)) or 0)
        alerts = int(session.scalar(select(func.count()).select_from(AlertOutbox)) or 0)
    engine.dispose()
    assert uids <= set(firsts), "acknowledged or archived objects missing"
    assert all(n == 1 for n in firsts.values()), [u for u, n in firsts.items() if n > 1][:5]
    assert all(n == 1 for n in decided.values()), [u for u, n in decided.items() if n > 1][:5]
    assert conflicts == 0
    return objects, alerts


def _alert_ids(sink: Any, count: int, timeout: float = 60.0) -> Counter[str]:
    """How many copies of each alert the sink received, once ``count`` distinct ones came."""
    deadline = time.monotonic() + timeout
    while (len({str(m["X-SRO-Decoder-Alert"]) for m in sink.wait_for(count, 0.05)}) < count
           and time.monotonic() < deadline):
        time.sleep(0.05)
    time.sleep(1.5)  # a few more outbox passes: a second sending would show now
    return Counter(str(m["X-SRO-Decoder-Alert"]) for m in sink.messages)


def _in_flight_copies(sink: Any, killed: ServeProcess) -> list[str]:
    """The alerts received twice. Each must be the one the killed node was sending when it
    died: its first copy from that node, which never logged it sent, both copies with one
    Message-ID; one sender thread has at most one e-mail in flight."""
    killed._reader.join(10)  # every line the killed process wrote, to its end
    logged = {str(i) for r in killed.lines if r.get("event") == "alert sent"
              for i in r.get("alert_ids", [])}
    copies: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for m in sink.messages:
        copies[str(m["X-SRO-Decoder-Alert"])].append(
            (str(m["X-SRO-Decoder-Node"]), str(m["Message-ID"])))
    twice = sorted(i for i, c in copies.items() if len(c) > 1)
    assert len(twice) <= 1, {i: copies[i] for i in twice}
    for i in twice:
        (first_node, first_id), (_, again_id), *more = copies[i]
        assert not more and first_node == "node-a" and i not in logged, copies[i]
        assert first_id == again_id, copies[i]
    return twice


@needs_dcmtk
@needs_postgres
def test_two_nodes_one_postgresql_burst_and_sigkill(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    burst1, burst2 = tmp_path_factory.mktemp("two1"), tmp_path_factory.mktemp("two2")
    write_set(generate(SynthConfig(n=300, seed=21, corrupt_fraction=0.1)), burst1)
    write_set(generate(SynthConfig(n=300, seed=22, corrupt_fraction=0.1)), burst2)
    with cluster() as pg, smtp_server() as (sink, smtp_port):
        url = pg.database()
        a = serve(tmp_path, "node-a", url, smtp_port)
        b = serve(tmp_path, "node-b", url, smtp_port)
        nodes = [a, b]
        try:
            files = sorted(burst1.glob("*.dcm"))
            assert a.port is not None and b.port is not None
            started = time.monotonic()
            ok = _succeeded(_push(a.port, files) + _push(b.port, files))
            took = time.monotonic() - started
            truth = _truth(burst1)
            objects, alerts = _check_database(url, set(truth.values()))
            assert objects == 600  # every copy recorded: 300 first copies, 300 duplicates
            assert alerts > 0
            ids = _alert_ids(sink, alerts)
            assert len(ids) == alerts and set(ids.values()) == {1}, ids.most_common(3)
            print(f"burst 1: 600 objects in {took:.1f} s, {len(ok)} files acknowledged, "
                  f"{alerts} alerts each sent once")

            # second burst: node a is killed in the middle of it and started again
            files = sorted(burst2.glob("*.dcm"))
            senders_a, senders_b = _push(a.port, files), _push(b.port, files)
            objects_a = a.data / "archive" / "objects"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if sum(1 for _ in objects_a.rglob("*.dcm")) >= 300 + 90:
                    break
                time.sleep(0.005)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            ok_a = _succeeded(senders_a)
            assert 0 < len(ok_a) < len(files), "the kill must land in the middle of the burst"
            acknowledged = ok_a | _succeeded(senders_b)
            nodes.append(a2 := serve(tmp_path, "node-a", url, smtp_port))
            assert a2.port is not None
            truth2 = _truth(burst2)
            archived = {p.name[:-len(".dcm")] for n in (a, b)
                        for p in (n.data / "archive" / "objects").rglob("*.dcm")}
            must = {truth2[f] for f in acknowledged} | (archived & set(truth2.values()))
            _, alerts = _check_database(url, must | set(truth.values()))
            ids = _alert_ids(sink, alerts)
            assert len(ids) == alerts  # every alert e-mailed
            again = _in_flight_copies(sink, a)
            assert {n for i, n in ids.items() if i not in again} == {1}, ids.most_common(3)
            print(f"burst 2: node a acknowledged {len(ok_a)} before SIGKILL, "
                  f"{len(acknowledged)} acknowledged, {len(must)} recorded, "
                  f"{alerts} alerts in all, each sent once but {again or 'none'} "
                  "(in flight at the kill, sent again with its Message-ID)")
        finally:
            for n in nodes:
                n.stop()
