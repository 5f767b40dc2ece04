"""Pairing companion objects with their SROs (docs/contract.md section 1, "offset sources" item 3).

A companion object (the Elekta XVI RPS export) carries the couch correction of one registration
that lives in a separate SRO. :func:`pair` is the one rule, pure and order-free, that
``sro-decoder decode`` (the paths it is given) and the node (the audit database's unpaired
objects) both apply:

- a companion pairs with an SRO of the **same Patient ID and Study Instance UID** whose
  registration time (the SRO's Content Date/Time) is **nearest** to the companion's alignment
  time, within ``pair_window_s`` (default :data:`DEFAULT_PAIR_WINDOW_S`, 600 s);
- two SROs equally near the companion, or two companions whose nearest SRO is the same one, make
  the pairing **ambiguous**: reported with the candidates, flagged, never guessed;
- a companion with no SRO within the window (or without a time, a Patient ID or a Study
  Instance UID) is **unpaired**: it waits (the node) or stays alone (``decode``).

Keys are :class:`PairingKey` values: :attr:`model.inputs.CompanionInput.key` and
:attr:`model.inputs.RegistrationInput.key` give them, and the node can build them from its
stored rows. Times are naive datetimes in the sender's local time (both come from one console);
an aware and a naive time are never compared (the pair is not made).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = ["DEFAULT_PAIR_WINDOW_S", "Pairing", "PairingKey", "PairingState", "Pairings", "pair"]

#: the default of a profile's ``pair_window_s`` (docs/contract.md section 1)
DEFAULT_PAIR_WINDOW_S = 600.0


@dataclass(frozen=True, slots=True)
class PairingKey:
    """What pairing needs of one object (an SRO or a companion): its SOP Instance UID, Patient
    ID (0010,0020), Study Instance UID (0020,000D) and time (an SRO: Content Date/Time; a
    companion: its alignment time, else Content Date/Time); ``None`` where the object has none."""

    sop_instance_uid: str
    patient_id: str | None
    study_instance_uid: str | None
    time: dt.datetime | None


class PairingState(str, Enum):
    """The outcome for one companion or one SRO."""

    PAIRED = "paired"
    AMBIGUOUS = "ambiguous"  # flagged (the ``pairing`` check of docs/contract.md section 4)
    UNPAIRED = "unpaired"


@dataclass(frozen=True, slots=True)
class Pairing:
    """The outcome for one object.

    For a companion (:attr:`Pairings.by_companion`): ``sro`` is the SRO it pairs with (PAIRED);
    ``candidates`` the SROs equally near (AMBIGUOUS, two SROs) or the SRO its nearest is, shared
    with other companions (AMBIGUOUS, two companions: then ``competitors`` names them).
    For an SRO (:attr:`Pairings.by_sro`, only SROs some companion chose): ``companion`` is its
    one companion (PAIRED), or ``None`` and ``competitors`` the companions that all chose it
    (AMBIGUOUS). ``seconds`` is the time between the paired objects. ``sentence`` says it in
    words, for the record's reason or ``pairing`` check.
    """

    state: PairingState
    sentence: str
    sro: PairingKey | None = None
    companion: PairingKey | None = None
    candidates: tuple[PairingKey, ...] = ()
    competitors: tuple[PairingKey, ...] = ()
    seconds: float | None = None

    @property
    def flagged(self) -> bool:
        return self.state is PairingState.AMBIGUOUS


@dataclass(frozen=True, slots=True)
class Pairings:
    """What :func:`pair` found, by SOP Instance UID: every companion given has an entry in
    ``by_companion``; an SRO has one in ``by_sro`` only when some companion chose it (no
    entry: no companion for it, so its own offset sources apply)."""

    by_companion: Mapping[str, Pairing]
    by_sro: Mapping[str, Pairing]


def _seconds(a: dt.datetime, b: dt.datetime) -> float | None:
    if (a.tzinfo is None) != (b.tzinfo is None):
        return None  # an aware and a naive time: not comparable
    return abs((a - b).total_seconds())


def _nearest(companion: PairingKey, sros: Iterable[PairingKey],
             window_s: float) -> tuple[list[PairingKey], float | None]:
    """The SROs of the same patient and study nearest in time within the window."""
    best: list[PairingKey] = []
    best_s: float | None = None
    assert companion.time is not None
    for sro in sros:
        if (sro.time is None or sro.patient_id != companion.patient_id
                or sro.study_instance_uid != companion.study_instance_uid):
            continue
        seconds = _seconds(sro.time, companion.time)
        if seconds is None or seconds > window_s:
            continue
        if best_s is None or seconds < best_s:
            best, best_s = [sro], seconds
        elif seconds == best_s:
            best.append(sro)
    return best, best_s


def pair(companions: Iterable[PairingKey], sros: Iterable[PairingKey],
         window_s: float = DEFAULT_PAIR_WINDOW_S) -> Pairings:
    """Pair ``companions`` with ``sros`` (module docstring); the result does not depend on the
    order of either. Raises ``ValueError`` for a window that is not a positive number."""
    if not window_s > 0:
        raise ValueError(f"pair_window_s must be positive, got {window_s!r}")
    sro_list = list({s.sop_instance_uid: s for s in sros}.values())
    comp_list = list({c.sop_instance_uid: c for c in companions}.values())
    by_companion: dict[str, Pairing] = {}
    chosen: dict[str, list[tuple[PairingKey, float]]] = {}
    sro_by_uid = {s.sop_instance_uid: s for s in sro_list}
    by_patient: dict[tuple[str | None, str | None], list[PairingKey]] = {}
    for s in sro_list:
        by_patient.setdefault((s.patient_id, s.study_instance_uid), []).append(s)
    for comp in comp_list:
        missing = [name for name, value in (("a Patient ID", comp.patient_id),
                                            ("a Study Instance UID", comp.study_instance_uid),
                                            ("an alignment or content time", comp.time))
                   if not value]
        if missing:
            by_companion[comp.sop_instance_uid] = Pairing(
                PairingState.UNPAIRED, f"the companion has no {' or '.join(missing)}: it cannot "
                "be paired with an SRO", companion=comp)
            continue
        nearest, seconds = _nearest(
            comp, by_patient.get((comp.patient_id, comp.study_instance_uid), ()), window_s)
        if not nearest:
            by_companion[comp.sop_instance_uid] = Pairing(
                PairingState.UNPAIRED, f"no SRO of the same patient and study within "
                f"{window_s:g} s of the companion's alignment time", companion=comp)
        elif len(nearest) > 1:
            uids = ", ".join(sorted(s.sop_instance_uid for s in nearest))
            by_companion[comp.sop_instance_uid] = Pairing(
                PairingState.AMBIGUOUS, f"{len(nearest)} SROs are equally near ({seconds:g} s) "
                f"the companion's alignment time: {uids}; none is chosen", companion=comp,
                candidates=tuple(sorted(nearest, key=lambda s: s.sop_instance_uid)),
                seconds=seconds)
        else:
            assert seconds is not None
            chosen.setdefault(nearest[0].sop_instance_uid, []).append((comp, seconds))
    by_sro: dict[str, Pairing] = {}
    for sro_uid, comps in chosen.items():
        sro = sro_by_uid[sro_uid]
        if len(comps) == 1:
            comp, seconds = comps[0]
            sentence = (f"paired with companion {comp.sop_instance_uid} ({seconds:g} s apart)")
            by_companion[comp.sop_instance_uid] = Pairing(
                PairingState.PAIRED, f"paired with SRO {sro_uid} ({seconds:g} s apart)", sro=sro,
                companion=comp, candidates=(sro,), seconds=seconds)
            by_sro[sro_uid] = Pairing(PairingState.PAIRED, sentence, sro=sro, companion=comp,
                                      seconds=seconds)
            continue
        competitors = tuple(sorted((c for c, _ in comps), key=lambda c: c.sop_instance_uid))
        uids = ", ".join(c.sop_instance_uid for c in competitors)
        sentence = (f"{len(competitors)} companion objects are nearest to SRO {sro_uid}: {uids}; "
                    "none is chosen")
        by_sro[sro_uid] = Pairing(PairingState.AMBIGUOUS, sentence, sro=sro,
                                  competitors=competitors)
        for comp, seconds in comps:
            by_companion[comp.sop_instance_uid] = Pairing(
                PairingState.AMBIGUOUS, sentence, companion=comp, candidates=(sro,),
                competitors=competitors, seconds=seconds)
    return Pairings(by_companion=by_companion, by_sro=by_sro)
