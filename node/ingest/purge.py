"""Retention: removing archived files and their records once ``[retention] days`` have passed.

Which objects may go is decided in the audit database (:mod:`node.audit.purge`); here the
batches are run and the files removed, in an order that no crash can turn into a record without
its file or a purged object recorded again (docs/conformance.md section 3, Retention):

1. under the archive's purge lock (also held by start-up reconciliation), the batch's file
   paths are written to the purge journal (``archive/.purge-journal``) and fsynced;
2. the batch's rows are deleted in one transaction and committed;
3. the files are removed, their folders fsynced, the journal removed.

Killed before 2, the journal names files still recorded: they are kept. Killed after 2, it
names files whose records are gone: the next purge or start-up (before reconciliation) removes
them, so they are not recorded again. An archived file without a record is never in a batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from node.audit.models import utcnow
from node.audit.purge import Group, PurgePlan, Removed, plan_purge, recorded_paths, remove_groups
from node.ingest.archive import Archive, fsync_dir
from node.settings import RetentionSettings

log = logging.getLogger("node.ingest.purge")

JOURNAL = ".purge-journal"
LOCK = ".purge.lock"
_FOLDERS = ("objects", "duplicates", "unnamed")


@contextlib.contextmanager
def purge_lock(archive: Archive) -> Iterator[None]:
    """The archive's purge lock (``flock``), held by a purge batch and by reconciliation, so
    that reconciliation never records a file a purge is removing."""
    archive.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(archive.root / LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class PurgeJournal:
    """The files of the batch being purged, written before its commit (module docstring)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.path = archive.root / JOURNAL

    def file(self, relative: str) -> Path | None:
        """The archived file at a recorded relative path, if it names one inside the archive's
        folders (a path from the database or the journal is not trusted to)."""
        parts = Path(relative).parts
        if not parts or parts[0] not in _FOLDERS or ".." in parts or Path(relative).is_absolute():
            return None
        return self.archive.root / relative

    def write(self, paths: Sequence[str]) -> None:
        temp = self.path.with_name(self.path.name + ".new")
        with open(temp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p) + "\n" for p in paths)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.path)
        fsync_dir(self.path.parent)

    def read(self) -> list[str]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, str):
                    out.append(value)
        return out  # a torn last line (killed while writing): that batch never committed

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()
            fsync_dir(self.path.parent)

    def remove_files(self, paths: Sequence[str]) -> int:
        """Remove these archived files (missing ones are fine); return how many were there."""
        removed, folders = 0, set()
        for relative in paths:
            path = self.file(relative)
            if path is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
                folders.add(path.parent)
        for folder in folders:
            with contextlib.suppress(OSError):
                fsync_dir(folder)
        return removed

    def finish(self, engine: Engine) -> int:
        """Complete an interrupted purge (call under :func:`purge_lock`): remove the journal's
        files whose records are gone, keep those still recorded; return how many went."""
        paths = self.read()
        if not paths and not self.path.exists():
            return 0
        with Session(engine) as session:
            still = recorded_paths(session, paths)
        removed = self.remove_files([p for p in paths if p not in still])
        self.clear()
        if removed:
            log.warning("finished an interrupted purge", extra={"fields": {"files": removed}})
        return removed


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge removed (``dry_run``: would remove) and why old objects stay."""

    cutoff: dt.datetime
    dry_run: bool
    removed: Removed
    kept: dict[str, int] = field(default_factory=dict)
    #: batches left for the next purge because their objects changed while purging
    batches_deferred: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"cutoff": self.cutoff.isoformat(), "dry_run": self.dry_run,
                "removed": self.removed.as_dict(), "kept": dict(sorted(self.kept.items())),
                "batches_deferred": self.batches_deferred}


class Purger:
    """Runs the retention rule over one archive and its records."""

    def __init__(self, engine: Engine, archive: Archive, retention: RetentionSettings) -> None:
        self.engine = engine
        self.archive = archive
        self.retention = retention
        self.journal = PurgeJournal(archive)

    def _in_archive(self, relative: str) -> bool:
        path = self.journal.file(relative)
        return path is not None and path.is_file()

    def plan(self, now: dt.datetime | None = None) -> tuple[dt.datetime, PurgePlan]:
        cutoff = (now or utcnow()) - dt.timedelta(days=self.retention.days)
        with Session(self.engine) as session:
            return cutoff, plan_purge(session, cutoff, self._in_archive)

    def run(self, *, dry_run: bool = False, now: dt.datetime | None = None,
            stop: threading.Event | None = None) -> PurgeReport:
        """Plan, then (unless ``dry_run``) remove batch by batch until done or ``stop``."""
        cutoff, plan = self.plan(now)
        if dry_run:
            return PurgeReport(cutoff, True, plan.removed, plan.kept)
        removed, deferred = Removed(), 0
        for batch in self._batches(plan.groups):
            if stop is not None and stop.is_set():
                break
            done = self._remove(batch, cutoff)
            if done is None:
                deferred += 1
            else:
                removed = removed + done
        report = PurgeReport(cutoff, False, removed, plan.kept, deferred)
        log.info("purge done", extra={"fields": {
            "days": self.retention.days, **{f"removed_{k}": v
                                            for k, v in removed.as_dict().items()},
            **{f"kept_{k}": v for k, v in plan.kept.items()}, "batches_deferred": deferred}})
        return report

    def _batches(self, groups: Sequence[Group]) -> Iterator[list[Group]]:
        batch: list[Group] = []
        size = 0
        for group in groups:
            if batch and size + len(group.object_ids) > self.retention.batch:
                yield batch
                batch, size = [], 0
            batch.append(group)
            size += len(group.object_ids)
        if batch:
            yield batch

    def _remove(self, batch: list[Group], cutoff: dt.datetime) -> Removed | None:
        paths = [p for g in batch for p, _ in g.files]
        with purge_lock(self.archive):
            self.journal.finish(self.engine)
            self.journal.write(paths)
            try:
                with Session(self.engine) as session, session.begin():
                    done = remove_groups(session.connection(), batch, cutoff, self._in_archive)
                    if done is None:
                        session.rollback()
            except (IntegrityError, DBAPIError) as exc:  # a row added meanwhile refers to one
                log.info("purge batch deferred: the database refused it",
                         extra={"fields": {"error": type(exc).__name__}})
                done = None
            if done is None:
                self.journal.clear()
                return None
            self.journal.remove_files(paths)
            self.journal.clear()
        return done


class DailyPurge:
    """The node's purge thread: at start and every ``[retention] interval_h``; stops at once."""

    def __init__(self, purger: Purger) -> None:
        self.purger = purger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention-purge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        interval = self.purger.retention.interval_h * 3600.0
        while not self._stop.is_set():
            try:
                self.purger.run(stop=self._stop)
            except Exception:  # the next interval tries again; the node keeps serving
                log.exception("purge failed")
            self._stop.wait(interval)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
