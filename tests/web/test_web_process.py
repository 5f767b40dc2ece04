"""``sro-decoder serve`` with ``[web] enabled``: the web console runs in a process of its own,
linked to the node (node/web/process.py, node/web/link.py). STOW-RS still stores through the
node, ``/metrics`` shows the node's counters, ``/readyz`` whether the node answers; a web process
that dies is started again; the web process never outlives its node, even after SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from node.audit.store import open_database
from node.audit.users import Role, add_user, new_token
from node.metrics import parse_exposition
from tests.node.conftest import export, needs_dcmtk, sro_files, storescu
from tests.node.test_crash_and_shutdown import ServeProcess
from tests.web.test_web_api import _multipart

CONFIG = """
[node]
host = "127.0.0.1"
port = 0
[smtp]
host = "127.0.0.1"
port = 1
[alerts]
recipients = ["physics@example.org"]
[log]
format = "json"
[model]
name = "analytic"
[web]
enabled = true
host = "127.0.0.1"
port = 0
"""


def _started(serve: ServeProcess, after: int = 0, timeout: float = 90.0) -> dict[str, Any]:
    """The ``web console process started`` log line after the first ``after`` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [r for r in list(serve.lines) if r.get("event") == "web console process started"]
        if len(lines) > after:
            return lines[after]
        assert serve.proc.poll() is None, serve.lines[-5:]
        time.sleep(0.05)
    raise AssertionError(f"no web console process: {serve.lines[-5:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _token(data: Path) -> str:
    engine = open_database(f"sqlite:///{data / 'audit.db'}", migrate_schema=False)
    with Session(engine) as session, session.begin():
        token = new_token(session, add_user(session, "sender", Role.VIEWER, "a long password"))
    engine.dispose()
    return token


@needs_dcmtk
def test_the_web_console_runs_beside_the_node_in_its_own_linked_process(
        tmp_path: Path, sro_dir: Path) -> None:
    serve = ServeProcess(tmp_path, tmp_path / "data", CONFIG, start_timeout_s=90)
    try:
        web = _started(serve)
        pid = int(web["pid"])
        assert pid != serve.proc.pid and _alive(pid)
        auth = {"Authorization": f"Bearer {_token(tmp_path / 'data')}"}
        files = sro_files(sro_dir)
        assert serve.port is not None
        assert storescu(serve.port, files[:20]).returncode == 0
        boundary = "sro-boundary-1"
        with httpx.Client(base_url=web["url"], timeout=60, headers=auth) as c:
            assert c.get("/healthz").json() == {"status": "up"}
            ready = c.get("/readyz").json()
            assert ready["checks"]["node"] == {"ok": True, "detail": "the DICOM node answers"}
            # STOW-RS: stored by the node's own C-STORE path, over the link
            r = c.post("/dicomweb/studies", content=_multipart(
                [("application/dicom", f.read_bytes()) for f in files[20:]], boundary),
                headers={"Content-Type": "multipart/related; type=\"application/dicom\"; "
                                         f"boundary={boundary}"})
            assert r.status_code == 200, r.text
            metrics = {(name, labels.get("decision", ""), labels.get("calling_ae_title", "")): v
                       for name, labels, v in parse_exposition(c.get("/metrics").text)}
        rows = export(tmp_path / "data")
        assert len(rows) == len(files)
        assert sorted(r["source"] for r in rows.values()) == (
            ["c-store"] * 20 + ["stow-rs"] * (len(files) - 20))
        # the node's counters, as the node counted them: C-STORE and STOW-RS alike
        received = {k: v for k, v in metrics.items()
                    if k[0] == "sro_decoder_objects_received_total"}
        assert sum(received.values()) == len(files)
        by_decision: dict[str, int] = {}
        for row in rows.values():
            by_decision[row["decision"]] = by_decision.get(row["decision"], 0) + 1
        for decision, n in by_decision.items():
            assert sum(v for k, v in received.items() if k[1] == decision) == n, decision
        assert metrics[("sro_decoder_node_link_up", "", "")] == 1
        assert ("sro_decoder_outbox_depth", "", "") in metrics

        # the web process dies: the node says so and starts another, which answers
        os.kill(pid, signal.SIGKILL)
        again = _started(serve, after=1)
        assert int(again["pid"]) != pid
        assert any(r.get("event") == "web console process exited; starting it again"
                   and r.get("returncode") == -signal.SIGKILL for r in serve.lines)
        with httpx.Client(base_url=again["url"], timeout=30, headers=auth) as c:
            assert c.get("/readyz").json()["checks"]["node"]["ok"] is True

        # the node is killed: its web process stops by itself
        serve.proc.send_signal(signal.SIGKILL)
        serve.proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(int(again["pid"])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(int(again["pid"])), "the web process outlived its node"
    finally:
        serve.stop()


def test_a_web_console_that_cannot_start_stops_serve_with_its_reason(tmp_path: Path) -> None:
    """``[web] port`` taken: ``serve`` says why and exits 1 rather than run without it."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = CONFIG.replace("[web]\nenabled = true\nhost = \"127.0.0.1\"\nport = 0",
                                f"[web]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}")
        serve = ServeProcess(tmp_path, tmp_path / "data", config, start_timeout_s=90)
        try:
            assert serve.proc.wait(90) == 1
            assert serve._reader.join(10) is None
            assert any(r.get("event") == "cannot start the web console"
                       and f"127.0.0.1:{port}" in str(r.get("error")) for r in serve.lines), (
                serve.lines[-5:])
        finally:
            serve.stop()


def test_the_link_survives_a_malformed_frame_and_a_failing_request() -> None:
    """A socket that carries garbage is closed (its stream is out of step), the others go on;
    a request the node cannot answer comes back as an error, not as a dead link."""
    import socket

    from node.metrics import Metrics
    from node.web.link import LinkError, NodeEnd, WebEnd

    class Failing:
        def receive_part10(self, data: bytes, origin: Any) -> Any:
            raise RuntimeError("disk full")

    pairs = [socket.socketpair() for _ in range(2)]
    metrics = Metrics()
    metrics.count("objects_received_total", "confident", "CONSOLE1", by=3)
    end = NodeEnd(Failing(), metrics, [a for a, _ in pairs])
    end.start()
    try:
        bad, good = pairs[0][1], pairs[1][1]
        bad.sendall(b"\xff" * 8)  # lengths far over the limits
        bad.settimeout(5)
        assert bad.recv(1) == b""  # closed by the node's end
        web = WebEnd([good])
        assert web.alive()
        assert ('sro_decoder_objects_received_total{decision="confident",'
                'calling_ae_title="CONSOLE1"} 3') in web.metrics_text()
        from node.audit.models import utcnow
        from node.records import Origin
        try:
            web.receive_part10(b"DICM", Origin(None, None, None, None, utcnow()))
        except LinkError as exc:
            assert "RuntimeError: disk full" in str(exc)
        else:
            raise AssertionError("a failed store must not look stored")
        assert web.alive()  # the socket is still in step and in the pool
    finally:
        end.close()
