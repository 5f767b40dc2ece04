"""``sro-decoder serve`` with ``[web] enabled``: the web console runs in the node's process and
answers before the DICOM listener opens; STOW-RS takes the node's receipt path, ``/metrics``
shows the node's counters; a console that cannot start stops ``serve`` with its reason, before
any association is accepted."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from node.audit.store import open_database
from node.audit.users import Role, add_user, new_token
from node.metrics import parse_exposition
from tests.node.conftest import export, needs_dcmtk, sro_files, storescu
from tests.node.test_crash_and_shutdown import CONFIG as SERVE_CONFIG
from tests.node.test_crash_and_shutdown import ServeProcess
from tests.web.test_web_api import _multipart

#: the crash test's node, with its web console on an ephemeral port
CONFIG = SERVE_CONFIG + """[web]
enabled = true
host = "127.0.0.1"
port = 0
"""


def _web_url(serve: ServeProcess) -> str:
    """The web console's URL, from its log line; it comes before the DICOM listener's."""
    events = serve.events()
    assert "web console listening" in events and "listening" in events, serve.lines[-5:]
    assert events.index("web console listening") < events.index("listening")
    return str(next(r for r in serve.lines if r.get("event") == "web console listening")["url"])


def _token(data: Path) -> str:
    engine = open_database(f"sqlite:///{data / 'audit.db'}", migrate_schema=False)
    with Session(engine) as session, session.begin():
        token = new_token(session, add_user(session, "sender", Role.VIEWER, "a long password"))
    engine.dispose()
    return token


@needs_dcmtk
def test_serve_runs_the_web_console_in_its_process_before_it_listens(
        tmp_path: Path, sro_dir: Path) -> None:
    serve = ServeProcess(tmp_path, tmp_path / "data", CONFIG, start_timeout_s=90)
    try:
        url = _web_url(serve)
        auth = {"Authorization": f"Bearer {_token(tmp_path / 'data')}"}
        files = sro_files(sro_dir)
        assert serve.port is not None
        assert storescu(serve.port, files[:20]).returncode == 0
        boundary = "sro-boundary-1"
        with httpx.Client(base_url=url, timeout=60, headers=auth) as c:
            assert c.get("/healthz").json() == {"status": "up"}
            assert c.get("/readyz").json()["ready"] is True
            # STOW-RS: the node's own receipt path
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
        assert ("sro_decoder_outbox_depth", "", "") in metrics
    finally:
        serve.stop()
    assert serve.proc.returncode == 0


def test_a_web_console_that_cannot_start_stops_serve_with_its_reason(tmp_path: Path) -> None:
    """``[web] port`` taken: ``serve`` says why and exits 1 before it accepts any association,
    rather than run without its console."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "node.toml"
        config.write_text(CONFIG.replace("[web]\nenabled = true\nhost = \"127.0.0.1\"\nport = 0",
                                         f"[web]\nenabled = true\nhost = \"127.0.0.1\"\n"
                                         f"port = {port}"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SRO_DECODER_")}
        done = subprocess.run([sys.executable, "-m", "node.cli.main", "serve", "--config",
                               str(config), "--data-dir", str(tmp_path / "data")],
                              capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "cannot start the web console"
               and f"127.0.0.1:{port}" in str(r.get("error")) for r in lines), lines[-5:]
    assert "listening" not in [r.get("event") for r in lines]  # no association accepted
    assert "sro-decoder: cannot start the web console" in done.stderr
