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
``TCP_NODELAY`` only, and says so once in the log when it starts.

Over DICOM TLS (PS3.15 Annex B.9; the context from :mod:`node.dimse.tls`) the connection is a
:class:`TlsSocket`, which re-arms the options around OpenSSL's reads and writes the same way.
The accept loop only wraps the connection (:class:`GatedAssociationServer`): the TLS handshake
runs in the connection's own thread, under the first-PDU deadline below, so a peer that
connects and stays silent delays nobody. A handshake that fails (no client certificate when one
is required, an expired or unknown one, a plain DICOM connection to the TLS port) closes the
connection and is logged (WARNING ``connection refused: TLS handshake failed``, with
``peer_address`` and OpenSSL's reason).

The same handler is the accept-side gate of PS3.8 section 9.1.5 (the ARTIM timer of state Sta2):
a connection becomes an association only once its whole first PDU, the A-ASSOCIATE-RQ, has
arrived, within ``first_pdu_timeout_s`` of the accept. Until then it is no
:class:`~pynetdicom.association.Association` thread, so it holds none of
``AE.maximum_associations`` (pynetdicom counts association threads, and without the gate a peer
that connects and sends two bytes holds a slot until the ACSE timeout, then its DUL thread waits
for the rest of the PDU for ever); when the deadline passes it is closed and logged with its
address. The PDU is only peeked (``MSG_PEEK``): pynetdicom reads it as it would have. A first
PDU whose AE titles are not AE values (PS3.5 section 6.2: control characters, backslash, non-ASCII,
only spaces) is answered with an A-ASSOCIATE-RJ (PS3.8 section 9.3.4: rejected-permanent, service
user, calling or called AE title not recognised) and logged with the titles escaped; pynetdicom
would raise inside its PDU decoder. After the gate the connection's reads and writes time out
after ``AE.network_timeout``, so a peer that dies inside a PDU frees its slot. Over TLS the
first PDU cannot be peeked: it is read and handed back to pynetdicom by the :class:`TlsSocket`
before anything else it reads. The gate also applies the peer allow-list
(:class:`node.dimse.peers.PeerPolicy`): a calling AE title from an address it may not use is
rejected the same way (reason 3) and logged with the address.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import socket
import ssl
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from socketserver import BaseServer
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from node.dimse.peers import PeerPolicy

LOGGER = logging.getLogger(__name__)

#: seconds a new connection has to send its whole first PDU (``[node] first_pdu_timeout_s``)
DEFAULT_FIRST_PDU_TIMEOUT_S = 5.0


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


class TlsSocket(ssl.SSLSocket):
    """A TLS connection that acknowledges promptly, and replays the first PDU the gate read.

    Set as the server context's ``sslsocket_class`` by :func:`start_server`. ``pending()``
    counts the replayed bytes, so pynetdicom's readiness check (``select`` or ``pending``) sees
    them."""

    _quickack: int | None = None
    _replay: bytes = b""

    def prepare(self, options: PromptAck | None) -> None:
        if options is not None:
            self._quickack = options.quickack
            options.apply(self)

    def replay(self, data: bytes) -> None:
        """Hand ``data`` back to the next reads, before anything still on the connection."""
        self._replay = data + self._replay

    def _rearm(self) -> None:
        if self._quickack is None:
            return
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, self._quickack, 1)

    def pending(self) -> int:
        return len(self._replay) + super().pending()

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._replay:
            data, self._replay = self._replay[:buflen], self._replay[buflen:]
            return data
        self._rearm()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        if self._replay:
            view = memoryview(buffer).cast("B")
            n = min(nbytes or len(view), len(self._replay))
            view[:n], self._replay = self._replay[:n], self._replay[n:]
            return n
        self._rearm()
        return super().recv_into(buffer, nbytes or 0, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        sent = super().send(data, flags)
        self._rearm()
        return sent

    def sendall(self, data: Any, flags: int = 0) -> None:
        super().sendall(data, flags)
        self._rearm()


#: PDU types of PS3.8 Table 9-1 (0x01 A-ASSOCIATE-RQ ... 0x07 A-ABORT)
_PDU_TYPES = frozenset(range(0x01, 0x08))
#: the gate waits for at most this much of a first PDU (a larger one is exotic; the rest is
#: then read by pynetdicom under the network timeout): it fits any socket receive buffer
FIRST_PDU_PEEK_MAX = 32 * 1024
#: A-ASSOCIATE-RQ fixed fields: header (6), protocol version and reserved (4), two AE titles
_CALLED_AE = slice(10, 26)
_CALLING_AE = slice(26, 42)
#: A-ASSOCIATE-RJ reasons (PS3.8 Table 9-21, source 1: DICOM UL service-user)
REJECT_CALLING_AE, REJECT_CALLED_AE = 0x03, 0x07


def printable(raw: bytes) -> str:
    """``raw`` as printable ASCII for a log line: every other byte (and backslash) as ``\\xNN``."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}"
                   for b in raw).strip()


def ae_title_problem(raw: bytes) -> str | None:
    """Why 16 bytes of an A-ASSOCIATE-RQ are not an AE value (PS3.5 section 6.2), or ``None``."""
    if not raw.strip(b" "):
        return "only spaces"
    if any(b < 0x20 or b >= 0x7F or b == 0x5C for b in raw):
        return "control characters, backslash or non-ASCII bytes"
    return None


def reject_pdu(reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU: rejected-permanent (1), DICOM UL service-user (1), ``reason``."""
    return struct.pack(">BBLBBBB", 0x03, 0, 4, 0, 0x01, 0x01, reason)


class FirstPduTimeout(Exception):
    """The peer sent no whole first PDU in time (``received`` bytes of it had arrived)."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


def await_first_pdu(
    sock: socket.socket,
    timeout_s: float,
    stopping: Any = lambda: False,
    slice_s: float = 0.25,
) -> bytes:
    """Peek until the whole first PDU (at most :data:`FIRST_PDU_PEEK_MAX` bytes) is buffered.

    Returns the peeked bytes (b"" when the peer closed first, or when ``stopping()`` became true);
    raises :class:`FirstPduTimeout` when ``timeout_s`` passes first. A first byte that is no PDU
    type returns at once: pynetdicom answers that with an A-ABORT (PS3.8 section 9.2, Evt19).
    Nothing is consumed.
    """
    deadline = time.monotonic() + timeout_s
    need, seen = 6, -1
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FirstPduTimeout(max(seen, 0))
        sock.settimeout(min(remaining, slice_s))
        try:
            data = sock.recv(need, socket.MSG_PEEK)
        except TimeoutError:
            if stopping():
                return b""
            continue
        if not data or data[0] not in _PDU_TYPES:
            return data
        if len(data) >= 6 and need == 6:
            need = 6 + min(struct.unpack(">L", data[2:6])[0], FIRST_PDU_PEEK_MAX)
        if len(data) >= need:
            return data
        if len(data) == seen:  # a part is buffered: readable at once, so wait a little
            if stopping():
                return b""
            time.sleep(min(0.01, max(remaining, 0)))
        seen = len(data)


def read_first_pdu(
    sock: ssl.SSLSocket,
    timeout_s: float,
    stopping: Any = lambda: False,
    slice_s: float = 0.25,
) -> bytes:
    """:func:`await_first_pdu` for a TLS connection, which cannot be peeked: the handshake, then
    the whole first PDU (at most :data:`FIRST_PDU_PEEK_MAX` bytes) is *read*, all within
    ``timeout_s``; the caller hands it back (:meth:`TlsSocket.replay`). Raises
    :class:`FirstPduTimeout` at the deadline and :class:`ssl.SSLError` when the handshake fails.
    """
    deadline = time.monotonic() + timeout_s
    while True:  # the handshake, in slices so that the deadline is the whole handshake's
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FirstPduTimeout(0)
        sock.settimeout(min(remaining, slice_s))
        try:
            sock.do_handshake()
            break
        except TimeoutError:
            if stopping():
                return b""
    data, need = b"", 6
    while len(data) < need:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FirstPduTimeout(len(data))
        sock.settimeout(min(remaining, slice_s))
        try:
            chunk = sock.recv(need - len(data))
        except TimeoutError:
            if stopping():
                return b""
            continue
        if not chunk:
            return b""
        data += chunk
        if data[0] not in _PDU_TYPES:
            return data
        if len(data) >= 6 and need == 6:
            need = 6 + min(struct.unpack(">L", data[2:6])[0], FIRST_PDU_PEEK_MAX)
    return data


class ConnectionLimit:
    """How many accepted connections may wait at once for their first PDU (and TLS handshake),
    in all and from one address; an association, once it runs, is bounded by
    ``AE.maximum_associations`` instead.

    Each waiting connection is a thread until its A-ASSOCIATE-RQ arrives or the first-PDU
    deadline closes it; without a bound, a peer that opens connections faster than that would
    pile up threads until the process can start no more, and then no console gets in. Over
    either bound a connection is closed at once, before any thread is started for it, and said
    in the log (WARNING ``connection refused: too many connections``, at most once per address
    every :data:`LOG_EVERY_S`, with how many were refused since). The bound per address lets a
    console in while another address floods the node.
    """

    LOG_EVERY_S = 10.0

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._count = 0
        self._said: dict[str, tuple[float, int]] = {}  # address: (last said, refused since)

    def admit(self, host: str) -> bool:
        with self._lock:
            held = self._open.get(host, 0)
            if self._count >= self.total or held >= self.per_address:
                self._refused(host, held)
                return False
            self._open[host] = held + 1
            self._count += 1
            return True

    def release(self, host: str) -> None:
        with self._lock:
            held = self._open.get(host, 0)
            if held <= 1:
                self._open.pop(host, None)
            else:
                self._open[host] = held - 1
            self._count = max(0, self._count - 1)

    def _refused(self, host: str, held: int) -> None:
        now = time.monotonic()
        last, since = self._said.get(host, (-math.inf, 0))
        if now - last < self.LOG_EVERY_S:
            self._said[host] = (last, since + 1)
            return
        if len(self._said) > 1000:  # many addresses: forget the oldest, never grow unbounded
            self._said.clear()
        self._said[host] = (now, 0)
        LOGGER.warning("connection refused: too many connections", extra={"fields": {
            "peer_address": host, "open_from_address": held, "open_in_all": self._count,
            "refused_since_last_said": since,
            "setting": "[node] max_connections, max_connections_per_address"}})


class GatedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server whose accept loop does no TLS handshake (module docstring):
    the connection is wrapped unshaken; :class:`PromptAckRequestHandler` shakes hands. With a
    :class:`ConnectionLimit` (``limit``), a connection over it is closed unserved."""

    limit: ConnectionLimit | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True,
                                                  do_handshake_on_connect=False)
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        limit, host = self.limit, str(client_address[0])
        if limit is None:
            return super().process_request(request, client_address)
        if not limit.admit(host):
            self.shutdown_request(request)
            return None
        try:
            return super().process_request(request, client_address)  # starts its thread
        except BaseException:
            limit.release(host)  # no thread: it would never release
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            if self.limit is not None:
                self.limit.release(str(client_address[0]))


