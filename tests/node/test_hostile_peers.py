"""Hostile peers on a real socket: half-open connections, dead peers and malformed requests.

PS3.8 section 9.1.5 (ARTIM: a connection that sends no A-ASSOCIATE-RQ is closed), section 9.3.4
(A-ASSOCIATE-RJ) and PS3.7 section 9.1.1 (C-STORE). The peers here write raw PDUs (PS3.8
section 9.3) so that they can send what no well-behaved library would: two bytes and silence, a
calling AE title with control characters, an Affected SOP Instance UID of more than 64
characters.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import SpatialRegistrationStorage, Verification  # type: ignore[attr-defined]

from model.dicom.statuses import StoreStatus
from tests.node.conftest import echo_ok, echoscu, export, make_settings, needs_dcmtk
from tests.node.test_bad_input import base_sro

FIRST_PDU_TIMEOUT_S = 1.0
MARGIN_S = 2.0

A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_ABORT = 0x02, 0x03, 0x04, 0x07


# --- a raw peer ---------------------------------------------------------------------------


def associate_rq(calling: bytes = b"CONSOLE1", storage: bool = False) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 section 9.3.2); ``calling`` goes in as raw bytes."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "CALLINGXXXXXXXXX"
    primitive.called_ae_title = "SRO_DECODER"
    cx = build_context(SpatialRegistrationStorage if storage else Verification,
                       [ExplicitVRLittleEndian] if storage else [ImplicitVRLittleEndian])
    cx.context_id = 1
    primitive.presentation_context_definition_list = [cx]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16382
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.9999.1"
    primitive.user_information = [max_length, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    data = bytearray(pdu.encode())
    # PDU header (6), protocol version (2), reserved (2), called AE (16), calling AE (16)
    data[26:42] = calling.ljust(16, b" ")[:16]
    return bytes(data)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One whole PDU: ``(type, body)``."""
    header = recv_exactly(sock, 6)
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, recv_exactly(sock, length)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def address(sock: socket.socket) -> str:
    """``host:port`` of our end, as the node logs the peer."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """A P-DATA-TF PDU holding one PDV (PS3.8 section 9.3.5 and Annex E)."""
    pdv = struct.pack(">LBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBL", P_DATA_TF, 0, len(pdv)) + pdv


def c_store_rq(sop_instance_uid: str) -> bytes:
    """A C-STORE-RQ command set, Implicit VR Little Endian (PS3.7 section 9.3.1.1)."""
    cmd = Dataset()
    cmd.AffectedSOPClassUID = SpatialRegistrationStorage
    cmd.CommandField = 0x0001
    cmd.MessageID = 1
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = sop_instance_uid
    body = encode(cmd, True, True)
    assert body is not None
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def command_of(body: bytes) -> Dataset:
    """The command set of a P-DATA-TF body holding one whole command PDV."""
    length, _context, control = struct.unpack(">LBB", body[:6])
    assert control & 0x01, "not a command fragment"
    return decode(io.BytesIO(body[6:4 + length]), True, True)


@contextlib.contextmanager
def half_open(port: int, n: int, payload: bytes) -> Iterator[list[socket.socket]]:
    """``n`` peers that connect, send ``payload`` (perhaps nothing) and then say nothing."""
    socks = [connect(port) for _ in range(n)]
    try:
        for s in socks:
            if payload:
                s.sendall(payload)
        yield socks
    finally:
        for s in socks:
            s.close()


def echo_within(port: int, budget_s: float) -> float | None:
    """Seconds until a C-ECHO from a console succeeds (``None``: not within ``budget_s``)."""
    start = time.monotonic()
    while time.monotonic() - start < budget_s:
        if echo_ok(port):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def hostile_settings(tmp_path: Path, **node: Any) -> Any:
    return make_settings(tmp_path / "data", node={
        "max_associations": 2, "first_pdu_timeout_s": FIRST_PDU_TIMEOUT_S, **node})


# --- half-open connections and dead peers ------------------------------------------------


@pytest.mark.parametrize("payload", [b"\x01\x00", b""], ids=["two-bytes", "silent"])
def test_half_open_connections_do_not_keep_a_console_out(
    payload: bytes, tmp_path: Path, node_factory: Any
) -> None:
    port = node_factory(hostile_settings(tmp_path)).address[1]
    with half_open(port, 3, payload):  # more than max_associations
        time.sleep(0.2)  # all accepted before the console comes
        waited = echo_within(port, FIRST_PDU_TIMEOUT_S + MARGIN_S)
    assert waited is not None, "the console was kept out by connections that sent no request"


def test_a_half_open_connection_is_closed_after_the_first_pdu_timeout(
    tmp_path: Path, node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = node_factory(hostile_settings(tmp_path)).address[1]
    caplog.set_level(logging.INFO)
    with half_open(port, 1, b"\x01\x00") as (sock,):
        local = address(sock)
        sock.settimeout(FIRST_PDU_TIMEOUT_S + MARGIN_S)
        start = time.monotonic()
        try:
            closed = sock.recv(100) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        waited = time.monotonic() - start
    assert closed, "the node kept a connection that sent two bytes and nothing more"
    assert FIRST_PDU_TIMEOUT_S * 0.5 <= waited <= FIRST_PDU_TIMEOUT_S + MARGIN_S
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("peer_address") == local]
    assert lines, "the dropped connection was not logged with its address"
    assert "first PDU" in lines[0].getMessage()


def test_a_slow_but_complete_request_is_still_served(tmp_path: Path, node_factory: Any) -> None:
    """A request that trickles in within the deadline is an ordinary association."""
    port = node_factory(hostile_settings(tmp_path)).address[1]
    rq = associate_rq()
    with connect(port) as sock:
        for i in range(0, len(rq), 16):
            sock.sendall(rq[i:i + 16])
            time.sleep(FIRST_PDU_TIMEOUT_S / 2 / (len(rq) / 16))
        pdu_type, _ = read_pdu(sock)
    assert pdu_type == A_ASSOCIATE_AC


def test_a_dead_peer_mid_pdu_frees_its_slot(tmp_path: Path, node_factory: Any) -> None:
    """An association whose peer stops inside a PDU ends after the network timeout."""
    settings = hostile_settings(tmp_path, max_associations=1, network_timeout_s=1.0)
    port = node_factory(settings).address[1]
    with connect(port) as dead:
        dead.sendall(associate_rq())
        assert read_pdu(dead)[0] == A_ASSOCIATE_AC
        dead.sendall(b"\x04\x00")  # the start of a P-DATA-TF, then nothing
        time.sleep(0.2)
        assert not echo_ok(port)  # the one slot is taken
        waited = echo_within(port, 1.0 + MARGIN_S + 1.0)
    assert waited is not None, "a peer that died inside a PDU kept its association slot"


@needs_dcmtk
def test_dcmtk_echoscu_gets_through_half_open_peers(tmp_path: Path, node_factory: Any) -> None:
    port = node_factory(hostile_settings(tmp_path)).address[1]
    with half_open(port, 4, b"\x01\x00"):
        time.sleep(0.2)
        start = time.monotonic()
        proc = echoscu(port)
        waited = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert waited < FIRST_PDU_TIMEOUT_S + MARGIN_S


def connect_from(source: str, port: int) -> socket.socket:
    """A connection from another loopback address (Linux answers all of 127.0.0.0/8)."""
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_at_once(sock: socket.socket, within_s: float = 0.5) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_flood_from_one_address_is_bounded_and_keeps_no_console_out(
    tmp_path: Path, node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Over ``max_connections_per_address`` waiting connections from one address, the next is
    closed at once, unserved, and said once; a console from another address gets in; the
    bound frees as the flood's connections close."""
    settings = hostile_settings(tmp_path, max_connections_per_address=3, max_connections=50,
                                first_pdu_timeout_s=FIRST_PDU_TIMEOUT_S * 3)
    port = node_factory(settings).address[1]
    caplog.set_level(logging.WARNING)
    flood = [connect_from("127.0.0.2", port) for _ in range(3)]
    try:
        time.sleep(0.2)
        refused = [connect_from("127.0.0.2", port) for _ in range(5)]
        assert all(closed_at_once(s) for s in refused), "a fourth waiting connection was kept"
        assert echo_ok(port), "a console from another address was kept out"
        said = [r for r in caplog.records
                if r.getMessage() == "connection refused: too many connections"]
        assert len(said) == 1, [r.getMessage() for r in said]  # once, not once a connection
        assert said[0].fields["peer_address"] == "127.0.0.2"  # type: ignore[attr-defined]
        assert said[0].fields["open_from_address"] == 3  # type: ignore[attr-defined]
        for s in refused:
            s.close()
    finally:
        for s in flood:
            s.close()
    time.sleep(0.3)  # their threads end with them
    with connect_from("127.0.0.2", port) as again:
        again.sendall(associate_rq())
        assert read_pdu(again)[0] == A_ASSOCIATE_AC, "the bound was not freed"


