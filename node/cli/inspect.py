"""``sro-decoder inspect FILE``: what a console sends, and what each profile would read of it
(docs/connecting-a-console.md).

Prints the object's identity (SOP class, Modality, Manufacturer, Station Name, Patient
Position, Content Date/Time), every registration of an SRO with its label and Transformation
Comment (docs/contract.md section 1), every private block (creator and elements, PS3.5 section
7.8.1), and, for each shipped offset profile, the registration it would decode and the offset it
would read (docs/contract.md section 5). Sender text is printed escaped (node/text.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydicom.dataset import Dataset

from model.dicom import sro
from model.errors import SROError
from model.inputs import DEFAULT_REGISTRY, CompanionInput, InvalidInput, RegistrationInput
from model.inputs.profiles import SHIPPED_PROFILES
from model.pipeline import read_file
from node.cli.common import UsageError
from node.text import bounded, visible

_IDENTITY = (("SOP Class UID", 0x00080016), ("SOP Instance UID", 0x00080018),
             ("Modality", 0x00080060), ("Manufacturer", 0x00080070),
             ("Manufacturer's Model Name", 0x00081090), ("Station Name", 0x00081010),
             ("Series Description", 0x0008103E), ("Patient Position", 0x00185100),
             ("Content Date", 0x00080023), ("Content Time", 0x00080033),
             ("Study Instance UID", 0x0020000D))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show an object's registrations, labels, private "
                       "blocks and what each profile would read")
    p.add_argument("path", metavar="FILE", type=Path, help="a DICOM file")
    p.set_defaults(func=run)


def _vector(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _show(value: object, limit: int = 72) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bytes | bytearray):
        head = bytes(value[:24])
        text = head.decode("latin-1") if head.isascii() else head.hex(" ")
        return f"{len(value)} bytes: {bounded(visible(text), limit)}"
    return bounded(visible(value), limit)


def _private_blocks(ds: Dataset, out: list[str], indent: str = "  ") -> None:
    tags = sorted(int(t) for t in ds.keys() if (int(t) >> 16) % 2 == 1)  # noqa: SIM118
    creators = {t: ds.get(t).value for t in tags if 0x10 <= (t & 0xFFFF) <= 0xFF}
    for tag, creator in creators.items():
        group, slot = tag >> 16, tag & 0xFF
        out.append(f"{indent}({group:04X},00{slot:02X}) creator {_show(creator)!r}")
        for t in tags:
            if t >> 16 == group and (t & 0xFFFF) >> 8 == slot:
                elem = ds.get(t)
                out.append(f"{indent}  ({group:04X},{t & 0xFFFF:04X}) xx{t & 0xFF:02X} "
                           f"{elem.VR} {_show(elem.value)}")


def _registrations(ds: Dataset, out: list[str]) -> None:
    try:
        seq = ds.RegistrationSequence
    except Exception as exc:
        out.append(f"  cannot read the Registration Sequence: {visible(exc)}")
        return
    own = str(ds.get("FrameOfReferenceUID", ""))
    for i, item in enumerate(seq, 1):
        frame = str(item.get("FrameOfReferenceUID", ""))
        role = "reference (the SRO's own frame)" if frame == own else "registered"
        out.append(f"  item {i}: {role}, frame {_show(frame)}")
        for k, mr in enumerate(item.get("MatrixRegistrationSequence", []), 1):
            label = sro._label(mr, sro.DEFAULT_LABEL_ELEMENT)
            comment = mr.get("FrameOfReferenceTransformationComment", None)
            matrices = mr.get("MatrixSequence", [])
            kinds = ",".join(str(m.get("FrameOfReferenceTransformationMatrixType", "?"))
                             for m in matrices)
            out.append(f"    matrix registration {k}: label {_show(label)}, comment "
                       f"{_show(comment)}, {len(matrices)} matrix(ces) {kinds}")
            _private_blocks(mr, out, "      ")


def describe(path: Path) -> str:
    """The report ``inspect`` prints for ``path``."""
    ds, error = read_file(path)
    if ds is None:
        raise UsageError(f"{path}: {error}")
    out = [f"{visible(path)}"]
    for name, tag in _IDENTITY:
        elem = ds.get(tag)
        if elem is not None:
            out.append(f"  {name}: {_show(elem.value)}")
    if sro.sop_class_uid_of(ds) == sro.SPATIAL_REGISTRATION_STORAGE:
        out.append("registrations:")
        _registrations(ds, out)
    out.append("private blocks:")
    _private_blocks(ds, out)
    out.append("what each profile reads:")
    for name, profile in SHIPPED_PROFILES.items():
        got = DEFAULT_REGISTRY.read(ds, profile)
        if isinstance(got, InvalidInput):
            out.append(f"  {name}: invalid ({got.reason.value}): {visible(got.message)}")
        elif isinstance(got, CompanionInput):
            o = got.offset
            out.append(f"  {name}: a companion ({got.source}), offset t={_vector(o.translation_mm)}"
                       f" mm, r={_vector(o.rotation_deg)} deg, alignment time "
                       f"{got.alignment_time}")
        elif isinstance(got, RegistrationInput):
            decoded = [c for c in got.registration.candidates if c.decoded]
            which = (f"{_show(decoded[0].label)!r}/{_show(decoded[0].comment)!r}"
                     if decoded else "?")
            if got.offset is None:
                offset = "no offset in its private elements"
                if profile.companion:
                    offset += " (a companion may supply it)"
            else:
                offset = (f"offset t={_vector(got.offset.translation_mm)} mm, "
                          f"r={_vector(got.offset.rotation_deg)} deg")
            out.append(f"  {name}: decodes registration {which}; {offset}")
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        sys.stdout.write(describe(args.path))
    except SROError as exc:  # not expected: the registry reports failures as InvalidInput
        raise UsageError(str(exc)) from exc
    return 0
