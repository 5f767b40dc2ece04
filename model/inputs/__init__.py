"""Input adapters: each kind of input (an SRO layout, a companion, a vendor's private tags).

:data:`DEFAULT_REGISTRY` holds the adapters the product ships: today the SRO with its offset in
a private block (:mod:`model.inputs.private_block`). See :mod:`model.inputs.adapter`.
"""

from model.inputs.adapter import (
    AdapterRegistry,
    InputAdapter,
    InputResult,
    InvalidInput,
    RegistrationInput,
)
from model.inputs.private_block import PRIVATE_BLOCK, PrivateBlockAdapter

DEFAULT_REGISTRY = AdapterRegistry((PRIVATE_BLOCK,))

__all__ = [
    "DEFAULT_REGISTRY",
    "PRIVATE_BLOCK",
    "AdapterRegistry",
    "InputAdapter",
    "InputResult",
    "InvalidInput",
    "PrivateBlockAdapter",
    "RegistrationInput",
]
