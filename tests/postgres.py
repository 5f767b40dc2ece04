"""A real PostgreSQL server for tests: a throw-away cluster in a temporary folder.

Debian's ``postgresql`` binaries (``/usr/lib/postgresql/<version>/bin``; ``scripts/test.sh``
installs them). ``initdb`` refuses to run as root, so as root the cluster runs as the
``postgres`` user (``runuser``). It listens on a Unix socket in its own folder only (no TCP).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    base = Path("/usr/lib/postgresql")
    versions = sorted((p for p in base.glob("*/bin") if (p / "initdb").is_file()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


BIN = _bin_dir()
#: scripts/test.sh installs the binaries and sets this: there, absent binaries fail, never skip
REQUIRED = os.environ.get("SRO_REQUIRE_POSTGRES") == "1"
needs_postgres = pytest.mark.skipif(
    BIN is None and not REQUIRED,
    reason="PostgreSQL server binaries absent (Debian package postgresql; scripts/test.sh "
           "installs it)")


class Cluster:
    """A running cluster; :meth:`database` makes a fresh, empty database and gives its URL."""

    def __init__(self, root: Path, user: str | None) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self._user = user

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        assert BIN is not None
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        options = (f"-c listen_addresses='' -c unix_socket_directories={self.socket_dir} "
                   "-c fsync=off -c max_connections=200")
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                  "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        assert BIN is not None
        with contextlib.suppress(subprocess.SubprocessError):
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                      "stop")

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql+psycopg://postgres@/{database}"
                f"?host={self.socket_dir}&port=5432")

    def database(self) -> str:
        """A new empty database's SQLAlchemy URL (psycopg 3)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a cluster in a temporary folder; stop and remove it at the end."""
    if BIN is None:
        if REQUIRED:
            pytest.fail("SRO_REQUIRE_POSTGRES=1 and no PostgreSQL server binaries")
        pytest.skip("PostgreSQL server binaries absent")
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="sro-pg-"))
    os.chmod(root, 0o755)
    (root / "socket").mkdir()
    if user is not None:
        shutil.chown(root, user)
        shutil.chown(root / "socket", user)
    c = Cluster(root, user)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
