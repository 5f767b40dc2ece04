"""Valid SROs in every transfer syntax the node accepts, and byte-level mutants of them.

Shared by the fuzzing tests (``tests/fuzz``) and the longer run of ``bench/fuzz_inputs.py``.
Each mutant carries a label set by construction, independent of the reader under test:
``damaged`` (the structure is broken, PS3.5 section 7: it must never be decoded), ``valid``
(the structure is intact: the completeness check must accept it) or ``unknown``.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from model.dicom.sro import SPATIAL_REGISTRATION_STORAGE, write
from model.offset import CouchOffset
from model.training.synth import SynthConfig, generate

#: the transfer syntaxes the node accepts (node/service.py), Explicit VR Little Endian first
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                     DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
#: tags whose values are the sequences an SRO is read from (PS3.3 C.20.2)
SRO_SEQUENCES = frozenset({0x00700308, 0x00700309, 0x0070030A})
LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
            b"UV")
SHORT_VRS = (b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
             b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US")
UNDEFINED = 0xFFFFFFFF
#: the walker's nesting limit is 32; these depths are past it
DEEP = (33, 64, 500, 5000)


def flags(ts: str) -> tuple[bool, bool, bool]:
    """``(implicit, little, deflated)`` of a transfer syntax."""
    uid = UID(ts)
    return uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated


def encode(ds: Dataset, ts: str) -> bytes:
    """The data set's bytes in ``ts``, before any deflation."""
    implicit, little, _ = flags(ts)
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


