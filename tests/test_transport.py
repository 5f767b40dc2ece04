"""node.dimse.transport: prompt acknowledgement on the association server's connections.

Servers run in-process on 127.0.0.1, port 0; the sender is DCMTK ``storescu`` with its defaults
(no ``TCP_NODELAY`` in its environment) or a pynetdicom client.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import SpatialRegistrationStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from model.training.synth import SynthConfig, generate, write_set
from node.dimse import transport
from node.dimse.transport import PromptAckSocket, start_server

SUCCESS = 0x0000
LINUX_QUICKACK = hasattr(socket, "TCP_QUICKACK")


def dcmtk(tool: str) -> str:
    """Path of a DCMTK tool (not pynetdicom's apps of the same name, which may come first)."""
    candidates = [shutil.which(tool, path=d) for d in ("/usr/bin", "/usr/local/bin")]
    candidates.append(shutil.which(tool))
    for path in candidates:
        if path is None:
            continue
        probe = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        if "dcmtk" in probe.stdout.lower():
            return path
    if os.environ.get("CI"):
        pytest.fail(f"DCMTK {tool} is not installed")
    pytest.skip(f"DCMTK {tool} is not installed")


def default_sender_env() -> dict[str, str]:
    """The environment of a sender configured as in the field: Nagle left on."""
    return {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}


def scp_ae() -> AE:
    ae = AE(ae_title="TRANSPORT")
    ae.add_supported_context(SpatialRegistrationStorage)
    ae.add_supported_context(Verification)
    return ae


def echo(port: int) -> int:
    client = AE(ae_title="ECHOSCU")
    client.add_requested_context(Verification)
    assoc = client.associate("127.0.0.1", port)
    assert assoc.is_established
    try:
        status = assoc.send_c_echo()
        return int(status.Status)
    finally:
        assoc.release()


def association_socket(event: Event) -> socket.socket:
    """The socket the association's DUL reads and writes."""
    wrapper = event.assoc.dul.socket
    assert wrapper is not None and wrapper.socket is not None
    return wrapper.socket


def tcp_options(sock: socket.socket) -> dict[str, int]:
    options = {"nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)}
    if LINUX_QUICKACK:
        options["quickack"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)
    return options


@pytest.fixture
def ae() -> Iterator[AE]:
    ae = scp_ae()
    yield ae
    ae.shutdown()


@pytest.fixture(scope="module")
def sro_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("sro")
    write_set(generate(SynthConfig(n=40, seed=5)), out)
    return sorted(out.glob("*.dcm"))


def test_accepted_connections_acknowledge_promptly(ae: AE) -> None:
    """Both options are set on the association's socket, and quick-ack is still armed after the
    node has answered (the kernel leaves quick-ack mode when we send; the transport re-arms it)."""
    seen: list[tuple[str, dict[str, int]]] = []

    def on_echo(event: Event) -> int:
        sock = association_socket(event)
        seen.append((type(sock).__name__, tcp_options(sock)))
        return SUCCESS

    server = start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_ECHO, on_echo)])
    port = server.server_address[1]
    client = AE(ae_title="ECHOSCU")
    client.add_requested_context(Verification)
    assoc = client.associate("127.0.0.1", port)
    assert assoc.is_established
    try:
        for _ in range(3):  # the 2nd and 3rd are read after the node has sent responses
            assert assoc.send_c_echo().Status == SUCCESS
    finally:
        assoc.release()

    expected = {"nodelay": 1, "quickack": 1} if LINUX_QUICKACK else {"nodelay": 1}
    assert seen == [(PromptAckSocket.__name__, expected)] * 3


def test_plain_pynetdicom_server_lacks_the_options(ae: AE) -> None:
    """The baseline the other tests compare with: pynetdicom's own transport sets neither."""
    seen: list[dict[str, int]] = []

    def on_echo(event: Event) -> int:
        seen.append(tcp_options(association_socket(event)))
        return SUCCESS

    server = start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_ECHO, on_echo)], prompt_ack=False)
    assert echo(server.server_address[1]) == SUCCESS
    assert seen[0]["nodelay"] == 0


