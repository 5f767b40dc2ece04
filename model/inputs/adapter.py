"""The one seam for inputs: input adapters and the registry that dispatches to them.

An input adapter is one kind of input the node accepts (docs/contract.md sections 1.7 to 1.9):
an SRO layout with its offset in a private block, a vendor's own layout, a companion object that
carries the offset for an SRO. It declares the SOP classes it accepts (PS3.4 Annex B; the node's
presentation contexts are derived from them, PS3.8 section 9.3.2.2), recognises a data set, and
reads it into what the decoder needs, or fails a check with an :class:`SROError`.

:class:`AdapterRegistry` is what ``sro-decoder decode``, the C-STORE handler and start-up
reconciliation read every data set through (:mod:`model.pipeline`): the first registered adapter
that accepts the data set's SOP class and recognises it reads it; every failure becomes an
:class:`InvalidInput` with its reason code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydicom.dataset import Dataset
from pydicom.uid import UID

from model.dicom.sro import SpatialRegistration, sop_class_uid_of, sop_instance_uid_of
from model.errors import InvalidReason, SROError
from model.inputs.pairing import PairingKey
from model.inputs.profiles import OffsetProfile
from model.offset import CouchOffset


@dataclass(frozen=True, slots=True)
class RegistrationInput:
    """An SRO's registration and the couch offset found for it in the same data set
    (docs/contract.md section 1.7 item 2); ``offset`` of ``None``: none there (``no_offset``
    unless an override supplies one)."""

    registration: SpatialRegistration
    offset: CouchOffset | None

    @property
    def sop_instance_uid(self) -> str:
        return self.registration.sop_instance_uid

    @property
    def key(self) -> PairingKey:
        """This SRO as :func:`model.inputs.pairing.pair` takes it (its Content Date/Time)."""
        reg = self.registration
        return PairingKey(reg.sop_instance_uid, reg.patient_id, reg.study_instance_uid,
                          reg.content_datetime)


@dataclass(frozen=True, slots=True)
class InvalidInput:
    """A data set no adapter can read, with the code of the failed check (docs/contract.md
    section 1.4) and a sentence for people."""

    reason: InvalidReason
    message: str
    sop_instance_uid: str | None


@dataclass(frozen=True, slots=True)
class CompanionInput:
    """A companion object: the couch offset it carries for an SRO it does not contain
    (docs/contract.md section 1, "offset sources" item 3: the Elekta XVI RPS export), and what
    pairs it with that SRO (:mod:`model.inputs.pairing`).

    ``offset`` is already converted (mm, degrees wrapped to (−180, 180]). ``alignment_time`` is
    the alignment date and time the companion records (else its Content Date/Time (0008,0023/
    0033)), a **naive** datetime in the sender's local time, like the SRO's Content Date/Time it
    is compared with (DICOM DA/TM carry no zone unless Timezone Offset From UTC (0008,0201) is
    given; both objects come from the same console). ``None``: the companion states no time,
    so it cannot be paired (docs/contract.md section 1).
    """

    offset: CouchOffset
    sop_instance_uid: str
    patient_id: str | None
    study_instance_uid: str | None
    alignment_time: dt.datetime | None
    source: str  # the adapter's label, e.g. "elekta_xvi_rps"
    warnings: tuple[str, ...] = ()

    @property
    def key(self) -> PairingKey:
        """This companion as :func:`model.inputs.pairing.pair` takes it."""
        return PairingKey(self.sop_instance_uid, self.patient_id, self.study_instance_uid,
                          self.alignment_time)


#: What reading one data set gives: an SRO's registration (with the offset of its own private
#: elements, if any), a companion object's offset, or the failed check.
InputResult = RegistrationInput | CompanionInput | InvalidInput


@runtime_checkable
class InputAdapter(Protocol):
    """One kind of input (module docstring)."""

    @property
    def name(self) -> str:
        """A short stable name, for logs and tests."""
        ...

    @property
    def sop_class_uids(self) -> tuple[str, ...]:
        """The SOP Class UIDs it reads (a presentation context each, PS3.4 Annex B)."""
        ...

    def recognises(self, ds: Dataset) -> bool:
        """Whether ``ds``, of one of :attr:`sop_class_uids`, is this adapter's kind of input;
        cheap, never raises."""
        ...

    def read(self, ds: Dataset, profile: OffsetProfile) -> InputResult:
        """Read ``ds`` with the sender's offset profile (docs/contract.md section 5.1); a failed
        check raises :class:`SROError`."""
        ...


class AdapterRegistry:
    """The input adapters, in order of precedence: for a data set, the first one that accepts its
    SOP class and recognises it (a vendor-specific adapter goes before a generic one). Immutable;
    compared and hashed by identity (it is part of :class:`model.pipeline.DecodeOptions`)."""

    __slots__ = ("_adapters", "_by_sop_class")

    def __init__(self, adapters: Iterable[InputAdapter]) -> None:
        self._adapters = tuple(adapters)
        by_class: dict[str, list[InputAdapter]] = {}
        for adapter in self._adapters:
            for uid in adapter.sop_class_uids:
                by_class.setdefault(uid, []).append(adapter)
        self._by_sop_class = {uid: tuple(found) for uid, found in by_class.items()}

    @property
    def adapters(self) -> tuple[InputAdapter, ...]:
        return self._adapters

    @property
    def sop_class_uids(self) -> tuple[str, ...]:
        """Every SOP class some adapter reads, in order of registration: the Storage
        presentation contexts the node accepts (PS3.8 section 9.3.3.2)."""
        return tuple(self._by_sop_class)

    def adapter_for(self, ds: Dataset) -> InputAdapter | None:
        """The adapter that reads ``ds`` (``None``: none does)."""
        return self._adapter_for(ds, sop_class_uid_of(ds))

    def _adapter_for(self, ds: Dataset, sop_class: str | None) -> InputAdapter | None:
        for adapter in self._by_sop_class.get(sop_class or "", ()):
            if adapter.recognises(ds):
                return adapter
        return None

    def read(self, ds: Dataset, profile: OffsetProfile) -> InputResult:
        """Read ``ds`` with the adapter that recognises it; never raises. Nothing recognises it:
        ``not_spatial_registration`` (docs/contract.md section 1.4, the SOP class check); a data
        set pydicom cannot convert: ``unreadable``."""
        try:
            sop_class = sop_class_uid_of(ds)
            adapter = self._adapter_for(ds, sop_class)
            if adapter is None:
                return InvalidInput(InvalidReason.NOT_SPATIAL_REGISTRATION,
                                    self._not_recognised(sop_class), sop_instance_uid_of(ds))
            return adapter.read(ds, profile)
        except SROError as exc:
            return InvalidInput(exc.code, exc.message, sop_instance_uid_of(ds))
        except Exception as exc:  # a malformed element pydicom cannot convert, etc.
            return InvalidInput(
                InvalidReason.UNREADABLE,
                f"the dataset cannot be understood: {type(exc).__name__}: {exc}",
                sop_instance_uid_of(ds))

    def _not_recognised(self, sop_class: str | None) -> str:
        accepted = " or ".join(f"{UID(uid).name} ({uid})" for uid in self.sop_class_uids)
        if sop_class in self._by_sop_class:
            return f"no input adapter recognises this {UID(sop_class).name} data set"
        return f"SOP Class UID is {sop_class or 'absent'!r}, not {accepted or 'one it reads'}"
