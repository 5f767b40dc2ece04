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

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import UID

from model.batch import DecodeInput, InputBatch
from model.consoles.causes import OtherRegistration, likely_causes
from model.conventions import HYPOTHESES, N_HYPOTHESES, PatientPosition
from model.decision import (
    Check,
    CheckName,
    CheckResult,
    DecisionKind,
    DecisionPolicy,
    DecodeRecord,
    OffsetSource,
    OffsetSourceKind,
    decide,
    invalid_record,
    no_offset_record,
    offset_only_record,
)
from model.decoder import Decoder
from model.dicom.sro import SpatialRegistration, sop_instance_uid_of
from model.dicom.structure import StructureError, check_structure
from model.errors import InvalidReason
from model.inputs import (
    DEFAULT_REGISTRY,
    AdapterRegistry,
    CompanionInput,
    InvalidInput,
    RegistrationInput,
)
from model.inputs.pairing import Pairing, PairingState, pair
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


def _own_offset(read: RegistrationInput, options: DecodeOptions
                ) -> tuple[CouchOffset | None, OffsetSource | None]:
    """The first of the SRO's own offset sources that holds one (docs/contract.md section 1):
    the override, then its private elements."""
    if options.offset_override is not None:
        offset, source = options.offset_override, OffsetSource(OffsetSourceKind.OVERRIDE)
    elif read.offset is not None:
        offset = read.offset
        source = OffsetSource(OffsetSourceKind.PRIVATE_ELEMENTS, profile=options.profile.name)
    else:
        return None, None
    if options.isocenter_override is not None:
        offset = dataclasses.replace(offset, isocenter_mm=options.isocenter_override)
    return offset, source


def _pairing_check(pairing: Pairing) -> Check:
    return Check(CheckName.PAIRING, CheckResult.AMBIGUOUS, pairing.sentence, {
        "candidates": [k.sop_instance_uid for k in pairing.candidates],
        "competitors": [k.sop_instance_uid for k in pairing.competitors]})


@dataclass(frozen=True, slots=True)
class _Ready:
    """An SRO ready to decode, with its offset, where it came from, and its pairing."""

    read: RegistrationInput
    offset: CouchOffset
    source: OffsetSource
    paired: str | None
    checks: tuple[Check, ...]


def _sro_extras(reg: SpatialRegistration) -> dict[str, object]:
    return {"candidates": reg.candidates,
            "declared_patient_position": reg.declared_patient_position}


