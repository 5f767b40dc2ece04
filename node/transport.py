"""The association server's transport: acknowledge every TCP segment promptly (PS3.8 section 9).

DCMTK ``storescu`` and pynetdicom senders leave Nagle's algorithm on and write each C-STORE as two
small segments (the command P-DATA-TF, then the dataset). Nagle holds the second segment until the
first one is acknowledged, and a Linux receiver that has nothing to send delays that
acknowledgement by up to 40 ms: every object then costs about 45 ms whatever the receiver does.

This module plugs into pynetdicom's own extension point, the ``request_handler`` of
:class:`~pynetdicom.transport.AssociationServer`: :class:`PromptAckRequestHandler` hands the
association a :class:`PromptAckSocket` (a plain :class:`socket.socket` subclass on the accepted
connection) that re-arms ``TCP_QUICKACK`` before every read and after every write (the kernel
leaves quick-acknowledgement mode on its own, e.g. when we answer, so it is kept armed), and sets
``TCP_NODELAY`` so the node's own responses leave at once. No library code is patched.

``TCP_QUICKACK`` is Linux-only: where the platform lacks it the server still runs, with
``TCP_NODELAY`` only, and says so once in the log when it starts. Over TLS (an
:class:`ssl.SSLSocket`, whose reads happen inside OpenSSL) the options are set once on the
connection and not re-armed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from socketserver import BaseServer
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PromptAck:
    """Which TCP options the accepted connections get.

    ``quickack`` is the platform's ``TCP_QUICKACK`` option number, or ``None`` where it does not
    exist (then only ``TCP_NODELAY`` is set).
    """

    quickack: int | None
    nodelay: bool = True

    @classmethod
    def detect(cls) -> PromptAck:
        """The options this platform offers (``TCP_QUICKACK`` exists on Linux only)."""
        return cls(quickack=getattr(socket, "TCP_QUICKACK", None))

    def apply(self, sock: socket.socket) -> None:
        """Set the options on a connected TCP socket; a socket that refuses keeps its defaults."""
        try:
            if self.nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.quickack is not None:
                sock.setsockopt(socket.IPPROTO_TCP, self.quickack, 1)
        except OSError as exc:  # not TCP (e.g. a socketpair in a test) or already closed
            LOGGER.debug("TCP options not set on %r: %s", sock, exc)


class PromptAckSocket(socket.socket):
    """An accepted connection that re-arms ``TCP_QUICKACK`` around every read and write.

    Setting ``TCP_QUICKACK`` also sends at once an acknowledgement the kernel was holding back, so
    re-arming before a read covers data that arrived while the association thread was busy.
    """

    _quickack: int | None = None

    @classmethod
    def adopt(cls, sock: socket.socket, options: PromptAck) -> PromptAckSocket:
        """Take over ``sock``'s connection (``sock`` is detached and must not be used again)."""
        timeout = sock.gettimeout()
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.settimeout(timeout)
        adopted._quickack = options.quickack
        options.apply(adopted)
        return adopted

    def _rearm(self) -> None:
        if self._quickack is None:
            return
        with contextlib.suppress(OSError):  # connection gone: the read or write reports it
            self.setsockopt(socket.IPPROTO_TCP, self._quickack, 1)

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        self._rearm()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0, /) -> int:
        self._rearm()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0, /) -> int:
        sent = super().send(data, flags)
        self._rearm()
        return sent

    def sendall(self, data: Any, flags: int = 0, /) -> None:
        super().sendall(data, flags)
        self._rearm()


class PromptAckRequestHandler(RequestHandler):
    """pynetdicom's :class:`~pynetdicom.transport.RequestHandler` on a :class:`PromptAckSocket`."""

    def __init__(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: Any,
        server: BaseServer,
        *,
        options: PromptAck,
    ) -> None:
        self.options = options
        super().__init__(request, client_address, server)  # runs setup() then handle()

    def setup(self) -> None:
        """Swap the accepted socket for one that acknowledges promptly (socketserver's hook)."""
        request = self.request
        if isinstance(request, ssl.SSLSocket):
            self.options.apply(request)  # OpenSSL reads the descriptor itself: set once
        elif isinstance(request, socket.socket) and request.type == socket.SOCK_STREAM:
            self.request = PromptAckSocket.adopt(request, self.options)


