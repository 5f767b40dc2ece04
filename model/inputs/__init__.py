"""Input adapters: each kind of input (an SRO layout, a companion, a vendor's private tags).

:data:`DEFAULT_REGISTRY` holds the adapters the product ships: the SRO with its offset in
private elements as the sender's profile describes them (:mod:`model.inputs.private_block`) and
the Elekta XVI RPS companion (:mod:`model.inputs.xvi_rps`, Raw Data Storage). See
:mod:`model.inputs.adapter`; companions are paired with SROs by :mod:`model.inputs.pairing`.
"""

from model.inputs.adapter import (
    AdapterRegistry,
    CompanionInput,
    InputAdapter,
    InputResult,
    InvalidInput,
    RegistrationInput,
)
from model.inputs.private_block import PRIVATE_BLOCK, PrivateBlockAdapter
from model.inputs.xvi_rps import RAW_DATA_STORAGE, XVI_RPS, XviRpsAdapter

DEFAULT_REGISTRY = AdapterRegistry((PRIVATE_BLOCK, XVI_RPS))

__all__ = [
    "DEFAULT_REGISTRY",
    "PRIVATE_BLOCK",
    "RAW_DATA_STORAGE",
    "XVI_RPS",
    "AdapterRegistry",
    "CompanionInput",
    "InputAdapter",
    "InputResult",
    "InvalidInput",
    "PrivateBlockAdapter",
    "RegistrationInput",
    "XviRpsAdapter",
]
