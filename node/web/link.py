"""The link between ``sro-decoder serve`` and its web console process (``[web] enabled``).

The web console runs in a process of its own (:mod:`node.web.process`), so that whatever it
loads or does never slows the DICOM listener; what it needs of the node goes over this link:

- ``store``: one PS3.10 file received by STOW-RS (PS3.18 section 10.5), stored by the node's
  :meth:`node.ingest.receipt.StoreHandler.receive_part10` (archive, decode, record, answer),
  exactly as when the web application ran in the node's process;
- ``metrics``: the node's counters in the Prometheus text format;
- ``ping``: whether the node answers (``/readyz``).

The link is a set of anonymous ``AF_UNIX`` socket pairs made by the node before it starts the
web process, which inherits only its ends: nobody else can reach them, so no address, file
permission or credential is involved. One request at a time per socket; the web process holds a
pool of them (several STOW-RS requests at once). A frame is two unsigned 32-bit lengths (network
order), a JSON header and a body of raw bytes.

The first socket is the control socket: the node sends the settings on it, the web process
answers when it listens; when the node's process ends, by any means, the web process reads the
end of that socket and stops (it never outlives its node).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import queue
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

from node.ingest.receipt import Stored
from node.metrics import Metrics
from node.records import Origin, Source

log = logging.getLogger("node.web.link")

_LENGTHS = struct.Struct("!II")
#: the longest header and body a frame may carry (a STOW-RS part is one SRO, kilobytes)
HEADER_MAX = 1 << 20
BODY_MAX = 1 << 30
#: how long one request over the link may take (a store waits for its decode and commit)
REQUEST_TIMEOUT_S = 120.0


class LinkError(OSError):
    """The other end of the link is gone or answered out of turn."""


class PartStore(Protocol):
    """What STOW-RS needs of the node: :meth:`StoreHandler.receive_part10`."""

    def receive_part10(self, data: bytes, origin: Origin) -> Stored: ...


def send_frame(sock: socket.socket, header: dict[str, Any], body: bytes = b"") -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(_LENGTHS.pack(len(head), len(body)) + head + body)


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise LinkError("the other end of the link closed it")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """One frame; :class:`LinkError` at the end of the stream or on a malformed frame."""
    head_n, body_n = _LENGTHS.unpack(_exactly(sock, _LENGTHS.size))
    if head_n > HEADER_MAX or body_n > BODY_MAX:
        raise LinkError(f"frame too long ({head_n} + {body_n} bytes)")
    try:
        header = json.loads(_exactly(sock, head_n))
    except ValueError as exc:
        raise LinkError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise LinkError("frame header is not a JSON object")
    return header, _exactly(sock, body_n) if body_n else b""


def origin_json(origin: Origin) -> dict[str, Any]:
    out = asdict(origin)
    out["received_at"] = origin.received_at.isoformat()
    out["source"] = origin.source.value
    return out


def origin_from_json(data: dict[str, Any]) -> Origin:
    return Origin(calling_ae_title=data["calling_ae_title"],
                  called_ae_title=data["called_ae_title"],
                  peer_address=data["peer_address"], association_id=data["association_id"],
                  received_at=dt.datetime.fromisoformat(data["received_at"]),
                  source=Source(data["source"]))


# --- the node's end ---------------------------------------------------------------------------


class NodeEnd:
    """The node's side: one thread per socket answers the web process's requests until it
    closes its end (or the node stops)."""

    def __init__(self, store: PartStore, metrics: Metrics, sockets: list[socket.socket]) -> None:
        self._store = store
        self._metrics = metrics
        self._sockets = sockets
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i, sock in enumerate(self._sockets):
            t = threading.Thread(target=self._serve, args=(sock,), name=f"web-link-{i}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in self._threads:
            t.join(5)

    def answer(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        op = header.get("op")
        if op == "store":
            stored = self._store.receive_part10(body, origin_from_json(header["origin"]))
            return {"stored": asdict(stored)}, b""
        if op == "metrics":
            return {"ok": True}, self._metrics.exposition().encode()
        if op == "ping":
            return {"ok": True}, b""
        raise ValueError(f"unknown request {op!r}")

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            while True:
                try:
                    header, body = recv_frame(sock)
                except (OSError, ValueError):
                    return  # the web process has gone (or the node stops, or it sent garbage)
                try:
                    reply, data = self.answer(header, body)
                except Exception as exc:  # answered, never a dead thread: the web says why
                    log.exception("web link request failed", extra={"fields": {
                        "op": str(header.get("op"))[:40]}})
                    reply, data = {"error": f"{type(exc).__name__}: {exc}"[:1000]}, b""
                try:
                    send_frame(sock, reply, data)
                except OSError:
                    return


# --- the web process's end --------------------------------------------------------------------


class WebEnd:
    """The web process's side: a pool of sockets, one request on each at a time. Acts as the
    node's :class:`PartStore`; :meth:`metrics_text` and :meth:`alive` for ``/metrics`` and
    ``/readyz``. A socket that fails is dropped (its stream may be out of step)."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self._pool: queue.Queue[socket.socket] = queue.Queue()
        self._live = len(sockets)
        self._lock = threading.Lock()
        for sock in sockets:
            sock.settimeout(REQUEST_TIMEOUT_S)
            self._pool.put(sock)

    def _request(self, header: dict[str, Any], body: bytes = b"",
                 timeout: float = REQUEST_TIMEOUT_S) -> tuple[dict[str, Any], bytes]:
        with self._lock:
            if self._live == 0:
                raise LinkError("the DICOM node does not answer (no link left)")
        try:
            sock = self._pool.get(timeout=timeout)
        except queue.Empty:
            raise LinkError("the DICOM node is busy: no link free") from None
        try:
            sock.settimeout(timeout)
            send_frame(sock, header, body)
            reply, data = recv_frame(sock)
        except (OSError, ValueError) as exc:
            sock.close()
            with self._lock:
                self._live -= 1
            raise LinkError(f"the DICOM node does not answer: {exc}") from None
        self._pool.put(sock)
        if "error" in reply:
            raise LinkError(f"the DICOM node failed: {reply['error']}")
        return reply, data

    def receive_part10(self, data: bytes, origin: Origin) -> Stored:
        reply, _ = self._request({"op": "store", "origin": origin_json(origin)}, data)
        s = reply["stored"]
        return Stored(int(s["status"]), s["comment"], s["sop_class_uid"], s["sop_instance_uid"])

    def metrics_text(self) -> str:
        return self._request({"op": "metrics"}, timeout=10.0)[1].decode()

    def alive(self) -> bool:
        try:
            self._request({"op": "ping"}, timeout=5.0)
        except LinkError:
            return False
        return True


class LinkedMetrics(Metrics):
    """The web process's ``/metrics``: the node's counters (over the link), then the gauges
    registered here (the outbox's, read from the database)."""

    def __init__(self, node_text: Callable[[], str]) -> None:
        super().__init__()
        self._node_text = node_text

    def exposition(self) -> str:
        try:
            node = self._node_text()
        except LinkError:
            node = ""  # the node's counters are missing: the scrape shows node_link_up 0
        up = 1 if node else 0
        return (node + f"# HELP sro_decoder_node_link_up Whether the DICOM node answered this "
                f"scrape\n# TYPE sro_decoder_node_link_up gauge\nsro_decoder_node_link_up {up}\n"
                + self.gauge_lines())
