"""``sro-decoder serve`` as its own process: SIGKILL in a burst loses no acknowledged object;
SIGTERM finishes and exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from model.training.synth import SynthConfig, generate, write_set
from tests.node.conftest import (
    STORESCU,
    export,
    make_settings,
    needs_dcmtk,
    storescu_results,
)

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
"""


class ServeProcess:
    """``sro-decoder serve`` in a child process; the port is read from its 'listening' log.

    ``config``: the TOML text the node runs with (written beside the data folder's parent).
    """

    def __init__(self, tmp_path: Path, data_dir: Path, config: str = CONFIG, *,
                 name: str = "node", start_timeout_s: float = 60.0) -> None:
        path = tmp_path / f"{name}.toml"
        path.write_text(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SRO_DECODER_")}
        self.data = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli.main", "serve", "--config", str(path),
             "--data-dir", str(data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: list[dict[str, Any]] = []
        self.port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(start_timeout_s) or self.port is None:
            self.proc.kill()
            raise AssertionError(f"{name} did not start: " + json.dumps(self.lines[-5:]))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"event": line.rstrip()}
            self.lines.append(record)
            if record.get("event") == "listening":
                self.port = int(record["port"])
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def events(self) -> list[str]:
        return [str(r.get("event")) for r in self.lines]


def start_storescu(port: int, files: list[Path]) -> subprocess.Popen[str]:
    assert STORESCU is not None
    return subprocess.Popen(
        [STORESCU, "-v", "-aet", "CONSOLE1", "-aec", "SRO_DECODER", "127.0.0.1", str(port),
         *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture(scope="module")
def burst_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("burst")
    write_set(generate(SynthConfig(n=300, seed=5, corrupt_fraction=0.1)), out)
    return out


@needs_dcmtk
def test_sigkill_in_a_burst_loses_no_acknowledged_object(
    tmp_path: Path, burst_dir: Path, node_factory: Any
) -> None:
    data = tmp_path / "data"
    serve = ServeProcess(tmp_path, data)
    assert serve.port is not None
    files = sorted(burst_dir.glob("*.dcm"))
    assert len(files) == 300
    senders = [start_storescu(serve.port, files[i::4]) for i in range(4)]

    objects = data / "archive" / "objects"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill in the middle of the burst
        if objects.is_dir() and sum(1 for _ in objects.rglob("*.dcm")) >= 90:
            break
        time.sleep(0.005)
    serve.proc.send_signal(signal.SIGKILL)
    serve.proc.wait(10)

    succeeded: set[str] = set()
    answered = 0
    for p in senders:
        out, _ = p.communicate(timeout=60)
        for path, status in storescu_results(out):
            answered += 1
            if status.startswith("(Success)"):
                succeeded.add(Path(path).name)
    truth = {json.loads(line)["file"]: json.loads(line)["sop_instance_uid"]
             for line in (burst_dir / "truth.jsonl").read_text().splitlines()}
    assert 0 < len(succeeded) < len(files), "the kill must land in the middle of the burst"
    ok_uids = {truth[name] for name in succeeded}

    # restart (in-process): reconciliation records what was archived but not recorded
    node = node_factory(make_settings(data))
    rows = export(data)
    archived = {p.name[: -len(".dcm")] for p in objects.rglob("*.dcm")}
    missing_archive = ok_uids - archived
    missing_record = ok_uids - set(rows)
    assert not missing_archive and not missing_record
    # and every archived object is recorded, once
    assert archived <= set(rows)
    assert not list((data / "archive").rglob("*.partial"))
    print(f"answered {answered}, succeeded {len(succeeded)}, archived {len(archived)}, "
          f"reconciled {node.reconciled}")


@needs_dcmtk
def test_sigterm_finishes_and_exits_cleanly(
    tmp_path: Path, burst_dir: Path
) -> None:
    data = tmp_path / "data"
    serve = ServeProcess(tmp_path, data)
    assert serve.port is not None
    files = sorted(burst_dir.glob("*.dcm"))[:40]
    sender = start_storescu(serve.port, files)
    objects = data / "archive" / "objects"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if objects.is_dir() and any(objects.rglob("*.dcm")):
            break
        time.sleep(0.005)
    serve.proc.send_signal(signal.SIGTERM)  # while the association is in flight
    assert serve.proc.wait(30) == 0
    out, _ = sender.communicate(timeout=30)
    results = storescu_results(out)
    assert sender.returncode == 0 and len(results) == len(files), out[-2000:]
    assert all(s.startswith("(Success)") for _, s in results)
    serve._reader.join(5)
    events = serve.events()
    assert "signal received; shutting down" in events
    assert events[-1] == "stopped"
    assert len(export(data)) == len(files)
