"""Starting the association server (placeholder until the prompt-acknowledgement transport lands)."""

from __future__ import annotations

from typing import Any

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer


def start_server(
    ae: AE, address: tuple[str, int], evt_handlers: list[Any] | None = None
) -> ThreadedAssociationServer:
    """Start a non-blocking association server on ``address`` with ``evt_handlers`` bound."""
    server = ae.start_server(address, block=False, evt_handlers=evt_handlers)
    assert server is not None
    return server
