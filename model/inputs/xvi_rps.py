"""The Elekta XVI "RPS" companion: the correction XVI displays, sent beside its SRO
(docs/contract.md section 1, "offset sources" item 3).

A Raw Data Storage instance (PS3.3 A.37, SOP Class 1.2.840.10008.5.1.4.1.1.66) with Modality
``REG``, Manufacturer ``ELEKTA`` and Series Description ``RPS``, whose private element
(0021,xx3A) of the block ``Elekta: zip file`` (VR UN) holds a ZIP archive with a
``<UID>.INI.XVI`` text file. Its alignment section ``[ALIGNMENT.<date>; <time>]`` holds
``Align.correction`` (else ``Align.clip1``) = ``lateral, longitudinal, vertical`` (cm), then
``rotation, pitch, roll`` (degrees in [0, 360)): the offset is
``t = 10 · (lateral, longitudinal, vertical)`` mm and ``r = (pitch, roll, rotation)``, wrapped to
(−180, 180].

The archive is hostile input. It is opened with every bound of section 1 checked before and
while reading: at most :data:`MAX_MEMBERS` members, no member name with a path component, an
absolute name, a drive or ``..``; at most :data:`MAX_EXPANDED_BYTES` expanded, counted on the
bytes actually inflated (chunk by chunk, never trusting the declared sizes), so a zip bomb stops
after at most that many bytes. Each failure is ``invalid`` with its own reason code
(:class:`model.errors.InvalidReason`, ``companion_*``).
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
import zipfile
import zlib
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from model.dicom import sro
from model.errors import InvalidReason, SROError
from model.inputs.adapter import CompanionInput
from model.inputs.profiles import OffsetProfile, find_private_base, register_private_entries
from model.offset import CouchOffset, wrap_angle

RAW_DATA_STORAGE = "1.2.840.10008.5.1.4.1.1.66"
ZIP_CREATOR = "Elekta: zip file"
RPS_CREATOR = "Elekta: RPS data"
ZIP_GROUP = 0x0021
ZIP_ELEMENT = 0x3A
#: the bounds of docs/contract.md section 1
MAX_EXPANDED_BYTES = 10 * 1024 * 1024
MAX_MEMBERS = 100
_CHUNK = 64 * 1024

register_private_entries(ZIP_CREATOR, {(ZIP_GROUP << 16) | 0x10 << 8 | ZIP_ELEMENT: (
    "UN", "1", "XVI RPS ZIP archive", "")})

_MODALITY = Tag(0x0008, 0x0060)
_MANUFACTURER = Tag(0x0008, 0x0070)
_SERIES_DESCRIPTION = Tag(0x0008, 0x103E)
_CONTENT_DATE = Tag(0x0008, 0x0023)
_CONTENT_TIME = Tag(0x0008, 0x0033)
_PATIENT_ID = Tag(0x0010, 0x0020)
_STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)


def _text(ds: Dataset, tag: int) -> str | None:
    elem = ds.get(tag)
    if elem is None or elem.value is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = str(value).strip("\0 ")
    return text or None


def _safe_name(name: str) -> bool:
    """A bare file name: no directory part, no absolute path or drive, no ``..``, no control
    characters (a ZIP member name is hostile text, APPNOTE 4.4.17)."""
    return bool(name) and not (
        "/" in name or "\\" in name or ":" in name or name in (".", "..")
        or any(ord(ch) < 0x20 for ch in name))


def unzip_ini(data: bytes) -> tuple[str, bytes]:
    """The one ``*.INI.XVI`` member of the archive ``data``: ``(name, bytes)``, read with the
    bounds of the module docstring; raises :class:`SROError` with a ``companion_*`` code."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise SROError(InvalidReason.COMPANION_ZIP_INVALID,
                       f"the RPS element is not a ZIP archive: {exc}") from exc
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise SROError(InvalidReason.COMPANION_ZIP_TOO_LARGE,
                           f"the ZIP archive has {len(members)} members, more than {MAX_MEMBERS}")
        for info in members:
            if not _safe_name(info.filename):
                raise SROError(InvalidReason.COMPANION_ZIP_UNSAFE_NAME,
                               f"ZIP member name {info.filename[:80]!r} is not a bare file name")
        declared = sum(info.file_size for info in members)
        if declared > MAX_EXPANDED_BYTES:
            raise SROError(InvalidReason.COMPANION_ZIP_TOO_LARGE,
                           f"the ZIP archive declares {declared} bytes expanded, more than "
                           f"{MAX_EXPANDED_BYTES}")
        inis = [i for i in members if i.filename.upper().endswith(".INI.XVI")]
        if len(inis) != 1:
            found = ", ".join(repr(i.filename) for i in members[:10]) or "none"
            raise SROError(InvalidReason.COMPANION_INI_MISSING,
                           f"the ZIP archive holds {len(inis)} .INI.XVI files, not one "
                           f"(members: {found})")
        info = inis[0]
        out = bytearray()
        try:
            with archive.open(info) as stream:
                while chunk := stream.read(_CHUNK):
                    out += chunk
                    if len(out) > MAX_EXPANDED_BYTES:  # the real size, not the declared one
                        raise SROError(InvalidReason.COMPANION_ZIP_TOO_LARGE,
                                       f"{info.filename!r} expands beyond "
                                       f"{MAX_EXPANDED_BYTES} bytes")
        except SROError:
            raise
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError,
                OSError, zlib.error) as exc:
            raise SROError(InvalidReason.COMPANION_ZIP_INVALID,
                           f"{info.filename!r} cannot be expanded: {exc}") from exc
        return info.filename, bytes(out)


