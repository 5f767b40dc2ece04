"""From DICOM datasets or files to decode records: read, check, decode in one batch, decide.

Used by ``sro-decoder decode`` and by the node's C-STORE handler alike, so both give the same
record for the same object: the same structure check of the encoded bytes first
(:func:`structure_problem`, PS3.5 section 7), then the input adapter that recognises the data
set (:class:`model.inputs.AdapterRegistry`: the checks of docs/contract.md section 1), then the
decoder.
Nothing about one object stops the others: every failure becomes that object's ``invalid``
record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import UID

from model.batch import DecodeInput, InputBatch
from model.decision import (
    DecisionKind,
    DecisionPolicy,
    DecodeRecord,
    decide,
    invalid_record,
    no_offset_record,
)
from model.decoder import Decoder
from model.dicom.sro import sop_instance_uid_of
from model.dicom.structure import StructureError, check_structure
from model.errors import InvalidReason
from model.inputs import DEFAULT_REGISTRY, AdapterRegistry, InvalidInput, RegistrationInput
from model.inputs.profiles import DEFAULT_PROFILE, OffsetProfile
from model.offset import CouchOffset, Precision, TranslationUnit


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Per-call settings: the offset profile (with precision), overrides, decision policy, and
    the input adapters data sets are read through (:mod:`model.inputs`)."""

    profile: OffsetProfile = DEFAULT_PROFILE
    policy: DecisionPolicy = field(default_factory=DecisionPolicy)
    offset_override: CouchOffset | None = None
    isocenter_override: tuple[float, float, float] | None = None
    adapters: AdapterRegistry = DEFAULT_REGISTRY


def decode_options(
    *,
    offset: Sequence[float] | None = None,
    isocenter: Sequence[float] | None = None,
    rotation_step_deg: float | None = None,
    translation_step_mm: float | None = None,
    translation_unit: str | None = None,
    tolerance_mm: float | None = None,
    radius_mm: float | None = None,
    isocenter_bound_mm: float | None = None,
    base: OffsetProfile = DEFAULT_PROFILE,
) -> DecodeOptions:
    """The options of ``sro-decoder decode``'s flags (``None``: not given, the default), so that
    every caller (the command, the REST API) decodes the same bytes the same way: the offset
    profile of docs/contract.md section 5 with the precision given, an offset ``TX,TY,TZ,RX,RY,RZ``
    and isocenter overriding the private block, the decision policy of section 4."""
    precision = Precision(
        rotation_step_deg=rotation_step_deg or base.precision.rotation_step_deg,
        translation_step_mm=translation_step_mm or base.precision.translation_step_mm,
    )
    unit = TranslationUnit(translation_unit) if translation_unit else base.translation_unit
    profile = dataclasses.replace(base, translation_unit=unit, precision=precision)
    default = DecisionPolicy()
    policy = DecisionPolicy(
        tolerance_mm=tolerance_mm or default.tolerance_mm,
        radius_mm=radius_mm or default.radius_mm,
        isocenter_bound_mm=isocenter_bound_mm or default.isocenter_bound_mm,
    )
    override = None
    iso = None if isocenter is None else (float(isocenter[0]), float(isocenter[1]),
                                          float(isocenter[2]))
    if offset is not None:
        override = profile.convert(tuple(offset[:3]), tuple(offset[3:]), iso)
    return DecodeOptions(profile=profile, policy=policy, offset_override=override,
                         isocenter_override=iso)


def _prepare(
    ds: Dataset, decoder: Decoder, options: DecodeOptions, path: str | None
) -> tuple[RegistrationInput | None, DecodeRecord | None]:
    """Read ``ds`` through the input adapters; the input to decode (its offset being the first
    source of docs/contract.md section 1.7 that holds one), or the object's record."""
    read = options.adapters.read(ds, options.profile)
    if isinstance(read, InvalidInput):
        return None, invalid_record(
            decoder.info, read.reason, read.message, path=path,
            sop_instance_uid=read.sop_instance_uid)
    reg = read.registration
    offset = options.offset_override or read.offset
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
    return (read if offset is read.offset else RegistrationInput(reg, offset)), None