class PollBudget:
    """How often each open association polls its socket: ``interval × open associations``.

    pynetdicom's DUL thread sleeps 1 ms between polls of an idle connection, and a C-STORE
    waits for that twice (the request arriving, the response leaving). A lone association
    polls every ``interval_s``; with ``n`` open, each polls every ``n × interval_s`` (never
    slower than pynetdicom's own 1 ms), so polling costs the same share of the interpreter however
    many senders are connected, and concurrent associations do not starve each other. The
    interval is the DUL's run-loop delay, set from ``EVT_CONN_OPEN`` (which fires after the
    association is made and before its threads start) and ``EVT_CONN_CLOSE``; no library code
    is patched. Where this pynetdicom has no such delay, its default stays and the log says so
    once.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._open: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._warned = False

    def handlers(self) -> list[tuple[Any, Any]]:
        """``(event, handler)`` pairs to bind with ``evt_handlers``."""
        return [(evt.EVT_CONN_OPEN, self.on_open), (evt.EVT_CONN_CLOSE, self.on_close)]

    def delay_s(self, open_associations: int) -> float:
        return min(max(1, open_associations) * self.interval_s, max(self.interval_s, 0.001))

    def on_open(self, event: Any) -> None:
        dul = getattr(event.assoc, "dul", None)
        if dul is None or not isinstance(getattr(dul, "_run_loop_delay", None), float):
            with self._lock:
                if not self._warned:
                    self._warned = True
                    LOGGER.warning("this pynetdicom has no DUL run-loop delay; "
                                   "[node] poll_interval_ms has no effect")
            return
        with self._lock:
            self._open.add(dul)
            self._rebalance()

    def on_close(self, event: Any) -> None:
        dul = getattr(event.assoc, "dul", None)
        with self._lock:
            self._open.discard(dul)
            self._rebalance()

    def _rebalance(self) -> None:
        delay = self.delay_s(len(self._open))
        for dul in list(self._open):
            dul._run_loop_delay = delay


def start_server(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any] | None = None,
    *,
    prompt_ack: bool = True,
) -> ThreadedAssociationServer:
    """Start a non-blocking association server on ``address`` with ``evt_handlers`` bound.

    Mirrors :meth:`pynetdicom.AE.start_server` (``block=False``): the server is registered with
    ``ae`` so that ``ae.shutdown()`` (or ``server.shutdown()``) stops it, and it serves from a
    daemon thread. With ``prompt_ack`` (the default) its connections acknowledge promptly, see the
    module docstring; ``prompt_ack=False`` gives pynetdicom's plain transport.
    """
    kwargs: dict[str, Any] = {}
    if prompt_ack:
        options = PromptAck.detect()
        if options.quickack is None:
            LOGGER.warning(
                "TCP_QUICKACK is not available on this platform: senders that leave Nagle's "
                "algorithm on (e.g. default DCMTK storescu) may wait up to 40 ms per object; "
                "TCP_NODELAY is still set on the node's own sends"
            )
        else:
            LOGGER.info("prompt acknowledgement on: TCP_QUICKACK kept armed, TCP_NODELAY set")
        kwargs["request_handler"] = functools.partial(PromptAckRequestHandler, options=options)
    server = ae.make_server(
        address,
        evt_handlers=evt_handlers,
        server_class=ThreadedAssociationServer,
        **kwargs,
    )
    timestamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(
        target=make_target(server.serve_forever), name=f"AcceptorServer@{timestamp}", daemon=True
    )
    thread.start()
    # AE.shutdown() stops the servers in this list, and server.shutdown() removes itself from it
    # (pynetdicom's start_server registers its own servers the same way).
    ae._servers.append(server)
    return server