def deflate(body: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(body) + comp.flush()


def part10(body: bytes, ts: str, sop_instance_uid: str = "1.2.3.4") -> bytes:
    """A Part 10 file (PS3.10 section 7): preamble, File Meta Information, ``body``
    (deflated here for the deflated transfer syntax)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SPATIAL_REGISTRATION_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1433.1")
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = False, True
    write_file_meta_info(fp, meta, enforce_standard=True)
    data = deflate(body) if flags(ts)[2] else body
    return b"\0" * 128 + b"DICM" + fp.getvalue() + data


def base_datasets(n: int = 6, seed: int = 11) -> list[Dataset]:
    """Valid synthetic SROs (model.training.synth + model.dicom.sro.write); every other one with
    undefined
    lengths in its nested sequences and items (PS3.5 section 7.5.2)."""
    data = generate(SynthConfig(n=n, seed=seed, isocenter_fraction=0.5, corrupt_fraction=0.3))
    b = data.batch
    out = []
    for k in range(len(data)):
        iso = tuple(float(v) for v in b.isocenter_mm[k]) if b.has_isocenter[k] else None
        offset = CouchOffset(tuple(float(v) for v in b.translation_mm[k]),  # type: ignore[arg-type]
                             tuple(float(v) for v in b.rotation_deg[k]),  # type: ignore[arg-type]
                             iso, "CONSOLE1")  # type: ignore[arg-type]
        ds = write(b.matrix[k], offset, matrix_digits=int(data.matrix_digits[k]))
        if k % 2:
            for item in ds.RegistrationSequence:
                item.is_undefined_length_sequence_item = True
                item["MatrixRegistrationSequence"].is_undefined_length = True
                for mr in item.MatrixRegistrationSequence:
                    mr.is_undefined_length_sequence_item = True
                    mr["MatrixSequence"].is_undefined_length = True
        out.append(ds)
    return out


@dataclass(frozen=True, slots=True)
class Header:
    """One element, item or delimiter of a valid encoded data set."""

    pos: int
    tag: int
    vr: bytes | None  # None: Implicit VR, or an item / delimiter
    length_pos: int
    length_size: int
    length: int
    value_pos: int
    depth: int  # sequences around it
    containers: tuple[tuple[int, int], ...]  # (length_pos, length_size) of defined lengths around
    sequence: bool = False
    kind: str = "element"  # element | item | delimiter


def headers(body: bytes, implicit: bool, little: bool) -> list[Header]:
    """Every header of a *valid* data set, in order (written for inputs this module made)."""
    e = "<" if little else ">"
    out: list[Header] = []
    # stack of (end or None, containers, depth, is_items)
    stack: list[tuple[int | None, tuple[tuple[int, int], ...], int, bool]] = [
        (len(body), (), 0, False)]
    pos = 0
    while stack:
        end, containers, depth, _ = stack[-1]
        if end is not None and pos >= end:
            stack.pop()
            continue
        group, elem = struct.unpack_from(e + "HH", body, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:
            (length,) = struct.unpack_from(e + "I", body, pos + 4)
            if tag == 0xFFFEE000:
                out.append(Header(pos, tag, None, pos + 4, 4, length, pos + 8, depth,
                                  containers, kind="item"))
                inner = containers if length == UNDEFINED else (*containers, (pos + 4, 4))
                stack.append((None if length == UNDEFINED else pos + 8 + length, inner, depth,
                              False))
            else:
                out.append(Header(pos, tag, None, pos + 4, 4, length, pos + 8, depth,
                                  containers, kind="delimiter"))
                stack.pop()
            pos += 8
            continue
        if implicit:
            vr = None
            (length,) = struct.unpack_from(e + "I", body, pos + 4)
            lpos, lsize, vpos = pos + 4, 4, pos + 8
            entry = DicomDictionary.get(tag)
            is_sq = length == UNDEFINED or (entry is not None and entry[0] == "SQ")
        else:
            vr = body[pos + 4:pos + 6]
            if vr in LONG_VRS:
                (length,) = struct.unpack_from(e + "I", body, pos + 8)
                lpos, lsize, vpos = pos + 8, 4, pos + 12
            else:
                (length,) = struct.unpack_from(e + "H", body, pos + 6)
                lpos, lsize, vpos = pos + 6, 2, pos + 8
            is_sq = vr == b"SQ"
        out.append(Header(pos, tag, vr, lpos, lsize, length, vpos, depth, containers, is_sq))
        if is_sq:
            inner = containers if length == UNDEFINED else (*containers, (lpos, lsize))
            stack.append((None if length == UNDEFINED else vpos + length, inner, depth + 1, True))
            pos = vpos
        else:
            pos = vpos + length
    return out


def top_level_boundaries(hs: list[Header], size: int) -> set[int]:
    return {h.pos for h in hs if h.depth == 0 and h.kind == "element"} | {size}


def nested_sequences(depth: int, implicit: bool, little: bool, *, closed: bool = True,
                     tag: int = 0x00091010) -> bytes:
    """An element holding ``depth`` undefined-length sequences, one inside the other, each in an
    undefined-length item (PS3.5 section 7.5.2); ``closed=False`` leaves out the delimiters."""
    e = "<" if little else ">"
    head = struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    head += struct.pack(e + "I", UNDEFINED) if implicit else b"SQ\0\0" + struct.pack(
        e + "I", UNDEFINED)
    item = struct.pack(e + "HHI", 0xFFFE, 0xE000, UNDEFINED)
    item_end = struct.pack(e + "HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack(e + "HHI", 0xFFFE, 0xE0DD, 0)
    opening = (head + item) * depth
    closing = (item_end + seq_end) * depth if closed else b""
    return opening + closing


def _put_length(data: bytearray, pos: int, size: int, value: int, little: bool) -> None:
    e = "<" if little else ">"
    struct.pack_into(e + ("I" if size == 4 else "H"), data, pos, value)


def _grow_containers(data: bytearray, h: Header, extra: int, little: bool) -> None:
    e = "<" if little else ">"
    for lpos, lsize in h.containers:
        fmt = e + ("I" if lsize == 4 else "H")
        (old,) = struct.unpack_from(fmt, data, lpos)
        struct.pack_into(fmt, data, lpos, old + extra)


@dataclass(frozen=True, slots=True)
class Mutant:
    body: bytes  # the data set's bytes, not deflated
    label: str  # damaged | valid | unknown
    kind: str
    detail: str
    raw_stream: bytes | None = field(default=None)  # deflated: the stream as sent, if mutated


def _flip(rng: random.Random, body: bytes, hs: list[Header], implicit: bool,
          little: bool) -> Mutant:
    data = bytearray(body)
    n = rng.choice((1, 1, 2, 4, 8))
    where = []
    for _ in range(n):
        at = rng.randrange(len(data))
        data[at] ^= rng.randrange(1, 256)
        where.append(at)
    return Mutant(bytes(data), "unknown", "flip", f"bytes {where}")


def _truncate(rng: random.Random, body: bytes, hs: list[Header], implicit: bool,
              little: bool) -> Mutant:
    cut = rng.randrange(1, len(body))
    label = "unknown" if cut in top_level_boundaries(hs, len(body)) else "damaged"
    return Mutant(body[:cut], label, "truncate", f"at {cut} of {len(body)}")


def _change_vr(rng: random.Random, body: bytes, hs: list[Header], implicit: bool,
               little: bool) -> Mutant:
    if implicit:  # there are no VRs on the wire: change a length instead
        return _change_length(rng, body, hs, implicit, little)
    elements = [h for h in hs if h.vr is not None]
    sro = [h for h in elements if h.tag in SRO_SEQUENCES]
    h = rng.choice(sro) if sro and rng.random() < 0.5 else rng.choice(elements)
    roll = rng.random()
    if h.sequence and roll < 0.6:
        new = rng.choice((b"OB", b"OW", b"UT", b"UC"))  # same header size: still parseable
    elif roll < 0.8:
        new = rng.choice(LONG_VRS + SHORT_VRS)
    else:
        new = bytes(rng.choice((b"ZZ", b"\0\1", b"ob", b"Q ", b"XX")))
    data = bytearray(body)
    data[h.pos + 4:h.pos + 6] = new
    if new == h.vr:
        label = "valid"
    elif new in (b"ZZ", b"\0\1", b"ob", b"Q ", b"XX"):
        label = "damaged"  # not a VR of PS3.5 Table 6.2-1
    elif h.tag in SRO_SEQUENCES and new in (b"OB", b"OW", b"UT", b"UC"):
        label = "damaged"  # the sequence the SRO is read from is gone (issue 9, defect 2)
    else:
        label = "unknown"
    return Mutant(bytes(data), label, "vr", f"({h.tag >> 16:04X},{h.tag & 0xFFFF:04X}) "
                  f"{h.vr!r} -> {new!r}")


def _change_length(rng: random.Random, body: bytes, hs: list[Header], implicit: bool,
                   little: bool) -> Mutant:
    h = rng.choice(hs)
    data = bytearray(body)
    limit = 0xFFFF if h.length_size == 2 else 0xFFFFFFFF
    choice = rng.random()
    if choice < 0.3:
        new = (h.length + rng.choice((-2, -1, 1, 2, 4))) & limit
    elif choice < 0.5:
        new = rng.choice((0, limit, limit - 1, 0x7FFFFFFF & limit))
    else:
        new = rng.randrange(limit + 1)
    _put_length(data, h.length_pos, h.length_size, new, little)
    label = "unknown"
    if h.depth == 0 and h.kind == "element" and h.length != UNDEFINED and new != UNDEFINED \
            and h.value_pos + new > len(body):
        label = "damaged"  # the value runs past the end of the data set
    if new == h.length:
        label = "valid"
    return Mutant(bytes(data), label, "length", f"({h.tag >> 16:04X},{h.tag & 0xFFFF:04X}) at "
                  f"{h.pos}: {h.length} -> {new}")


def _nest(rng: random.Random, body: bytes, hs: list[Header], implicit: bool,
          little: bool) -> Mutant:
    at = rng.choice(sorted(top_level_boundaries(hs, len(body))))
    roll = rng.random()
    if roll < 0.5:
        depth, closed, label = rng.choice(DEEP), True, "damaged"  # past the nesting limit
    elif roll < 0.75:
        depth, closed, label = rng.randrange(1, 30), True, "valid"
    else:
        depth, closed, label = rng.randrange(1, 600), False, "damaged"  # delimiters missing
    if not closed:
        at = len(body)  # a cut-off nest is only detectable at the end of the data set
    block = nested_sequences(depth, implicit, little, closed=closed)
    return Mutant(body[:at] + block + body[at:], label, "nest",
                  f"{depth} levels at {at}{'' if closed else ', no delimiters'}")


def _insert_item(rng: random.Random, body: bytes, hs: list[Header], implicit: bool,
                 little: bool) -> Mutant:
    items = [h for h in hs if h.kind == "item"]
    h = rng.choice(items)
    # the item's bytes: from its header to its end
    if h.length != UNDEFINED:
        stop = h.value_pos + h.length
    else:
        later = [x for x in hs if x.pos > h.pos and x.kind == "delimiter" and x.depth == h.depth
                 and x.tag == 0xFFFEE00D]
        stop = later[0].pos + 8
    copy = body[h.pos:stop]
    data = bytearray(body)
    if rng.random() < 0.6:  # a well-formed extra item: every enclosing length grows with it
        _grow_containers(data, h, len(copy), little)
        label = "valid"
    else:
        label = "unknown" if not h.containers else "damaged_if_defined"
    data[h.pos:h.pos] = copy
    if label == "damaged_if_defined":
        label = "unknown"
    return Mutant(bytes(data), label, "insert_item", f"item at {h.pos} ({len(copy)} bytes)")


MUTATORS: dict[str, Callable[[random.Random, bytes, list[Header], bool, bool], Mutant]] = {
    "flip": _flip, "truncate": _truncate, "vr": _change_vr, "length": _change_length,
    "nest": _nest, "insert_item": _insert_item,
}


def mutate(rng: random.Random, body: bytes, ts: str, kind: str | None = None) -> Mutant:
    """One mutant of a valid data set ``body`` encoded in ``ts``."""
    implicit, little, deflated = flags(ts)
    if deflated and kind is None and rng.random() < 0.1:  # damage the compressed stream itself
        stream = bytearray(deflate(body))
        if rng.random() < 0.5:
            stream = stream[: rng.randrange(1, len(stream))]
        else:
            stream[rng.randrange(len(stream))] ^= rng.randrange(1, 256)
        return Mutant(body, "unknown", "deflate_stream", "compressed bytes", bytes(stream))
    hs = headers(body, implicit, little)
    chosen = kind or rng.choice(tuple(MUTATORS))
    return MUTATORS[chosen](rng, body, hs, implicit, little)


def mutant_file(m: Mutant, ts: str) -> bytes:
    """The Part 10 file of a mutant."""
    if m.raw_stream is not None:
        meta_and_preamble = part10(b"", ts)[: -len(deflate(b""))]
        return meta_and_preamble + m.raw_stream
    return part10(m.body, ts)


def wire_bytes(m: Mutant, ts: str) -> bytes:
    """The data set as a C-STORE carries it (deflated for the deflated transfer syntax)."""
    if m.raw_stream is not None:
        return m.raw_stream
    return deflate(m.body) if flags(ts)[2] else m.body


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the raw-bytes paths made of one mutant (``examine``)."""

    decision: str | None  # None: an exception escaped
    reason_code: str | None
    escaped: str | None  # an exception that escaped the check, the reader or the pipeline
    disagreement: str | None  # the fast path and pydicom read it differently
    damaged_decoded: bool  # labelled damaged, yet given a decision other than invalid
    seconds: float


def _read_outcome(ds: Dataset) -> tuple[object, ...]:
    from model.errors import SROError
    from model.inputs import PRIVATE_BLOCK
    from model.inputs.profiles import DEFAULT_PROFILE

    try:
        read = PRIVATE_BLOCK.read(ds, DEFAULT_PROFILE)
        reg = read.registration
    except SROError as exc:
        return ("invalid", exc.code.value, exc.message)
    except Exception as exc:  # what the pipeline records as unreadable
        return ("error", type(exc).__name__)
    return ("ok", reg.effective_matrix, read.offset, reg.sop_instance_uid,
            reg.registered_frame_of_reference_uid, reg.warnings)


def examine(m: Mutant, ts: str, decoder: object) -> Outcome:
    """Run one mutant through the structure check, both readers and the decode pipeline."""
    import time
    from io import BytesIO

    import pydicom

    from model.dicom.structure import StructureError, check_structure
    from model.pipeline import DecodeOptions, decode_datasets, read_bytes

    start = time.perf_counter()
    escaped = disagreement = None
    decision = code = None
    implicit, little, deflated = flags(ts)
    try:
        check_structure(wire_bytes(m, ts), implicit=implicit, little=little, deflated=deflated)
    except StructureError:
        pass
    except Exception as exc:
        escaped = f"check_structure: {type(exc).__name__}: {exc}"
    data = mutant_file(m, ts)
    try:
        ds, error = read_bytes(data)
        record = decode_datasets([(ds, None, error)], decoder, DecodeOptions())[0]  # type: ignore[arg-type]
        decision, code = record.decision.value, record.reason_code
        if ds is not None:
            fast = _read_outcome(ds)
            slow_ds = pydicom.dcmread(BytesIO(data))
            try:
                _ = slow_ds.get("RegistrationSequence")  # converted by pydicom: its reader
            except Exception as exc:
                slow: tuple[object, ...] = ("error", type(exc).__name__)
            else:
                slow = _read_outcome(slow_ds)
            if fast != slow and not (fast[0] == "error" and slow[0] == "error"):
                disagreement = f"fast {fast[:3]!r} vs pydicom {slow[:3]!r}"
    except Exception as exc:
        escaped = f"pipeline: {type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    damaged_decoded = m.label == "damaged" and decision not in (None, "invalid")
    return Outcome(decision, code, escaped, disagreement, damaged_decoded, seconds)
