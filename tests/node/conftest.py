"""Fixtures for node tests: a real node on 127.0.0.1 port 0, a real SMTP server, real SROs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from model.training.synth import SynthConfig, generate, write_set
from node.dimse.service import Node
from node.settings import Settings, load_settings

DCMTK_DIRS = "/usr/bin:/usr/local/bin"
STORESCU = shutil.which("storescu", path=DCMTK_DIRS)
ECHOSCU = shutil.which("echoscu", path=DCMTK_DIRS)

needs_dcmtk = pytest.mark.skipif(
    STORESCU is None or ECHOSCU is None, reason="DCMTK storescu/echoscu not installed"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        with self._lock:
            return list(self.messages)


@contextlib.contextmanager
def smtp_server(port: int | None = None) -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    port = port or free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    with smtp_server() as server:
        yield server


def make_settings(data_dir: Path, smtp_port: int = 1, **sections: dict[str, Any]) -> Settings:
    """Settings for a test node: loopback, port 0, fast alert retries, no environment."""
    overrides: dict[str, dict[str, Any]] = {
        "node": {"host": "127.0.0.1", "port": 0, "shutdown_grace_s": 5.0},
        "storage": {"data_dir": str(data_dir)},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "timeout_s": 2.0},
        # one e-mail per alert unless a test groups them ([alerts] digest_window_s)
        "alerts": {"recipients": ["physics@example.org"], "retry_initial_s": 0.2,
                   "retry_max_s": 1.0, "poll_s": 0.5, "digest_window_s": 0},
        "log": {"format": "text"},
        # the analytic decoder: fast and exact; the end-to-end test runs the shipped model
        "model": {"name": "analytic"},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(env={}, overrides=overrides)


@pytest.fixture
def node_factory() -> Iterator[Callable[[Settings], Node]]:
    """Start nodes in-process; every one started is stopped at the end of the test."""
    started: list[Node] = []

    def start(settings: Settings) -> Node:
        node = Node(settings)
        node.start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop(grace_s=2.0)


@pytest.fixture(scope="session")
def sro_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 synthetic SROs, about a third corrupted the ways real offsets go wrong."""
    out = tmp_path_factory.mktemp("sros")
    write_set(generate(SynthConfig(n=30, seed=11, corrupt_fraction=0.35)), out)
    return out


def sro_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def storescu(port: int, paths: list[Path], aet: str = "CONSOLE1", aec: str = "SRO_DECODER",
             *extra: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    assert STORESCU is not None
    cmd = [STORESCU, "-v", "-aet", aet, "-aec", aec, *extra, "127.0.0.1", str(port),
           *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def echoscu(port: int, aet: str = "CONSOLE1") -> subprocess.CompletedProcess[str]:
    assert ECHOSCU is not None
    return subprocess.run([ECHOSCU, "-aet", aet, "-aec", "SRO_DECODER", "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=30)


def storescu_results(output: str) -> list[tuple[str, str]]:
    """``(file, status text)`` for every response DCMTK storescu -v reports."""
    results = []
    current = None
    for line in output.splitlines():
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif "Received Store Response" in line and current is not None:
            results.append((current, line.split("Received Store Response", 1)[1].strip()))
            current = None
    return results


def cli(*args: str) -> tuple[int, str]:
    """Run ``sro-decoder`` in-process; return its exit status and standard output."""
    from node.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = main(list(args))
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, out.getvalue()


def export(data_dir: Path) -> dict[str, dict[str, Any]]:
    """``audit export --format jsonl`` keyed by SOP Instance UID."""
    rc, out = cli("audit", "--data-dir", str(data_dir), "export", "--format", "jsonl")
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {row["sop_instance_uid"]: row for row in rows}


def echo_ok(port: int, aet: str = "CONSOLE1") -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and int(status.Status) == 0
