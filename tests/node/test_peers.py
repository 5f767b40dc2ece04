"""The peer allow-list on real sockets (``[peers]``; PS3.8 section 9.3.4): a calling AE title
may associate only from the address ranges and host names listed for it. On Linux all of
127.0.0.0/8 is this machine, so a sender bound to 127.0.0.2 is "another host"."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.dimse.peers import PeerPolicy
from node.dimse.service import Node
from node.settings import Settings, SettingsError, load_settings
from tests.node.conftest import make_settings
from tests.node.test_hostile_peers import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, associate_rq, read_pdu

PEERS = {"CONSOLE1": ["127.0.0.1/32"], "CONSOLE2": ["localhost", "10.9.0.0/16"]}


def answer(port: int, calling: str, source: str) -> tuple[int, bytes]:
    """The first PDU the node answers an A-ASSOCIATE-RQ from ``source`` with."""
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(associate_rq(calling.encode()))
        return read_pdu(sock)


def echo_from(port: int, calling: str, source: str) -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER", bind_address=(source, 0))
    established = assoc.is_established
    if established:
        assoc.release()
    return established


@pytest.fixture
def node(tmp_path: Path, node_factory: Callable[[Settings], Node]) -> Node:
    return node_factory(make_settings(tmp_path / "data", peers=PEERS))


@pytest.mark.parametrize(("calling", "source", "accepted"), [
    ("CONSOLE1", "127.0.0.1", True),
    ("CONSOLE1", "127.0.0.2", False),
    ("CONSOLE2", "127.0.0.1", True),   # localhost resolves to 127.0.0.1
    ("CONSOLE2", "127.0.0.2", False),
    ("OTHER", "127.0.0.2", True),      # not listed: not address-checked
])
def test_a_calling_ae_title_only_from_its_addresses(
    node: Node, calling: str, source: str, accepted: bool, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="node.dimse.transport")
    pdu_type, body = answer(node.address[1], calling, source)
    if accepted:
        assert pdu_type == A_ASSOCIATE_AC
        assert echo_from(node.address[1], calling, source)
        return
    # rejected-permanent (1), DICOM UL service-user (1), calling AE title not recognized (3)
    assert (pdu_type, body[1:4]) == (A_ASSOCIATE_RJ, bytes([1, 1, 3]))
    assert not echo_from(node.address[1], calling, source)
    lines = [getattr(r, "fields", {}) for r in caplog.records if "[peers]" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0]["peer_address"].startswith(f"{source}:")
    assert lines[0]["calling_ae_title"] == calling


def test_peers_from_the_environment_and_a_wrong_entry_named(tmp_path: Path) -> None:
    s = load_settings(env={"SRO_DECODER_PEERS__CONSOLE1": "10.0.0.0/8, xvi-1.hospital.org"})
    assert dict(s.peers) == {"CONSOLE1": ("10.0.0.0/8", "xvi-1.hospital.org")}
    with pytest.raises(SettingsError, match=r"\[peers\] CONSOLE1.*neither an address"):
        make_settings(tmp_path, peers={"CONSOLE1": ["10.0.0.0/8", "bad host!"]})
    with pytest.raises(SettingsError, match=r"\[peers\]"):
        make_settings(tmp_path, peers={"BAD\\TITLE": ["10.0.0.1"]})


def test_the_policy_matches_ranges_mapped_addresses_and_resolved_names() -> None:
    looked_up: list[str] = []

    def resolver(host: str) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        looked_up.append(host)
        return frozenset({ipaddress.ip_address("192.0.2.7")})

    policy = PeerPolicy.from_settings({"XVI": ["10.1.0.0/16", "2001:db8::/32", "xvi.example"]})
    policy.resolver = resolver
    assert policy.allows("XVI", "10.1.200.3")
    assert policy.allows("XVI", "::ffff:10.1.0.9")      # an IPv4-mapped IPv6 peer
    assert policy.allows("XVI", "2001:db8::5")
    assert policy.allows("XVI", "192.0.2.7") and policy.allows("XVI", "192.0.2.7")
    assert looked_up == ["xvi.example"]                # cached
    assert not policy.allows("XVI", "10.2.0.1")
    assert not policy.allows("XVI", "not an address")
    assert policy.allows("ANYONE", "203.0.113.1")