class PromptAckRequestHandler(RequestHandler):
    """pynetdicom's :class:`~pynetdicom.transport.RequestHandler` behind the first-PDU gate.

    ``options`` (``None``: pynetdicom's plain socket) gives the connection a
    :class:`PromptAckSocket`; ``first_pdu_timeout_s`` (``None``: no gate) is the deadline of the
    module docstring; ``peers`` the allow-list the gate applies.
    """

    def __init__(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: Any,
        server: BaseServer,
        *,
        options: PromptAck | None,
        first_pdu_timeout_s: float | None = None,
        peers: PeerPolicy | None = None,
    ) -> None:
        self.options = options
        self.first_pdu_timeout_s = first_pdu_timeout_s
        self.peers = peers
        super().__init__(request, client_address, server)  # runs setup() then handle()

    def setup(self) -> None:
        """Swap the accepted socket for one that acknowledges promptly (socketserver's hook)."""
        if self.options is None:
            return
        request = self.request
        if isinstance(request, TlsSocket):
            request.prepare(self.options)
        elif isinstance(request, ssl.SSLSocket):
            self.options.apply(request)  # not ours: OpenSSL reads the descriptor, set once
        elif isinstance(request, socket.socket) and request.type == socket.SOCK_STREAM:
            self.request = PromptAckSocket.adopt(request, self.options)

    def handle(self) -> None:
        """The gate (module docstring), then pynetdicom's association on this connection."""
        sock = self.request
        if not isinstance(sock, socket.socket):
            return super().handle()
        if isinstance(sock, ssl.SSLSocket) and self.first_pdu_timeout_s is None:
            try:  # no gate: only the handshake, under the network timeout
                sock.settimeout(self.server.ae.network_timeout)
                sock.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self._refused_tls(sock, exc)
                return None
        if self.first_pdu_timeout_s is not None:
            try:
                if isinstance(sock, ssl.SSLSocket):
                    first = read_first_pdu(sock, self.first_pdu_timeout_s, self._stopping)
                    if isinstance(sock, TlsSocket):
                        sock.replay(first)
                else:
                    first = await_first_pdu(sock, self.first_pdu_timeout_s, self._stopping)
            except ssl.SSLError as exc:
                self._refused_tls(sock, exc)
                return None
            except FirstPduTimeout as exc:
                LOGGER.warning(
                    "connection closed: no whole first PDU (A-ASSOCIATE-RQ) within %g s",
                    self.first_pdu_timeout_s, extra={"fields": {
                        "peer_address": self._peer(), "bytes_received": exc.received,
                        "setting": "[node] first_pdu_timeout_s"}})
                self._close(sock)
                return None
            except OSError as exc:  # reset by the peer
                LOGGER.info("connection closed before its first PDU",
                            extra={"fields": {"peer_address": self._peer(), "error": repr(exc)}})
                self._close(sock)
                return None
            if not first:
                self._close(sock)
                return None
            if self._rejected(sock, first):
                return None
        sock.settimeout(self.server.ae.network_timeout)
        return super().handle()

    def _stopping(self) -> bool:
        listening = getattr(self.server, "socket", None)
        return listening is None or listening.fileno() < 0

    def _peer(self) -> str:
        host, port = self.client_address[:2]
        return f"{host}:{port}"

    def _refused_tls(self, sock: socket.socket, exc: Exception) -> None:
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) \
            or repr(exc)
        LOGGER.warning("connection refused: TLS handshake failed", extra={"fields": {
            "peer_address": self._peer(), "reason": str(reason)}})
        self._close(sock)

    def _rejected(self, sock: socket.socket, first: bytes) -> bool:
        """Reject an A-ASSOCIATE-RQ whose AE titles are not AE values (module docstring)."""
        if first[0] != 0x01 or len(first) < _CALLING_AE.stop:
            return False
        calling, called = first[_CALLING_AE], first[_CALLED_AE]
        problem = ae_title_problem(calling)
        reason, which = REJECT_CALLING_AE, "calling"
        if problem is None:
            problem = ae_title_problem(called)
            reason, which = REJECT_CALLED_AE, "called"
        if problem is not None:
            message = f"association rejected: the {which} AE title has {problem}"
        elif self.peers and not self.peers.allows(calling.decode("ascii"),
                                                  str(self.client_address[0])):
            message = ("association rejected: the calling AE title may not connect from this "
                       "address ([peers])")
            reason = REJECT_CALLING_AE
        else:
            return False
        LOGGER.warning(message, extra={"fields": {"peer_address": self._peer(),
                                                  "calling_ae_title": printable(calling),
                                                  "called_ae_title": printable(called)}})
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)
            length = 6 + struct.unpack(">L", first[2:6])[0]
            while length > 0:  # read the request: closing with unread data would reset the
                chunk = sock.recv(min(length, 65536))  # connection and lose the rejection
                if not chunk:
                    break
                length -= len(chunk)
            sock.sendall(reject_pdu(reason))
        self._close(sock)
        return True

    def _close(self, sock: socket.socket) -> None:
        self.server.shutdown_request(sock)


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
    first_pdu_timeout_s: float | None = DEFAULT_FIRST_PDU_TIMEOUT_S,
    ssl_context: ssl.SSLContext | None = None,
    peers: PeerPolicy | None = None,
    limit: ConnectionLimit | None = None,
) -> ThreadedAssociationServer:
    """Start a non-blocking association server on ``address`` with ``evt_handlers`` bound.

    Mirrors :meth:`pynetdicom.AE.start_server` (``block=False``): the server is registered with
    ``ae`` so that ``ae.shutdown()`` (or ``server.shutdown()``) stops it, and it serves from a
    daemon thread. With ``prompt_ack`` (the default) its connections acknowledge promptly, see the
    module docstring; ``prompt_ack=False`` gives pynetdicom's plain sockets. A connection must
    send its whole A-ASSOCIATE-RQ within ``first_pdu_timeout_s`` (``None``: pynetdicom's
    behaviour, no gate). With ``ssl_context`` the server speaks DICOM TLS only (its
    ``sslsocket_class`` becomes :class:`TlsSocket`); ``peers`` is the gate's allow-list (it
    needs the gate); ``limit`` bounds the connections open at once (:class:`ConnectionLimit`).
    """
    options: PromptAck | None = None
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
    if peers and first_pdu_timeout_s is None:
        first_pdu_timeout_s = DEFAULT_FIRST_PDU_TIMEOUT_S
    if ssl_context is not None:
        ssl_context.sslsocket_class = TlsSocket
    handler = functools.partial(PromptAckRequestHandler, options=options,
                                first_pdu_timeout_s=first_pdu_timeout_s, peers=peers)
    server = ae.make_server(
        address,
        evt_handlers=evt_handlers,
        ssl_context=ssl_context,
        server_class=GatedAssociationServer,
        request_handler=handler,
    )
    if isinstance(server, GatedAssociationServer):
        server.limit = limit
    timestamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(
        target=make_target(server.serve_forever), name=f"AcceptorServer@{timestamp}", daemon=True
    )
    thread.start()
    # AE.shutdown() stops the servers in this list, and server.shutdown() removes itself from it
    # (pynetdicom's start_server registers its own servers the same way).
    ae._servers.append(server)
    return server
