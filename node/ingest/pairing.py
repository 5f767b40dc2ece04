"""Companion pairing in the node: an SRO and its companion object, in either order of arrival.

docs/contract.md section 1 (offset sources, item 3): an Elekta XVI RPS companion (Raw Data
Storage) carries the couch correction of an SRO sent separately. The rule is
:func:`model.inputs.pairing.pair` (the one ``sro-decoder decode`` applies to a folder); the audit
database keeps what it needs (:class:`node.records.PairingFacts` on each object, the links, the
SRO's decisions), so a restart between the two objects loses nothing.

For each received object that takes part (an SRO without an offset of its own, a companion),
:meth:`Pairer.plan` reads the recorded objects of the same Patient ID and Study Instance UID
(:func:`node.audit.store.pairing_group`, the database narrowing the candidates), applies the
rule to all of them with the new one, and turns every difference from what is recorded into
changes recorded with the new object's receipt, in its transaction
(:func:`node.audit.store.record_receipts`):

- an SRO whose companion is now known gets a new decision from the companion's offset (the
  earlier ``no_offset`` kept as history), and the link names both;
- an SRO that two companions claim, or a companion equally near two SROs: the ``pairing`` check
  is ``ambiguous`` (flagged, alerted), nothing is guessed; the SRO's new decision has no offset;
- a companion is recorded ``offset_only`` with its own ``pairing`` check.

Planning and committing one such receipt hold :attr:`Pairer.lock`, so two of them never plan
from the same state (objects that do not pair never take it); the writer still checks each change
against the state it was planned from (:class:`node.records.PairingConflict`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from model.decision import (
    Check,
    CheckName,
    CheckResult,
    DecisionKind,
    DecodeRecord,
    OffsetSource,
    OffsetSourceKind,
    offset_only_record,
)
from model.decoder import Decoder
from model.inputs import AdapterRegistry, CompanionInput, RegistrationInput
from model.inputs.pairing import DEFAULT_PAIR_WINDOW_S, Pairing, PairingKey, PairingState, pair
from model.inputs.profiles import OffsetProfile
from model.pipeline import DecodeOptions, read_file
from node.audit.models import utcnow
from node.audit.store import PairingMember, pairing_group
from node.ingest.archive import Archive, Archived
from node.records import (
    AlertMessage,
    CompanionUpdate,
    Origin,
    PairingFacts,
    PairingLink,
    PairingRole,
    PairingStatus,
    SRODecisionUpdate,
)
from node.settings import Settings

log = logging.getLogger("node.ingest.pairing")

#: a Patient ID (LO) or UID longer than this is not the one stored: such an object is not paired
_KEY_MAX = 64


class Builder(Protocol):
    """What the pairing needs of :class:`node.ingest.receipt.ReceiptBuilder` (above it)."""

    settings: Settings
    decoder: Decoder
    archive: Archive
    adapters: AdapterRegistry

    def decode(self, ds: Dataset | None, error: str | None, origin: Origin,
               uid: str | None) -> DecodeRecord: ...

    def decode_with(self, ds: Dataset, options: DecodeOptions,
                    uid: str | None) -> DecodeRecord: ...

    def alert_for(self, record: DecodeRecord, origin: Origin, uid: str | None,
                  archived: Archived | None, ds: Dataset | None) -> AlertMessage | None: ...


@dataclass(frozen=True, slots=True)
class PairingPlan:
    """What a receipt records for pairing: the object's own record (an SRO decoded with its
    companion's offset, a companion's ``offset_only`` with its ``pairing`` check), its facts,
    and the changes to objects recorded earlier."""

    record: DecodeRecord
    facts: PairingFacts
    sro_updates: tuple[SRODecisionUpdate, ...] = ()
    companion_updates: tuple[CompanionUpdate, ...] = ()
    links: tuple[PairingLink, ...] = ()


@dataclass(frozen=True, slots=True)
class _Participant:
    role: PairingRole
    key: PairingKey
    companion: CompanionInput | None  # COMPANION: what it carries
    profile: OffsetProfile


def _status(role: PairingRole, state: PairingState | None) -> PairingStatus:
    if state is PairingState.PAIRED:
        return PairingStatus.PAIRED
    if state is PairingState.AMBIGUOUS:
        return PairingStatus.AMBIGUOUS
    return PairingStatus.AWAITING_OFFSET if role is PairingRole.SRO else PairingStatus.AWAITING_SRO


def _pairing_check(p: Pairing | None, role: PairingRole) -> Check:
    """The ``pairing`` check of docs/contract.md section 4 for one object."""
    if p is None or p.state is PairingState.UNPAIRED:
        sentence = p.sentence if p is not None else "no companion object for this SRO yet"
        return Check(CheckName.PAIRING, CheckResult.NOT_CHECKED, sentence)
    details = {
        "sro": None if p.sro is None else p.sro.sop_instance_uid,
        "companion": None if p.companion is None else p.companion.sop_instance_uid,
        "candidates": [c.sop_instance_uid for c in p.candidates],
        "competitors": [c.sop_instance_uid for c in p.competitors],
        "seconds": p.seconds,
    }
    result = CheckResult.AMBIGUOUS if p.state is PairingState.AMBIGUOUS else CheckResult.PASSED
    return Check(CheckName.PAIRING, result, p.sentence, details)


class Pairer:
    """Plans the pairing of received objects against the audit database (module docstring).

    ``builder`` is the :class:`node.ingest.receipt.ReceiptBuilder` (:class:`Builder`) whose
    decoder, settings, adapters and archive it uses (it decodes an SRO again with its
    companion's offset)."""

    def __init__(self, builder: Builder, engine: Engine) -> None:
        self.builder = builder
        self.engine = engine
        #: held from planning through the commit of a receipt that pairs (module docstring)
        self.lock = threading.RLock()

    # -- what takes part ---------------------------------------------------------------------

    def participant(self, ds: Dataset | None, record: DecodeRecord,
                    origin: Origin) -> _Participant | None:
        """The pairing role of a received object, or ``None``: an SRO with an offset of its own,
        anything invalid, anything that is neither an SRO nor a companion."""
        if ds is None or record.decision not in (DecisionKind.NO_OFFSET, DecisionKind.OFFSET_ONLY,
                                                 DecisionKind.INVALID):
            return None
        profile = self.builder.settings.profile_for(origin.calling_ae_title)
        try:
            read = self.builder.adapters.read(ds, profile)
        except Exception:  # read never raises; a defect here must not lose the object
            log.exception("pairing: reading the data set again failed")
            return None
        if isinstance(read, CompanionInput):
            return _Participant(PairingRole.COMPANION, read.key, read, profile)
        if isinstance(read, RegistrationInput) and read.offset is None \
                and record.decision is DecisionKind.NO_OFFSET:
            return _Participant(PairingRole.SRO, read.key, None, profile)
        return None

    @staticmethod
    def _pairable(key: PairingKey) -> bool:
        return bool(key.patient_id and key.study_instance_uid and key.time is not None
                    and len(key.patient_id) <= _KEY_MAX
                    and len(key.study_instance_uid) <= _KEY_MAX)

    # -- planning ----------------------------------------------------------------------------

    def plan(self, ds: Dataset, record: DecodeRecord, part: _Participant,
             origin: Origin) -> PairingPlan:
        """The pairing of one received object (module docstring); the caller holds
        :attr:`lock` until the receipt is committed. Reads the database and the archive."""
        key = part.key
        if not self._pairable(key):
            pairing = None
            if part.role is PairingRole.COMPANION:
                pairing = pair([key], []).by_companion.get(key.sop_instance_uid)
            return self._own(record, part, pairing, facts_only=True)
        assert key.patient_id is not None and key.study_instance_uid is not None
        with Session(self.engine) as session:
            members = [m for m in pairing_group(session, key.patient_id, key.study_instance_uid)
                       if m.sop_instance_uid != key.sop_instance_uid]
        by_uid = {m.sop_instance_uid: m for m in members}
        by_id = {m.object_id: m for m in members}

        def key_of(m: PairingMember) -> PairingKey:
            return PairingKey(m.sop_instance_uid, key.patient_id, key.study_instance_uid, m.time)

        sros = [key_of(m) for m in members if m.role is PairingRole.SRO]
        comps = [key_of(m) for m in members if m.role is PairingRole.COMPANION]
        (sros if part.role is PairingRole.SRO else comps).append(key)
        window = float(getattr(part.profile, "pair_window_s", None) or DEFAULT_PAIR_WINDOW_S)
        result = pair(comps, sros, window)

        companions: dict[str, CompanionInput] = {}
        if part.companion is not None:
            companions[key.sop_instance_uid] = part.companion

        def companion(uid: str) -> CompanionInput | None:
            if uid not in companions:
                found = self._read_member(by_uid[uid])
                if isinstance(found, CompanionInput):
                    companions[uid] = found
            return companions.get(uid)

        def object_id(uid: str) -> int | None:  # None: the received object itself
            return None if uid == key.sop_instance_uid else by_uid[uid].object_id

        sro_updates: list[SRODecisionUpdate] = []
        for m in members:
            if m.role is not PairingRole.SRO or m.decision_id is None:
                continue
            p = result.by_sro.get(m.sop_instance_uid)
            wanted = self._wanted(p)
            have = (m.status, frozenset(by_id[i].sop_instance_uid if i in by_id
                                        else key.sop_instance_uid for i in m.companions))
            if m.status is PairingStatus.AWAITING_OFFSET and not wanted[1]:
                continue
            if wanted == have:
                continue
            update = self._sro_update(m, p, wanted, companion, object_id)
            if update is not None:
                sro_updates.append(update)

        companion_updates = [
            CompanionUpdate(m.object_id, m.status, status)
            for m in members if m.role is PairingRole.COMPANION
            for status in [_status(PairingRole.COMPANION,
                                   result.by_companion[m.sop_instance_uid].state)]
            if status is not m.status
        ]

        if part.role is PairingRole.SRO:
            p = result.by_sro.get(key.sop_instance_uid)
            own = self._own_sro(ds, record, part, p, companion, origin)
            links = tuple(
                PairingLink(None, object_id(c), own.facts.status,
                            p.seconds if p is not None else None, True)
                for c in sorted(self._wanted(p)[1]))
        else:
            p = result.by_companion.get(key.sop_instance_uid)
            own = self._own(record, part, p)
            links = ()
            if p is not None and p.state is PairingState.AMBIGUOUS \
                    and p.sro is None and not p.competitors:
                # equally near several SROs, none decided again: the links name them
                links = tuple(PairingLink(object_id(c.sop_instance_uid), None,
                                          PairingStatus.AMBIGUOUS, p.seconds, False)
                              for c in p.candidates)
        return dataclasses.replace(own, sro_updates=tuple(sro_updates),
                                   companion_updates=tuple(companion_updates),
                                   links=own.links + links)

    @staticmethod
    def _wanted(p: Pairing | None) -> tuple[PairingStatus, frozenset[str]]:
        """An SRO's pairing as the rule gives it: its state and companions."""
        if p is None or p.state is PairingState.UNPAIRED:
            return PairingStatus.AWAITING_OFFSET, frozenset()
        if p.state is PairingState.PAIRED:
            assert p.companion is not None
            return PairingStatus.PAIRED, frozenset({p.companion.sop_instance_uid})
        return PairingStatus.AMBIGUOUS, frozenset(c.sop_instance_uid for c in p.competitors)

    def _own(self, record: DecodeRecord, part: _Participant, p: Pairing | None, *,
             facts_only: bool = False) -> PairingPlan:
        """The received object's own plan when it is a companion (or cannot be paired)."""
        key = part.key
        if part.role is PairingRole.COMPANION and part.companion is not None:
            c = part.companion
            paired = p.sro.sop_instance_uid if p is not None and p.sro is not None \
                and p.state is PairingState.PAIRED else None
            record = offset_only_record(
                self.builder.decoder.info, c.offset, path=record.path,
                sop_instance_uid=c.sop_instance_uid, paired_sop_instance_uid=paired,
                precision=part.profile.precision, checks=(_pairing_check(p, part.role),),
                warnings=c.warnings, profile=getattr(part.profile, "name", None))
        elif facts_only:
            record = dataclasses.replace(record, checks=(*record.checks, Check(
                CheckName.PAIRING, CheckResult.NOT_CHECKED,
                "the SRO has no Patient ID, Study Instance UID or Content Date/Time that pairing "
                "can use: no companion can supply its offset")))
        state = None if p is None else p.state
        facts = PairingFacts(part.role, _status(part.role, state),
                             key.patient_id if self._pairable(key) else None,
                             key.study_instance_uid if self._pairable(key) else None,
                             key.time if self._pairable(key) else None)
        return PairingPlan(record, facts)

    def _own_sro(self, ds: Dataset, record: DecodeRecord, part: _Participant,
                 p: Pairing | None, companion: Callable[[str], CompanionInput | None],
                 origin: Origin) -> PairingPlan:
        wanted = self._wanted(p)
        if wanted[0] is PairingStatus.PAIRED:
            assert p is not None and p.companion is not None
            found = companion(p.companion.sop_instance_uid)
            if found is not None:
                record = self.decode_with_companion(ds, found, p, part.profile, record.path,
                                                    origin.calling_ae_title)
        elif wanted[0] is PairingStatus.AMBIGUOUS:
            record = dataclasses.replace(record, checks=(*record.checks,
                                                         _pairing_check(p, PairingRole.SRO)))
        facts = PairingFacts(PairingRole.SRO, wanted[0], part.key.patient_id,
                             part.key.study_instance_uid, part.key.time)
        return PairingPlan(record, facts)

    def _sro_update(self, m: PairingMember, p: Pairing | None,
                    wanted: tuple[PairingStatus, frozenset[str]],
                    companion: Callable[[str], CompanionInput | None],
                    object_id: Callable[[str], int | None]) -> SRODecisionUpdate | None:
        """A new decision for an SRO recorded earlier whose pairing the rule now changes."""
        assert m.decision_id is not None
        ds = self._read_dataset(m)
        if ds is None:
            log.error("pairing: the archived SRO cannot be read; its pairing is not changed",
                      extra={"fields": {"sop_instance_uid": m.sop_instance_uid}})
            return None
        origin = Origin(calling_ae_title=m.calling_ae_title, called_ae_title=None,
                        peer_address=None, association_id=None, received_at=utcnow())
        base = self.builder.decode(ds, None, origin, m.sop_instance_uid)
        base = dataclasses.replace(base, path=self._path(m))
        record = base
        profile = self.builder.settings.profile_for(m.calling_ae_title)
        if wanted[0] is PairingStatus.PAIRED:
            assert p is not None and p.companion is not None
            found = companion(p.companion.sop_instance_uid)
            if found is None:
                return None
            record = self.decode_with_companion(ds, found, p, profile, base.path,
                                                m.calling_ae_title)
        elif wanted[0] is PairingStatus.AMBIGUOUS:
            record = dataclasses.replace(base, checks=(*base.checks,
                                                       _pairing_check(p, PairingRole.SRO)))
        seconds = None if p is None else p.seconds
        links = tuple(PairingLink(m.object_id, object_id(c), wanted[0], seconds, True)
                      for c in sorted(wanted[1]))
        return SRODecisionUpdate(
            sro_object_id=m.object_id, supersedes_decision_id=m.decision_id,
            sop_instance_uid=m.sop_instance_uid, calling_ae_title=m.calling_ae_title,
            record=record, alert=self.builder.alert_for(record, origin, m.sop_instance_uid,
                                                        None, ds),
            status=wanted[0], links=links)

    def decode_with_companion(self, ds: Dataset, companion: CompanionInput, p: Pairing,
                              profile: OffsetProfile, path: str | None,
                              calling_ae_title: str | None) -> DecodeRecord:
        """The SRO ``ds`` decoded with its companion's offset (offset source: the companion,
        docs/contract.md section 4), with the ``pairing`` check passed."""
        options = DecodeOptions(profile=profile, policy=self.builder.settings.policy,
                                adapters=self.builder.adapters, offset_override=companion.offset)
        record = self.builder.decode_with(ds, options, companion.sop_instance_uid)
        return dataclasses.replace(
            record, path=path,
            offset_source=OffsetSource(OffsetSourceKind.COMPANION, companion.sop_instance_uid,
                                       getattr(profile, "name", None)),
            paired_sop_instance_uid=companion.sop_instance_uid,
            checks=(*record.checks, _pairing_check(p, PairingRole.SRO)),
            warnings=(*record.warnings, *companion.warnings))

    # -- the archive ---------------------------------------------------------------------------

    def _path(self, m: PairingMember) -> str | None:
        if m.archive_path is None:
            return None
        return str(self.builder.archive.root / m.archive_path)

    def _read_dataset(self, m: PairingMember) -> Dataset | None:
        path = self._path(m)
        if path is None:
            return None
        ds, _ = read_file(Path(path))
        return ds

    def _read_member(self, m: PairingMember) -> object | None:
        ds = self._read_dataset(m)
        if ds is None:
            return None
        return self.builder.adapters.read(ds, self.builder.settings.profile_for(
            m.calling_ae_title))


__all__ = ["Builder", "Pairer", "PairingPlan"]