_SECTION = re.compile(r"^\[(?P<name>[^\]]*)\]\s*$")
_HEADER_TIME = re.compile(
    r"^ALIGNMENT\.\s*(?P<date>\d{4}-?\d{2}-?\d{2}|\d{2}[./-]\d{2}[./-]\d{4})\s*[;,]?\s*"
    r"(?P<time>\d{2}:?\d{2}:?\d{2})?", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class XviAlignment:
    """What the alignment section of an ``.INI.XVI`` says (module docstring): the six values
    of ``Align.correction`` (else ``Align.clip1``) as written, which key they came from, and
    the alignment time of the section header (naive, the console's local time)."""

    key: str
    values: tuple[float, float, float, float, float, float]
    time: dt.datetime | None
    couch_shift_cm: tuple[float, float, float] | None

    def offset(self, console: str | None = None) -> CouchOffset:
        lat, lon, vert, rotation, pitch, roll = self.values
        return CouchOffset(
            translation_mm=(10.0 * lat, 10.0 * lon, 10.0 * vert),
            rotation_deg=(wrap_angle(pitch), wrap_angle(roll), wrap_angle(rotation)),
            console=console)


def _header_time(name: str) -> dt.datetime | None:
    m = _HEADER_TIME.match(name.strip())
    if m is None:
        return None
    date, time = m["date"], (m["time"] or "000000").replace(":", "")
    for fmt in ("%Y%m%d", "%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%d-%m-%Y"):
        try:
            day = dt.datetime.strptime(date, fmt)
        except ValueError:
            continue
        try:
            return day.replace(hour=int(time[:2]), minute=int(time[2:4]), second=int(time[4:6]))
        except ValueError:
            return None
    return None


def _numbers(text: str, count: int, where: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        raise SROError(InvalidReason.COMPANION_INI_MALFORMED,
                       f"{where} has {len(parts)} values, not {count}")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError as exc:
        raise SROError(InvalidReason.COMPANION_INI_MALFORMED,
                       f"{where} has a value that is not a number: {text[:80]!r}") from exc
    if not all(math.isfinite(v) for v in values):
        raise SROError(InvalidReason.COMPANION_INI_MALFORMED, f"{where} has NaN or infinity")
    return values


def parse_ini_xvi(data: bytes) -> XviAlignment:
    """Read the alignment section of an ``.INI.XVI`` (module docstring). Keys are matched
    case-insensitively; with several alignment sections the one with the latest header time is
    read. Raises :class:`SROError` (``companion_ini_malformed``) when there is no alignment
    section, no ``Align.correction``/``Align.clip1``, or a value is not as described: not six
    numbers, not finite, an angle outside [0, 360) (a little below 0 is tolerated as written
    by rounding: −0.05), a translation beyond ±100 cm."""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    sections: list[tuple[str, dict[str, str]]] = []
    current: dict[str, str] | None = None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        m = _SECTION.match(line)
        if m:
            current = {}
            sections.append((m["name"].strip(), current))
        elif "=" in line and current is not None:
            name, _, value = line.partition("=")
            current[name.strip().lower()] = value.strip()
    alignments = [(name, body) for name, body in sections
                  if name.upper().startswith("ALIGNMENT")]
    if not alignments:
        raise SROError(InvalidReason.COMPANION_INI_MALFORMED,
                       "the .INI.XVI file has no [ALIGNMENT...] section")
    alignments.sort(key=lambda nb: _header_time(nb[0]) or dt.datetime.min)
    name, body = alignments[-1]
    found = next((k for k in ("align.correction", "align.clip1") if k in body), None)
    if found is None:
        raise SROError(InvalidReason.COMPANION_INI_MALFORMED,
                       f"section [{name[:60]}] has neither Align.correction nor Align.clip1")
    key: str = found
    where = f"{key} in [{name[:60]}]"
    values = _numbers(body[key], 6, where)
    if any(abs(v) > 100.0 for v in values[:3]):
        raise SROError(InvalidReason.COMPANION_INI_MALFORMED,
                       f"{where}: a translation beyond ±100 cm")
    if any(not (-0.05 <= v < 360.0) for v in values[3:]):
        raise SROError(InvalidReason.COMPANION_INI_MALFORMED,
                       f"{where}: an angle outside [0, 360) degrees")
    shift = None
    shift_keys = ("couchshiftlat", "couchshiftlong", "couchshiftheight")
    if all(k in body for k in shift_keys):
        try:
            shift = tuple(float(body[k]) for k in shift_keys)
        except ValueError:
            shift = None  # "-": not recorded
    return XviAlignment(key, values, _header_time(name), shift)  # type: ignore[arg-type]


def _content_time(ds: Dataset) -> dt.datetime | None:
    return sro.dicom_datetime(_text(ds, _CONTENT_DATE), _text(ds, _CONTENT_TIME))


@dataclass(frozen=True, slots=True)
class XviRpsAdapter:
    """Raw Data Storage from Elekta XVI carrying the RPS ZIP (module docstring)."""

    name: str = "elekta_xvi_rps"
    sop_class_uids: tuple[str, ...] = (RAW_DATA_STORAGE,)

    def recognises(self, ds: Dataset) -> bool:
        """Raw Data Storage with Modality ``REG``, Manufacturer ``ELEKTA`` (any case, as a
        word) and Series Description ``RPS``; never raises."""
        try:
            return (sro.sop_class_uid_of(ds) == RAW_DATA_STORAGE
                    and (_text(ds, _MODALITY) or "").upper() == "REG"
                    and "ELEKTA" in (_text(ds, _MANUFACTURER) or "").upper()
                    and (_text(ds, _SERIES_DESCRIPTION) or "").upper() == "RPS")
        except Exception:
            return False

    def read(self, ds: Dataset, profile: OffsetProfile) -> CompanionInput:
        """The companion's offset and pairing key; raises :class:`SROError` (``missing_value``
        without a SOP Instance UID; ``companion_*`` for the archive and its INI)."""
        sop_uid = sro.sop_instance_uid_of(ds)
        if sop_uid is None:
            raise SROError(InvalidReason.MISSING_VALUE, "SOPInstanceUID is missing or empty")
        base = find_private_base(ds, ZIP_CREATOR, ZIP_GROUP)
        elem = None if base is None else ds.get(base | ZIP_ELEMENT)
        data = None if elem is None else elem.value
        if not isinstance(data, bytes | bytearray) or not data:
            raise SROError(InvalidReason.COMPANION_ZIP_MISSING,
                           f"no ZIP archive in a private block {ZIP_CREATOR!r} "
                           f"(element ({ZIP_GROUP:04X},xx{ZIP_ELEMENT:02X}))")
        name, ini = unzip_ini(bytes(data))
        alignment = parse_ini_xvi(ini)
        warnings: list[str] = []
        if alignment.key != "align.correction":
            warnings.append(f"{name}: no Align.correction; Align.clip1 read instead")
        if alignment.couch_shift_cm is not None:
            expected = tuple(-v for v in alignment.values[:3])
            if max(abs(a - b) for a, b in zip(alignment.couch_shift_cm, expected,
                                               strict=True)) > 0.011:
                warnings.append(f"{name}: CouchShiftLat/Long/Height "
                                f"{list(alignment.couch_shift_cm)} are not the negated "
                                f"{alignment.key} translations {list(expected)}")
        console = _text(ds, Tag(0x0008, 0x1010))  # Station Name
        offset = alignment.offset(console)
        return CompanionInput(
            offset=offset, sop_instance_uid=sop_uid, patient_id=_text(ds, _PATIENT_ID),
            study_instance_uid=sro.ascii_value(ds, _STUDY_INSTANCE_UID),
            alignment_time=alignment.time or _content_time(ds), source=self.name,
            warnings=tuple(warnings))


XVI_RPS = XviRpsAdapter()