def decode_datasets(
    datasets: Sequence[tuple[Dataset | None, str | None, str | None]],
    decoder: Decoder,
    options: DecodeOptions,
) -> list[DecodeRecord]:
    """Decode ``(dataset or None, path, error text)`` triples in one batch, keeping their order.

    A ``None`` dataset is a file that could not be read; its error text becomes the reason.
    SROs and companion objects given together are paired (:func:`model.inputs.pairing.pair`,
    docs/contract.md section 1) when the profile uses companions: a paired SRO without an offset
    of its own is decoded with its companion's (``offset_source`` names the companion), the
    companion's record is ``offset_only`` and names its SRO; an ambiguous pairing adds a
    flagged ``pairing`` check to each object involved and pairs nothing. To decode an SRO with
    a companion received earlier, give both data sets.
    """
    out: list[DecodeRecord | None] = [None] * len(datasets)
    reads: dict[int, RegistrationInput | CompanionInput] = {}
    for i, (ds, path, error) in enumerate(datasets):
        if ds is None:
            out[i] = invalid_record(
                decoder.info, InvalidReason.UNREADABLE, error or "unreadable", path=path
            )
            continue
        try:
            read = options.adapters.read(ds, options.profile)
        except Exception as exc:  # not expected: the registry turns failures into InvalidInput
            read = InvalidInput(InvalidReason.UNREADABLE,
                                f"the dataset cannot be understood: {type(exc).__name__}: {exc}",
                                sop_instance_uid_of(ds))
        if isinstance(read, InvalidInput):
            out[i] = invalid_record(decoder.info, read.reason, read.message, path=path,
                                    sop_instance_uid=read.sop_instance_uid)
        else:
            reads[i] = read
    companions = {i: r for i, r in reads.items() if isinstance(r, CompanionInput)}
    sros = {i: r for i, r in reads.items() if isinstance(r, RegistrationInput)}
    pairings = None
    if companions and options.profile.companion:
        pairings = pair([c.key for c in companions.values()], [r.key for r in sros.values()],
                        options.profile.pair_window_s)
    by_uid = {c.sop_instance_uid: c for c in companions.values()}
    for i, comp in companions.items():
        found = None if pairings is None else pairings.by_companion[comp.sop_instance_uid]
        paired = found.sro.sop_instance_uid if found is not None and found.sro is not None \
            and found.state is PairingState.PAIRED else None
        flags = (_pairing_check(found),) if found is not None and found.flagged else ()
        out[i] = offset_only_record(
            decoder.info, comp.offset, path=datasets[i][1], sop_instance_uid=comp.sop_instance_uid,
            paired_sop_instance_uid=paired, precision=options.profile.precision, checks=flags,
            warnings=comp.warnings, profile=options.profile.name)
    # SROs that a companion found equally near to another SRO: flagged too
    tied: dict[str, list[Pairing]] = {}
    for found in (pairings.by_companion.values() if pairings is not None else ()):
        if found.state is PairingState.AMBIGUOUS and not found.competitors:
            for key in found.candidates:
                tied.setdefault(key.sop_instance_uid, []).append(found)
    todo: list[tuple[int, _Ready]] = []
    for i, read in sros.items():
        reg = read.registration
        offset, source = _own_offset(read, options)
        checks: list[Check] = [_pairing_check(f) for f in tied.get(reg.sop_instance_uid, ())]
        paired = None
        found = None if pairings is None else pairings.by_sro.get(reg.sop_instance_uid)
        if found is not None and found.flagged:
            checks.append(_pairing_check(found))
        elif found is not None and found.companion is not None:
            paired = found.companion.sop_instance_uid
            if offset is None:
                offset = by_uid[paired].offset
                if options.isocenter_override is not None:
                    offset = dataclasses.replace(offset,
                                                 isocenter_mm=options.isocenter_override)
                source = OffsetSource(OffsetSourceKind.COMPANION, paired, options.profile.name)
        if offset is None:
            out[i] = dataclasses.replace(
                no_offset_record(decoder.info, reg.matrix, path=datasets[i][1],
                                 sop_instance_uid=reg.sop_instance_uid, warnings=reg.warnings),
                checks=tuple(checks), **_sro_extras(reg))  # type: ignore[arg-type]
            continue
        assert source is not None
        todo.append((i, _Ready(read, offset, source, paired, tuple(checks))))
    for start in range(0, len(todo), DECODE_CHUNK):
        part = todo[start:start + DECODE_CHUNK]
        try:
            decided = _decide(part, decoder, options)
        except Exception:  # one input the decoder fails on: find it, decode the others
            decided = []
            for one in part:
                try:
                    decided.extend(_decide([one], decoder, options))
                except Exception as exc:
                    decided.append(DecodeRecord(
                        decision=DecisionKind.INVALID, reason_code=InvalidReason.DECODE_ERROR,
                        reason=f"the decoder failed: {type(exc).__name__}: {exc}",
                        model=decoder.info))
        for (i, ready), record in zip(part, decided, strict=True):
            reg = ready.read.registration
            position = declared_position_check(record, reg.declared_patient_position)
            done = ready.checks if position is None else (position, *ready.checks)
            out[i] = dataclasses.replace(
                record,
                path=datasets[i][1],
                sop_instance_uid=reg.sop_instance_uid,
                warnings=reg.warnings,
                offset_source=ready.source if record.offset is not None else None,
                paired_sop_instance_uid=ready.paired,
                checks=(*record.checks, *done),
                **_sro_extras(reg),  # type: ignore[arg-type]
            )
    return [r for r in out if r is not None]


