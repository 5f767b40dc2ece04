"""Synthetic data in the Elekta XVI layout: SRO-Standard files and their RPS companions
(docs/contract.md section 1; the XVI facts the project relies on are summarised there).

Each case of a :class:`model.training.synth.SynthSet` becomes

- ``sro_NNNNN.dcm``: a Spatial Registration with no offset of its own: the reference CT's frame
  with an identity matrix (label ``Identity``), then the CBCT's frame with Matrix Registration
  items labelled ``Correction`` (Transformation Comment ``Correction``), ``Align.Clip1``,
  ``Align.Mask1`` and, optionally, ``Align.Clip1.Frame0..N`` (comment ``4D Frame %d of %d``),
  as several items of one Registration Sequence item or as several items with the same frame
  (alternately: both are read the same way); Patient Position (0018,5100), Station Name,
  Manufacturer ``ELEKTA``, Content Date/Time (the approval time), one Study per patient;
- ``rps_NNNNN.dcm``: the RPS Raw Data Storage object, its ZIP in (0021,xx3A) of ``Elekta: zip
  file`` with ``<UID>.INI.XVI`` (cm, angles in [0, 360)), ``<UID>.INI`` and a mask file, its
  alignment time a few seconds after the SRO's.

Labelled corruptions (:class:`XviCorruption`): a companion from another fraction, a wrong
declared position, and a clip-box-only correction that differs from the mask registration (the
SRO's ``Correction`` and ``Align.Mask1`` are the mask's, its ``Align.Clip1`` the matrix the
companion's clip-box offset implies: the likely cause "another registration", docs/contract.md
section 7).
The registration labels are written in a private block whose creator is :data:`LABEL_CREATOR`
(XVI's own creator string for (0021,xx39) is not documented; readers accept any creator).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from model.conventions import HYPOTHESES, PatientPosition
from model.dicom import sro
from model.geometry import forward
from model.inputs.xvi_rps import RAW_DATA_STORAGE, RPS_CREATOR, ZIP_CREATOR
from model.training.synth import SynthSet

LABEL_CREATOR = "ELEKTA"
_BASE_TIME = dt.datetime(2024, 3, 4, 8, 0, 0)


class XviCorruption(str, Enum):
    """What goes wrong in the field with XVI exports (labelled in truth.jsonl)."""

    COMPANION_OTHER_FRACTION = "companion_other_fraction"  # the RPS carries another fraction
    WRONG_DECLARED_POSITION = "wrong_declared_position"  # Patient Position entered wrongly
    CLIP_BOX_ONLY = "clip_box_only"  # correction from the clip box, SRO's from the mask


@dataclass(frozen=True, slots=True)
class XviConfig:
    frames: int = 0  # 4D frames per SRO (0: none)
    corrupt_fraction: float = 0.0
    corruptions: tuple[XviCorruption, ...] = tuple(XviCorruption)
    seed: int = 0


def _ds_matrix(matrix: np.ndarray) -> list[str]:
    return sro._ds_values(np.asarray(matrix), 8)  # XVI writes about 8 significant digits


def _matrix_registration(matrix: np.ndarray, label: str, comment: str | None) -> Dataset:
    m_item = Dataset()
    m_item.FrameOfReferenceTransformationMatrix = _ds_matrix(matrix)
    m_item.FrameOfReferenceTransformationMatrixType = "RIGID"
    mr = Dataset()
    mr.MatrixSequence = DicomSequence([m_item])
    mr.RegistrationTypeCodeSequence = DicomSequence([])
    if comment is not None:
        mr.FrameOfReferenceTransformationComment = comment
    mr.private_block(0x0021, LABEL_CREATOR, create=True).add_new(0x39, "LO", label)
    return mr


def _rotation_about(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    out = np.eye(4)
    i, j = [k for k in range(3) if k != axis]
    out[i, i], out[i, j], out[j, i], out[j, j] = c, -s, s, c
    return out


def write_xvi_sro(matrix: np.ndarray, *, clip: np.ndarray, mask: np.ndarray, frames: int,
                  split_items: bool, patient_id: str, study_uid: str, ref_frame: str,
                  cbct_frame: str, position: str, when: dt.datetime,
                  station: str) -> Dataset:
    """One XVI-style SRO-Standard instance (module docstring)."""
    ds = sro.write(np.eye(4), None, patient_id=patient_id, patient_name=f"XVI^{patient_id}",
                   study_instance_uid=study_uid, frame_of_reference_uid=ref_frame,
                   content_datetime=when, station_name=station, matrix_digits=8)
    ds.Manufacturer = "ELEKTA"
    ds.ManufacturerModelName = "Elekta XVI"
    ds.SoftwareVersions = "5.0.6"
    ds.PatientPosition = position
    ds.ProtocolName = "Clipbox --> Mask"
    ds.SeriesDescription = (f"Elekta SRO : Clipbox --> Mask;{when:%Y%m%d};{when:%H%M%S}")
    reference = Dataset()
    reference.FrameOfReferenceUID = ref_frame
    reference.MatrixRegistrationSequence = DicomSequence(
        [_matrix_registration(np.eye(4), "Identity", None)])
    registered = [_matrix_registration(matrix, "Correction", "Correction"),
                  _matrix_registration(clip, "Align.Clip1", None),
                  _matrix_registration(mask, "Align.Mask1", None)]
    for k in range(frames):
        registered.append(_matrix_registration(
            clip @ _rotation_about(2, 0.05 * (k - frames / 2)), f"Align.Clip1.Frame{k}",
            f"4D Frame {k + 1} of {frames}"))
    items = [reference]
    if split_items:
        for mr in registered:
            item = Dataset()
            item.FrameOfReferenceUID = cbct_frame
            item.MatrixRegistrationSequence = DicomSequence([mr])
            items.append(item)
    else:
        item = Dataset()
        item.FrameOfReferenceUID = cbct_frame
        item.MatrixRegistrationSequence = DicomSequence(registered)
        items.append(item)
    ds.RegistrationSequence = DicomSequence(items)
    return ds


def _ini_values(t_mm: np.ndarray, r_deg: np.ndarray) -> str:
    """``lat, long, vert, rotation, pitch, roll``: cm, then degrees in [0, 360)."""
    cm = [f"{v / 10.0:.2f}" for v in t_mm]
    pitch, roll, rotation = (float(round(v % 360.0, 1)) % 360.0 for v in r_deg)
    return ", ".join([*cm, *(f"{v:.1f}" for v in (rotation, pitch, roll))])


def ini_xvi(uid: str, when: dt.datetime, *, correction: str | None, clip: str,
            mask: str) -> str:
    """The text of an ``.INI.XVI`` file as XVI writes it (module docstring)."""
    lines = [f"[ALIGNMENT.{when:%Y%m%d}; {when:%H:%M:%S}]", f"Align.clip1={clip}",
             f"Align.mask1={mask}"]
    if correction is not None:
        lines.append(f"Align.correction={correction}")
        lat, lon, vert = (float(v) for v in correction.split(",")[:3])
        lines += [f"CouchShiftLat={-lat:.2f}", f"CouchShiftLong={-lon:.2f}",
                  f"CouchShiftHeight={-vert:.2f}"]
    lines += ["CouchPitch=-", "CouchRoll=-", "CouchYaw=-", "IECAngleConvention=1",
              "IECLinearConvention=2", f"ReferenceUID={uid}"]
    return "\r\n".join(["[IDENTIFICATION]", f"UID={uid}", *lines]) + "\r\n"


def zip_members(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def write_rps(zip_bytes: bytes, *, patient_id: str, study_uid: str, when: dt.datetime,
              station: str, sop_uid: str | None = None) -> Dataset:
    """An RPS Raw Data Storage instance carrying ``zip_bytes`` (module docstring)."""
    uid = sop_uid or sro.new_uid()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RAW_DATA_STORAGE
    ds.SOPInstanceUID = uid
    ds.PatientName = f"XVI^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = f"{when:%Y%m%d}"
    ds.StudyTime = f"{when:%H%M%S}"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = "REG"
    ds.SeriesInstanceUID = sro.new_uid()
    ds.SeriesNumber = 2
    ds.SeriesDescription = "RPS"
    ds.Manufacturer = "ELEKTA"
    ds.ManufacturerModelName = "Elekta XVI"
    ds.StationName = station
    ds.InstanceNumber = 1
    ds.ContentDate = f"{when:%Y%m%d}"
    ds.ContentTime = f"{when:%H%M%S}"
    ds.private_block(0x0021, ZIP_CREATOR, create=True).add_new(0x3A, "UN", zip_bytes)
    ds.private_block(0x0021, RPS_CREATOR, create=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RAW_DATA_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(sro.IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = sro.IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds


def write_xvi_set(data: SynthSet, out_dir: Path, config: XviConfig = XviConfig()) -> Path:
    """Write one XVI SRO and one RPS companion per case and ``truth.jsonl``; returns the truth
    file's path. The companion carries the case's reported offset."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed + 7919)
    b = data.batch
    n = len(data)
    width = max(5, len(str(n)))
    study = {int(p): sro.new_uid() for p in np.unique(data.patient)}
    truth_path = out_dir / "truth.jsonl"
    with truth_path.open("w", encoding="utf-8") as fh:
        for j in range(n):
            pid = f"XVI{int(data.patient[j]):05d}"
            when = _BASE_TIME + dt.timedelta(days=int(data.session[j]) + j,
                                             minutes=int(rng.integers(0, 600)))
            aligned = when - dt.timedelta(seconds=int(rng.integers(5, 90)))
            station = f"XVI_LINAC{int(data.console[j]) + 1}"
            kind = None
            if data.corruption[j] is None and config.corruptions and \
                    rng.random() < config.corrupt_fraction:
                kind = config.corruptions[int(rng.integers(len(config.corruptions)))]
            matrix = b.matrix[j]
            t, r = b.translation_mm[j], b.rotation_deg[j]
            mask = clip = matrix
            position = data.true_position[j]
            correction: str | None = _ini_values(t, r)
            clip_text = correction
            if kind is XviCorruption.COMPANION_OTHER_FRACTION:
                other = (j + 1 + int(rng.integers(max(1, n - 1)))) % n if n > 1 else j
                shift = np.array([4.0, -3.0, 2.5]) if other == j else 0.0
                correction = clip_text = _ini_values(b.translation_mm[other] + shift,
                                                     b.rotation_deg[other] + 1.5)
            elif kind is XviCorruption.WRONG_DECLARED_POSITION:
                choices = [p.value for p in PatientPosition if p.value != position]
                position = choices[int(rng.integers(len(choices)))]
            elif kind is XviCorruption.CLIP_BOX_ONLY:
                # XVI gave only the clip-box result (the companion's Align.clip1); the SRO's
                # Correction is the mask's, and its Align.Clip1 the matrix the clip-box offset
                # implies under the true convention (about the isocenter when known)
                shift_t, shift_r = np.array([3.0, -2.0, 4.0]), np.array([1.0, -1.2, 0.8])
                clip_text = _ini_values(t + shift_t, r + shift_r)
                correction = None
                clip = forward(data.true_translation_mm[j:j + 1] + shift_t,
                               data.true_rotation_deg[j:j + 1] + shift_r,
                               b.isocenter_mm[j:j + 1])[0, int(data.truth[j])]
            ds = write_xvi_sro(matrix, clip=clip, mask=mask, frames=config.frames,
                               split_items=bool(j % 2), patient_id=pid,
                               study_uid=study[int(data.patient[j])], ref_frame=sro.new_uid(),
                               cbct_frame=sro.new_uid(), position=position, when=when,
                               station=station)
            sro_name = f"sro_{j:0{width}d}.dcm"
            ds.save_as(out_dir / sro_name, enforce_file_format=True)
            rps_uid = sro.new_uid()
            ini = ini_xvi(rps_uid, aligned, correction=correction, clip=clip_text or "",
                          mask=_ini_values(t, r))
            archive = zip_members({f"{rps_uid}.INI.XVI": ini.encode("latin-1"),
                                   f"{rps_uid}.INI": b"[XVI]\r\nVersion=5.0.6\r\n",
                                   f"{rps_uid}.MASK": bytes(64)})
            rps = write_rps(archive, patient_id=pid, study_uid=study[int(data.patient[j])],
                            when=aligned, station=station, sop_uid=rps_uid)
            rps_name = f"rps_{j:0{width}d}.dcm"
            rps.save_as(out_dir / rps_name, enforce_file_format=True)
            base_kind = data.corruption[j]
            record = {
                "file": sro_name, "companion_file": rps_name,
                "sop_instance_uid": str(ds.SOPInstanceUID), "companion_sop_instance_uid": rps_uid,
                "convention": None if data.truth[j] < 0 else HYPOTHESES[int(data.truth[j])]
                .as_dict(),
                "patient_position": data.true_position[j], "declared_patient_position": position,
                "offset": {"translation_mm": [float(v) for v in t],
                           "rotation_deg": [float(v) for v in r]},
                "patient_id": pid, "session": int(data.session[j]), "console": station,
                "corruption": (kind.value if kind is not None
                               else None if base_kind is None else base_kind.value),
                "layout": "xvi", "frames": config.frames,
            }
            fh.write(json.dumps(record) + "\n")
    (out_dir / "synth_config.json").write_text(json.dumps(
        {**data.config.as_dict(), "layout": "xvi", "frames": config.frames,
         "xvi_corrupt_fraction": config.corrupt_fraction}, indent=2))
    return truth_path
