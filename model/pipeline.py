"""From DICOM datasets or files to decode records: read, check, decode in one batch, decide.

Used by ``sro-decoder decode`` and by the node's C-STORE handler alike, so both give the same
record for the same object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from model.batch import DecodeInput, InputBatch
from model.decision import DecisionPolicy, DecodeRecord, decide, invalid_record, no_offset_record
from model.decoder import Decoder
from model.errors import InvalidReason, SROError
from model.offset import DEFAULT_PROFILE, CouchOffset, OffsetProfile
from model.sro import SpatialRegistration, read


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Per-call settings: the offset profile (with precision), overrides, decision policy."""

    profile: OffsetProfile = DEFAULT_PROFILE
    policy: DecisionPolicy = field(default_factory=DecisionPolicy)
    offset_override: CouchOffset | None = None
    isocenter_override: tuple[float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A dataset after SPEC section 1 checks: either a registration or an invalid record."""

    registration: SpatialRegistration | None
    record: DecodeRecord | None


def _prepare(
    ds: Dataset, decoder: Decoder, options: DecodeOptions, path: str | None
) -> tuple[SpatialRegistration | None, DecodeRecord | None]:
    uid = str(ds.get("SOPInstanceUID", "")) or None
    try:
        reg = read(ds, options.profile)
    except SROError as exc:
        return None, invalid_record(
            decoder.info, exc.code, exc.message, path=path, sop_instance_uid=uid
        )
    except Exception as exc:  # a malformed element pydicom cannot convert, etc.
        return None, invalid_record(
            decoder.info,
            InvalidReason.UNREADABLE,
            f"the dataset cannot be understood: {type(exc).__name__}: {exc}",
            path=path,
            sop_instance_uid=uid,
        )
    offset = options.offset_override or reg.offset
    if offset is not None and options.isocenter_override is not None:
        offset = dataclasses.replace(offset, isocenter_mm=options.isocenter_override)
    if offset is None:
        return None, no_offset_record(
            decoder.info,
            reg.matrix,
            path=path,
            sop_instance_uid=reg.sop_instance_uid,
            warnings=reg.warnings,
        )
    return dataclasses.replace(reg, offset=offset), None


def decode_datasets(
    datasets: Sequence[tuple[Dataset | None, str | None, str | None]],
    decoder: Decoder,
    options: DecodeOptions,
) -> list[DecodeRecord]:
    """Decode ``(dataset or None, path, error text)`` triples in one batch, keeping their order.

    A ``None`` dataset is a file that could not be read; its error text becomes the reason.
    """
    out: list[DecodeRecord | None] = [None] * len(datasets)
    todo: list[tuple[int, SpatialRegistration]] = []
    for i, (ds, path, error) in enumerate(datasets):
        if ds is None:
            out[i] = invalid_record(
                decoder.info, InvalidReason.UNREADABLE, error or "unreadable", path=path
            )
            continue
        reg, record = _prepare(ds, decoder, options, path)
        if record is not None:
            out[i] = record
        else:
            assert reg is not None
            todo.append((i, reg))
    if todo:
        precision = options.profile.precision
        inputs = [
            DecodeInput(r.matrix, r.offset, precision, r.orthonormality_error)  # type: ignore[arg-type]
            for _, r in todo
        ]
        batch = InputBatch.from_inputs(inputs)
        decided = decide(
            batch,
            decoder.decode(batch),
            decoder.info,
            options.policy,
            precisions=[precision] * len(todo),
            offsets=[x.offset for x in inputs],
        )
        for (i, reg), record in zip(todo, decided, strict=True):
            out[i] = dataclasses.replace(
                record,
                path=datasets[i][1],
                sop_instance_uid=reg.sop_instance_uid,
                warnings=reg.warnings,
            )
    return [r for r in out if r is not None]


def decode_dataset(ds: Dataset, decoder: Decoder, options: DecodeOptions) -> DecodeRecord:
    """Decode one received dataset (the node's path)."""
    return decode_datasets([(ds, None, None)], decoder, options)[0]


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders give their ``.dcm`` files sorted by name (SPEC section 5)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() == ".dcm" and q.is_file()))
        else:
            out.append(p)
    return out


def read_file(path: Path) -> tuple[Dataset | None, str | None]:
    """Read one DICOM file; return ``(None, reason)`` when it cannot be read at all."""
    try:
        return pydicom.dcmread(path), None
    except FileNotFoundError:
        return None, f"no such file: {path}"
    except IsADirectoryError:
        return None, f"is a directory: {path}"
    except PermissionError:
        return None, f"permission denied: {path}"
    except InvalidDicomError as exc:
        return None, f"not a DICOM file: {exc}"
    except Exception as exc:
        return None, f"cannot parse DICOM file: {type(exc).__name__}: {exc}"


def decode_files(
    paths: Sequence[Path], decoder: Decoder, options: DecodeOptions, chunk: int = 512
) -> Iterator[tuple[DecodeRecord, bool]]:
    """Decode files in chunks, in order. Yields ``(record, readable)``."""
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        loaded = [(p, *read_file(p)) for p in part]
        records = decode_datasets([(ds, str(p), err) for p, ds, err in loaded], decoder, options)
        for (_, ds, _), record in zip(loaded, records, strict=True):
            yield record, ds is not None