def declared_position_check(record: DecodeRecord, declared: str | None) -> Check | None:
    """The ``declared_position`` check (docs/contract.md section 4) of a decoded record: failed
    when the SRO declares one of the eight patient positions and no hypothesis of the credible
    set (the decoded convention and its alternatives) has it. Never restricts the decision.
    ``None`` when nothing is declared or nothing was decoded (``invalid``, ``no_offset``,
    ``out_of_distribution``: no convention explains the data)."""
    if declared is None or record.convention is None or \
            record.decision is DecisionKind.OUT_OF_DISTRIBUTION:
        return None
    try:
        position = PatientPosition(declared.upper())
    except ValueError:
        return Check(CheckName.DECLARED_POSITION, CheckResult.NOT_CHECKED,
                     f"the declared Patient Position {declared[:16]!r} is none of the eight "
                     "defined terms (PS3.3 C.7.3.1.1.2)", {"declared": declared[:16]})
    found = sorted({record.convention.patient_position.value,
                    *(a.convention.patient_position.value for a in record.alternatives)})
    details = {"declared": position.value, "decoded": found}
    if position.value in found:
        return Check(CheckName.DECLARED_POSITION, CheckResult.PASSED,
                     f"the decoded convention fits the declared position {position.value}",
                     details)
    return Check(CheckName.DECLARED_POSITION, CheckResult.FAILED,
                 f"the SRO declares {position.value} but the offset fits "
                 f"{' or '.join(found)}: a console that ignores the patient position, or a "
                 "wrong position entered at the console", details)


def _decide(todo: list[tuple[int, _Ready]], decoder: Decoder,
            options: DecodeOptions) -> list[DecodeRecord]:
    precision = options.profile.precision
    inputs = [
        DecodeInput(r.read.registration.matrix, r.offset, precision,
                    r.read.registration.orthonormality_error, options.policy.isocenter_bound_mm)
        for _, r in todo
    ]
    batch = InputBatch.from_inputs(inputs)
    records = decide(
        batch,
        decoder.decode(batch),
        decoder.info,
        options.policy,
        precisions=[precision] * len(todo),
        offsets=[x.offset for x in inputs],
    )
    return with_likely_causes(batch, records, [r.read.registration for _, r in todo])


_POSITIONS = {p.value for p in PatientPosition}


def other_registrations(reg: SpatialRegistration) -> tuple[OtherRegistration, ...]:
    """The registrations of ``reg``'s SRO that were not decoded, with their effective matrices
    (docs/contract.md section 1; those failing a check are left out)."""
    return tuple(OtherRegistration(c, np.array(m, dtype=np.float64))
                 for c, m in zip(reg.candidates, reg.candidate_matrices, strict=False)
                 if not c.decoded and m is not None)


def with_likely_causes(batch: InputBatch, records: list[DecodeRecord],
                       registrations: Sequence[SpatialRegistration] | None = None,
                       ) -> list[DecodeRecord]:
    """Each ``out_of_distribution`` record with its likely causes (docs/contract.md section 7),
    all of them tried in one batch; ``registrations`` (one per record) give the declared
    patient position and the matrices of the registrations not decoded."""
    ood = [i for i, r in enumerate(records) if r.decision is DecisionKind.OUT_OF_DISTRIBUTION]
    if not ood:
        return records
    expected = np.ones((len(ood), N_HYPOTHESES), dtype=bool)
    for row, i in enumerate(ood):
        declared = records[i].declared_patient_position if registrations is None \
            else registrations[i].declared_patient_position
        if declared is not None and declared.upper() in _POSITIONS:
            expected[row] = [h.patient_position.value == declared.upper() for h in HYPOTHESES]
    others = None if registrations is None else [other_registrations(registrations[i])
                                                 for i in ood]
    causes = likely_causes(batch.subset(np.array(ood, dtype=np.int64)), expected=expected,
                           others=others)
    out = list(records)
    for i, found in zip(ood, causes, strict=True):
        out[i] = dataclasses.replace(out[i], likely_causes=found)
    return out


def decode_dataset(ds: Dataset, decoder: Decoder, options: DecodeOptions) -> DecodeRecord:
    """Decode one received dataset (the node's path)."""
    return decode_datasets([(ds, None, None)], decoder, options)[0]


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders give their ``.dcm`` files sorted by name (docs/contract.md
    section 5)."""
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


#: how many inputs the decoder is given at once
DECODE_CHUNK = 512


def decode_files(
    paths: Sequence[Path], decoder: Decoder, options: DecodeOptions, chunk: int | None = None
) -> Iterator[tuple[DecodeRecord, bool]]:
    """Decode files in order. Yields ``(record, readable)``. With ``chunk`` (files read and
    paired at a time) of ``None``, all of them: SROs and companions anywhere in ``paths`` pair
    (docs/contract.md section 5); the decoder still takes :data:`DECODE_CHUNK` at a time."""
    size = max(1, len(paths)) if chunk is None else chunk
    for start in range(0, len(paths), size):
        part = paths[start : start + size]
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