def decode_datasets(
    datasets: Sequence[tuple[Dataset | None, str | None, str | None]],
    decoder: Decoder,
    options: DecodeOptions,
) -> list[DecodeRecord]:
    """Decode ``(dataset or None, path, error text)`` triples in one batch, keeping their order.

    A ``None`` dataset is a file that could not be read; its error text becomes the reason.
    """
    out: list[DecodeRecord | None] = [None] * len(datasets)
    todo: list[tuple[int, RegistrationInput]] = []
    for i, (ds, path, error) in enumerate(datasets):
        if ds is None:
            out[i] = invalid_record(
                decoder.info, InvalidReason.UNREADABLE, error or "unreadable", path=path
            )
            continue
        try:
            reg, record = _prepare(ds, decoder, options, path)
        except Exception as exc:  # e.g. an override that does not fit: still this file's record
            reg, record = None, invalid_record(
                decoder.info, InvalidReason.UNREADABLE,
                f"the dataset cannot be understood: {type(exc).__name__}: {exc}", path=path,
                sop_instance_uid=sop_instance_uid_of(ds))
        if record is not None:
            out[i] = record
        else:
            assert reg is not None
            todo.append((i, reg))
    if todo:
        try:
            decided = _decide(todo, decoder, options)
        except Exception:  # one input the decoder fails on: find it, decode the others
            decided = []
            for one in todo:
                try:
                    decided.extend(_decide([one], decoder, options))
                except Exception as exc:
                    decided.append(DecodeRecord(
                        decision=DecisionKind.INVALID, reason_code=InvalidReason.DECODE_ERROR,
                        reason=f"the decoder failed: {type(exc).__name__}: {exc}",
                        model=decoder.info))
        for (i, ready), record in zip(todo, decided, strict=True):
            out[i] = dataclasses.replace(
                record,
                path=datasets[i][1],
                sop_instance_uid=ready.registration.sop_instance_uid,
                warnings=ready.registration.warnings,
            )
    return [r for r in out if r is not None]


def _decide(todo: list[tuple[int, RegistrationInput]], decoder: Decoder,
            options: DecodeOptions) -> list[DecodeRecord]:
    precision = options.profile.precision
    inputs = [
        DecodeInput(r.registration.matrix, r.offset, precision,  # type: ignore[arg-type]
                    r.registration.orthonormality_error, options.policy.isocenter_bound_mm)
        for _, r in todo
    ]
    batch = InputBatch.from_inputs(inputs)
    return decide(
        batch,
        decoder.decode(batch),
        decoder.info,
        options.policy,
        precisions=[precision] * len(todo),
        offsets=[x.offset for x in inputs],
    )


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


def structure_problem(data: bytes, transfer_syntax: str) -> str | None:
    """Why the encoded data set ``data`` (the bytes after any File Meta Information, deflated
    for the deflated transfer syntax) cannot be read, or ``None`` when its structure is whole
    (:func:`model.dicom.structure.check_structure`). The node checks what it receives with
    this, ``decode`` what it reads from a file: the same bytes get the same answer."""
    try:
        ts = UID(transfer_syntax)
        implicit, little, deflated = ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated
    except (ValueError, TypeError):
        return f"the transfer syntax {transfer_syntax!r} is not one this reader knows"
    try:
        check_structure(data, implicit=implicit, little=little, deflated=deflated)
    except StructureError as exc:
        return f"the data set is incomplete or damaged: {exc}"
    return None


def _not_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002


def read_bytes(data: bytes) -> tuple[Dataset | None, str | None]:
    """Read a DICOM file's bytes (PS3.10 section 7): the File Meta Information, then the
    structure check of the data set in its transfer syntax, then pydicom; ``(None, reason)``
    when it cannot be read at all."""
    fp = BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = read_dataset(fp, False, True, stop_when=_not_meta)
        start = fp.tell()
        ts = str(meta.get("TransferSyntaxUID") or "").strip("\0 ")
    except InvalidDicomError as exc:
        return None, f"not a DICOM file: {exc}"
    except Exception as exc:
        return None, f"cannot parse the File Meta Information: {type(exc).__name__}: {exc}"
    if not ts:
        return None, "the File Meta Information has no Transfer Syntax UID (PS3.10 section 7.1)"
    problem = structure_problem(data[start:], ts)
    if problem is not None:
        return None, problem
    try:
        return pydicom.dcmread(BytesIO(data)), None
    except Exception as exc:
        return None, f"cannot parse DICOM file: {type(exc).__name__}: {exc}"


def read_file(path: Path) -> tuple[Dataset | None, str | None]:
    """Read one DICOM file; return ``(None, reason)`` when it cannot be read at all."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"no such file: {path}"
    except IsADirectoryError:
        return None, f"is a directory: {path}"
    except PermissionError:
        return None, f"permission denied: {path}"
    except OSError as exc:
        return None, f"cannot read the file: {exc}"
    return read_bytes(data)


def decode_files(
    paths: Sequence[Path], decoder: Decoder, options: DecodeOptions, chunk: int = 512
) -> Iterator[tuple[DecodeRecord, bool]]:
    """Decode files in chunks, in order. Yields ``(record, readable)``."""
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        loaded = [(p, *read_file(p)) for p in part]
        triples = [(ds, str(p), err) for p, ds, err in loaded]
        try:
            records = decode_datasets(triples, decoder, options)
        except Exception:  # not expected (each file's failures are its record): one at a time
            records = [_decode_one(t, decoder, options) for t in triples]
        for (_, ds, _), record in zip(loaded, records, strict=True):
            yield record, ds is not None


def _decode_one(item: tuple[Dataset | None, str | None, str | None], decoder: Decoder,
                options: DecodeOptions) -> DecodeRecord:
    try:
        return decode_datasets([item], decoder, options)[0]
    except Exception as exc:
        return DecodeRecord(decision=DecisionKind.INVALID, reason_code=InvalidReason.DECODE_ERROR,
                            reason=f"the decoder failed: {type(exc).__name__}: {exc}",
                            model=decoder.info, path=item[1])
