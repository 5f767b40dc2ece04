"""``/readyz``: whether the node can do its work now (issue 13 item 6), each check with its
state: the audit database answers (for SQLite: its file is there, readable and writable, and a
fresh connection reads the schema version), the archive takes a file, the disk under the data
folder has ``[web] ready_min_free_mb`` free, and the oldest unsent alert is younger than
``[web] ready_max_alert_age_s``."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import uuid
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from node.audit.models import utcnow
from node.settings import Settings
from node.web.queries import outbox_state


def _database(settings: Settings, engine: Engine) -> tuple[bool, str]:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = url.database
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            return False, f"the database file cannot be found: {exc.strerror}"
        if stat.S_IMODE(mode) & 0o600 != 0o600 or not os.access(path, os.R_OK | os.W_OK):
            return False, f"the database file is not readable and writable (mode " \
                          f"{stat.S_IMODE(mode):04o})"
        try:
            with sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=2) as conn:
                conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.Error as exc:
            return False, f"the database cannot be read: {exc}"
        return True, "reachable"
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return False, f"the database cannot be reached: {type(exc).__name__}"
    return True, "reachable"


def _archive(settings: Settings) -> tuple[bool, str]:
    probe = settings.archive_dir / f".ready-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        return False, f"the archive takes no file: {exc.strerror}"
    return True, "writable"


def readiness(settings: Settings, engine: Engine) -> dict[str, Any]:
    """Each check's state and whether all pass (module docstring)."""
    checks: dict[str, dict[str, Any]] = {}
    ok, detail = _database(settings, engine)
    checks["database"] = {"ok": ok, "detail": detail}
    ok, detail = _archive(settings)
    checks["archive"] = {"ok": ok, "detail": detail}
    try:
        free_mb = shutil.disk_usage(settings.data_dir).free / 2**20
        floor = settings.web.ready_min_free_mb
        checks["disk"] = {"ok": free_mb >= floor, "free_mb": round(free_mb, 1),
                          "min_free_mb": floor}
    except OSError as exc:
        checks["disk"] = {"ok": False, "detail": exc.strerror}
    limit = settings.web.ready_max_alert_age_s
    if checks["database"]["ok"]:
        try:
            with Session(engine) as session:
                pending, age = outbox_state(session, utcnow())
            checks["alerts"] = {"ok": age is None or age < limit, "pending": pending,
                                "oldest_pending_age_s": None if age is None else round(age, 1),
                                "max_age_s": limit}
        except Exception as exc:
            checks["alerts"] = {"ok": False, "detail": f"the outbox cannot be read: "
                                                       f"{type(exc).__name__}"}
    else:
        checks["alerts"] = {"ok": False, "detail": "the database is not reachable"}
    return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}
