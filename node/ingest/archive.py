"""The archive: every received object, durably on disk before it is acknowledged.

Files are in the DICOM File Format (PS3.10 section 7): preamble, ``DICM``, File Meta Information
(with Sending/Receiving Application Entity Title, (0002,0017)/(0002,0018), so that start-up
reconciliation knows the sender), then the data set exactly as received. Each file is written to
a temporary name, flushed and fsynced, renamed, and its folder fsynced. The path comes from the
SOP Instance UID only once it has been checked to be a UID (PS3.5 section 9.1); anything else goes
to ``unnamed/`` under a generated name. A second object with the same UID never replaces the
first: it is kept under ``duplicates/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node.records import Placement

#: PS3.5 section 9.1: components of digits, no leading zero (but "0"), separated by ".", ≤ 64.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
SUFFIX = ".dcm"
TEMP_SUFFIX = ".partial"


def valid_uid(text: str | None) -> bool:
    """Whether ``text`` is a syntactically valid UID (PS3.5 section 9.1)."""
    return text is not None and len(text) <= 64 and _UID.match(text) is not None


@dataclass(frozen=True, slots=True)
class Archived:
    path: Path
    relative: str  # path relative to the archive root, as recorded in the audit database
    placement: Placement
    size_bytes: int


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a new or removed name) durable: fsync the folder itself."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Archive:
    """The archive folder: ``objects/<2 hex>/<UID>.dcm``, ``duplicates/``, ``unnamed/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: set[Path] = set()

    def primary_path(self, sop_instance_uid: str) -> Path:
        """The one place of the object with this (checked) UID."""
        if not valid_uid(sop_instance_uid):
            raise ValueError(f"not a valid UID: {sop_instance_uid!r}")
        shard = hashlib.sha1(sop_instance_uid.encode("ascii")).hexdigest()[:2]
        return self.root / "objects" / shard / f"{sop_instance_uid}{SUFFIX}"

    def prepare(self) -> None:
        """Create the 256 ``objects/`` shard folders now (durably), not on first use.

        A shard made while an object is being received costs that object two more folder
        fsyncs; made at start-up they cost nothing per object.
        """
        for shard in range(256):
            self._folder(self.root / "objects" / f"{shard:02x}")

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def placement_of(self, path: Path) -> Placement:
        """Where an archived file went, from its folder (``objects/``, ``duplicates/``, other)."""
        top = path.relative_to(self.root).parts[0]
        return {"objects": Placement.PRIMARY, "duplicates": Placement.DUPLICATE}.get(
            top, Placement.UNNAMED)

    def _folder(self, path: Path) -> None:
        if path not in self._made:
            created = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
            if created:  # the new folder's entry must itself be durable
                fsync_dir(path.parent)
                if path.parent.parent != self.root.parent:
                    with contextlib.suppress(OSError):
                        fsync_dir(path.parent.parent)
            self._made.add(path)

    def store(self, sop_instance_uid: str | None, data: bytes) -> Archived:
        """Write ``data`` durably and return where it went (module docstring)."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        token = uuid.uuid4().hex[:12]
        if sop_instance_uid is None or not valid_uid(sop_instance_uid):
            return self._write(self.root / "unnamed" / f"{stamp}-{token}{SUFFIX}", data,
                               Placement.UNNAMED, exclusive=False)
        primary = self.primary_path(sop_instance_uid)
        try:
            return self._write(primary, data, Placement.PRIMARY, exclusive=True)
        except FileExistsError:
            target = self.root / "duplicates" / primary.parent.name / (
                f"{sop_instance_uid}.{stamp}-{token}{SUFFIX}"
            )
            return self._write(target, data, Placement.DUPLICATE, exclusive=False)

    def _write(
        self, final: Path, data: bytes, placement: Placement, *, exclusive: bool
    ) -> Archived:
        self._folder(final.parent)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            if exclusive:
                # link() fails when the name exists: two objects with one UID never overwrite
                os.link(temp, final)
                os.unlink(temp)
            else:
                os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        fsync_dir(final.parent)
        return Archived(final, self.relative(final), placement, len(data))

    def files(self) -> Iterator[Path]:
        """Every archived object (not temporary files), in a stable order."""
        for sub in ("objects", "duplicates", "unnamed"):
            base = self.root / sub
            if base.is_dir():
                yield from sorted(p for p in base.rglob(f"*{SUFFIX}") if not p.name.startswith("."))

    def remove_partials(self) -> int:
        """Delete temporary files a killed process left (never acknowledged); return how many."""
        count = 0
        if self.root.is_dir():
            for p in self.root.rglob(f".*{TEMP_SUFFIX}"):
                with contextlib.suppress(OSError):
                    p.unlink()
                    count += 1
        return count
