"""Consoles over time (docs/contract.md sections 6 and 7): a console's identity, its
established convention, the ``console_convention`` check and change detector, and the likely
causes of an out-of-distribution decision."""

from model.consoles.convention import PAIRS, Establishment, OrderDirection, pairs_text
from model.consoles.history import (
    Assessment,
    ConsoleState,
    Established,
    EventKind,
    HistoryPolicy,
    assess,
    combine_with_history,
    patient_key,
)
from model.consoles.identity import ConsoleIdentity

__all__ = ["PAIRS", "Assessment", "ConsoleIdentity", "ConsoleState", "Established",
           "Establishment", "EventKind", "HistoryPolicy", "OrderDirection", "assess",
           "combine_with_history", "pairs_text", "patient_key"]