def test_waiting_connections_in_all_are_bounded(tmp_path: Path, node_factory: Any) -> None:
    settings = hostile_settings(tmp_path, max_connections_per_address=10, max_connections=4,
                                first_pdu_timeout_s=FIRST_PDU_TIMEOUT_S * 3)
    port = node_factory(settings).address[1]
    flood = [connect_from(f"127.0.0.{2 + i % 2}", port) for i in range(4)]
    try:
        time.sleep(0.2)
        with connect_from("127.0.0.4", port) as fifth:
            assert closed_at_once(fifth)
    finally:
        for s in flood:
            s.close()
    time.sleep(0.3)
    assert echo_ok(port)


# --- malformed requests --------------------------------------------------------------------


def test_calling_ae_title_with_control_characters_is_rejected_and_logged(
    tmp_path: Path, node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = node_factory(hostile_settings(tmp_path)).address[1]
    caplog.set_level(logging.INFO)
    with connect(port) as sock:
        local = address(sock)
        sock.sendall(associate_rq(b"CON\x1b[2J\r\nSOLE"))
        pdu_type, body = read_pdu(sock)
    assert pdu_type == A_ASSOCIATE_RJ
    _, result, source, reason = struct.unpack(">BBBB", body[:4])
    # PS3.8 Table 9-21: rejected-permanent, DICOM UL service-user, calling AE title not recognized
    assert (result, source, reason) == (0x01, 0x01, 0x03)
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("peer_address") == local]
    assert lines and "rejected" in lines[0].getMessage()
    title = lines[0].fields["calling_ae_title"]  # type: ignore[attr-defined]
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in title)
    assert "CON" in title and "SOLE" in title
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert echo_ok(port)


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # pydicom, on our own UID
def test_request_uid_longer_than_64_characters_is_recorded_invalid(
    tmp_path: Path, node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = hostile_settings(tmp_path)
    port = node_factory(settings).address[1]
    long_uid = "1.2.826.0.1.3680043.9.9999." + "1" * 60
    assert len(long_uid) > 64
    ds = base_sro()
    ds.SOPInstanceUID = long_uid
    data = encode(ds, False, True)
    assert data is not None
    caplog.set_level(logging.INFO)
    with connect(port) as sock:
        sock.sendall(associate_rq(storage=True))
        assert read_pdu(sock)[0] == A_ASSOCIATE_AC
        sock.sendall(p_data(1, 0x03, c_store_rq(long_uid)))
        sock.sendall(p_data(1, 0x02, data))
        pdu_type, body = read_pdu(sock)
    assert pdu_type == P_DATA_TF, "the node aborted instead of answering the C-STORE"
    rsp = command_of(body)
    assert int(rsp.Status) == StoreStatus.CANNOT_UNDERSTAND
    assert "64" in str(rsp.ErrorComment)
    rows = [r for r in export(settings.data_dir).values() if r["source"] == "c-store"]
    assert len(rows) == 1
    row = rows[0]
    assert row["decision"] == "invalid"
    assert row["reason_code"] == "request_uid_too_long"
    assert "64" in row["reason"]
    assert row["dimse_status"] == StoreStatus.CANNOT_UNDERSTAND
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert echo_ok(port)
