"""What a console keeps: its rotation order and direction (docs/contract.md section 6).

The patient position belongs to the patient, so a console's established convention is a set of
``(order, direction)`` pairs, and an SRO's expected hypotheses are those pairs combined with the
patient's position.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from model.conventions import HYPOTHESES, Convention, PatientPosition, RotationOrder


@dataclass(frozen=True, slots=True, order=True)
class OrderDirection:
    """One ``(order, direction)`` pair: what a console keeps from fraction to fraction."""

    order: RotationOrder
    inverse: bool

    @property
    def index(self) -> int:
        """Position in :data:`PAIRS`."""
        return PAIRS.index(self)

    def __str__(self) -> str:
        return f"{self.order.value}/{'inverse' if self.inverse else 'direct'}"

    @classmethod
    def parse(cls, text: str) -> OrderDirection:
        """``xyz/direct`` or ``zyx/inverse`` (what ``consoles commission --convention`` takes)."""
        order, sep, direction = text.strip().lower().partition("/")
        if not sep or direction not in ("direct", "inverse"):
            raise ValueError(f"{text!r}: expected ORDER/direct or ORDER/inverse, e.g. xyz/direct")
        try:
            return cls(RotationOrder(order), direction == "inverse")
        except ValueError:
            raise ValueError(f"{text!r}: the order is one of "
                             + ", ".join(o.value for o in RotationOrder)) from None

    @classmethod
    def of(cls, h: Convention) -> OrderDirection:
        return cls(h.order, h.inverse)


#: The 12 pairs, direct first, then inverse, orders as in :class:`RotationOrder`.
PAIRS: tuple[OrderDirection, ...] = tuple(
    OrderDirection(order, inverse) for inverse in (False, True) for order in RotationOrder)
#: The pair of each of the 96 hypotheses, shape (H,).
PAIR_OF_HYPOTHESIS: npt.NDArray[np.int64] = np.array(
    [PAIRS.index(OrderDirection.of(h)) for h in HYPOTHESES])
POSITIONS: tuple[PatientPosition, ...] = tuple(PatientPosition)
#: The position index (into :data:`POSITIONS`) of each hypothesis, shape (H,).
POSITION_OF_HYPOTHESIS: npt.NDArray[np.int64] = np.array(
    [POSITIONS.index(h.patient_position) for h in HYPOTHESES])


class Establishment(str, Enum):
    """How a console's convention came to be established (docs/contract.md section 6)."""

    COMMISSIONED = "commissioned"  # by a person, with their name and a note
    LEARNED = "learned"  # after ``learn_after`` consecutive confident decisions


def pairs_text(pairs: Iterable[OrderDirection]) -> str:
    """``xyz/direct`` or ``{xyz, yxz}/direct`` or a list: what a person reads."""
    ps = sorted(pairs)
    if not ps:
        return "(none)"
    directions = {p.inverse for p in ps}
    if len(directions) == 1:
        orders = [p.order.value for p in ps]
        d = "inverse" if ps[0].inverse else "direct"
        return f"{orders[0]}/{d}" if len(orders) == 1 else "{" + ", ".join(orders) + "}/" + d
    return ", ".join(str(p) for p in ps)


def expected_mask(pairs: Iterable[OrderDirection],
                  positions: Iterable[PatientPosition] | None) -> npt.NDArray[np.bool_]:
    """The expected hypotheses (H,): the pairs combined with the patient's positions (every
    position when the patient's is not known)."""
    pair_ok = np.zeros(len(PAIRS), dtype=bool)
    for p in pairs:
        pair_ok[p.index] = True
    pos_ok = np.ones(len(POSITIONS), dtype=bool)
    if positions is not None:
        pos_ok[:] = False
        for q in positions:
            pos_ok[POSITIONS.index(q)] = True
    return pair_ok[PAIR_OF_HYPOTHESIS] & pos_ok[POSITION_OF_HYPOTHESIS]