def push_with_storescu(files: list[Path], port: int) -> float:
    """Seconds a default-configured DCMTK storescu takes to send ``files`` in one association."""
    start = time.perf_counter()
    result = subprocess.run(
        [dcmtk("storescu"), "127.0.0.1", str(port), *map(str, files)],
        env=default_sender_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    return elapsed


@pytest.mark.skipif(not LINUX_QUICKACK, reason="TCP_QUICKACK is Linux-only")
def test_default_storescu_is_not_stalled(sro_files: list[Path]) -> None:
    """40 objects from a default storescu: the plain server waits for the delayed ACK on every
    object (about 40 ms each); ours does not. Compared in the same test, with a generous ratio."""
    received: dict[bool, int] = {True: 0, False: 0}
    elapsed: dict[bool, float] = {}
    for prompt in (True, False):
        ae = scp_ae()

        def on_store(event: Event, prompt: bool = prompt) -> int:
            received[prompt] += 1
            return SUCCESS

        server = start_server(
            ae, ("127.0.0.1", 0), [(evt.EVT_C_STORE, on_store)], prompt_ack=prompt
        )
        try:
            elapsed[prompt] = push_with_storescu(sro_files, server.server_address[1])
        finally:
            ae.shutdown()

    assert received == {True: len(sro_files), False: len(sro_files)}
    assert elapsed[True] * 3 < elapsed[False], elapsed


def test_without_quickack_falls_back_and_logs_once(
    ae: AE, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the platform has no TCP_QUICKACK the node still serves, with TCP_NODELAY, and the
    log says so once however many associations arrive."""
    monkeypatch.delattr(socket, "TCP_QUICKACK", raising=False)
    nodelay: list[int] = []

    def on_echo(event: Event) -> int:
        sock = association_socket(event)
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return SUCCESS

    with caplog.at_level(logging.INFO, logger=transport.__name__):
        server = start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_ECHO, on_echo)])
        port = server.server_address[1]
        assert [echo(port), echo(port)] == [SUCCESS, SUCCESS]

    warnings = [
        r for r in caplog.records
        if r.name == transport.__name__ and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "TCP_QUICKACK is not available" in warnings[0].getMessage()
    assert nodelay == [1, 1]


def test_ae_shutdown_stops_the_server() -> None:
    ae = scp_ae()
    server = start_server(ae, ("127.0.0.1", 0), [])
    assert isinstance(server, ThreadedAssociationServer)
    port = server.server_address[1]
    assert echo(port) == SUCCESS
    acceptors = [t for t in threading.enumerate() if t.name.startswith("AcceptorServer@")]
    assert any(t.daemon for t in acceptors)

    ae.shutdown()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert server not in ae._servers


def test_poll_interval_is_shared_by_the_open_associations(ae: AE) -> None:
    """A lone association polls every interval; with two open, each polls every 2 × interval;
    closing one gives the other the short interval back."""
    budget = transport.PollBudget(0.0003)
    seen: list[float] = []

    def on_echo(event: Event) -> int:
        seen.append(event.assoc.dul._run_loop_delay)
        return SUCCESS

    server = start_server(ae, ("127.0.0.1", 0), [*budget.handlers(), (evt.EVT_C_ECHO, on_echo)])
    port = server.server_address[1]
    client = AE(ae_title="ECHOSCU")
    client.add_requested_context(Verification)
    first = client.associate("127.0.0.1", port)
    assert first.send_c_echo().Status == SUCCESS
    second = client.associate("127.0.0.1", port)
    assert second.send_c_echo().Status == SUCCESS
    assert first.send_c_echo().Status == SUCCESS
    second.release()
    deadline = time.monotonic() + 5
    while len(ae.active_associations) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert first.send_c_echo().Status == SUCCESS
    first.release()
    assert seen == [0.0003, 0.0006, 0.0006, 0.0003]
    assert budget.delay_s(10) == 0.001  # never slower than pynetdicom's own polling


def test_poll_interval_without_a_run_loop_delay_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Assoc:
        dul = object()  # a pynetdicom whose DUL has no run-loop delay

    class Ev:
        assoc = Assoc()

    budget = transport.PollBudget(0.0002)
    with caplog.at_level(logging.WARNING, logger="node.dimse.transport"):
        budget.on_open(Ev())
        budget.on_open(Ev())
    assert [r.message for r in caplog.records].count(
        "this pynetdicom has no DUL run-loop delay; [node] poll_interval_ms has no effect") == 1


def test_serve_binds_no_standard_event_logging(ae: AE, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sro-decoder serve`` turns pynetdicom's per-PDU logging handlers off (their output is
    below the WARNING level the node keeps for pynetdicom anyway)."""
    from pynetdicom import _config

    from node.dimse.service import quiet_pynetdicom_event_logs

    bound: list[int] = []

    def on_echo(event: Event) -> int:
        bound.append(len(event.assoc.get_handlers(evt.EVT_PDU_RECV)))
        return SUCCESS

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "standard")
    server = start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_ECHO, on_echo)])
    assert echo(server.server_address[1]) == SUCCESS
    server.shutdown()
    quiet_pynetdicom_event_logs()  # before the server exists, as serve does
    assert _config.LOG_HANDLER_LEVEL == "none"
    server = start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_ECHO, on_echo)])
    assert echo(server.server_address[1]) == SUCCESS
    assert bound[0] >= 1 and bound[1] == 0


def test_a_connection_without_its_first_pdu_is_no_association(ae: AE) -> None:
    """PS3.8 9.1.5: until its A-ASSOCIATE-RQ is in, a connection holds no association slot,
    and it is closed when the first-PDU deadline passes."""
    ae.maximum_associations = 1
    server = start_server(ae, ("127.0.0.1", 0), [], first_pdu_timeout_s=0.5)
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=3) as half_open:
        half_open.sendall(b"\x01\x00")  # two bytes of an A-ASSOCIATE-RQ, then nothing
        time.sleep(0.1)
        assert server.active_associations == []
        assert echo(port) == SUCCESS  # the one slot is free for a real association
        start = time.monotonic()
        assert half_open.recv(10) == b""  # closed by the node at the deadline
        assert time.monotonic() - start < 1.5


def test_server_shutdown_does_not_wait_for_the_first_pdu_deadline() -> None:
    ae = scp_ae()
    start_server(ae, ("127.0.0.1", 0), [], first_pdu_timeout_s=20)
    port = ae._servers[0].server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        time.sleep(0.1)
        start = time.monotonic()
        ae.shutdown()
        assert time.monotonic() - start < 2.0


def test_an_association_reads_under_the_network_timeout(ae: AE) -> None:
    """After the gate the connection's reads time out (a peer dead inside a PDU frees its slot)."""
    ae.network_timeout = 7
    timeouts: list[float | None] = []

    def on_echo(event: Event) -> int:
        timeouts.append(association_socket(event).gettimeout())
        return SUCCESS

    server = start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_ECHO, on_echo)])
    assert echo(server.server_address[1]) == SUCCESS
    assert timeouts == [7]
