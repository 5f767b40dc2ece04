"""The peer allow-list: which addresses each calling AE title may connect from (``[peers]``).

An A-ASSOCIATE-RQ whose calling AE title is listed, from an address none of its entries covers,
is rejected at the transport's gate (:mod:`node.dimse.transport`) with an A-ASSOCIATE-RJ,
rejected-permanent, DICOM UL service-user, reason 3, calling AE title not recognized (PS3.8
section 9.3.4, Table 9-21), and logged with the address. Entries are address ranges (CIDR, a
single address is a range of one) or host names; a host name covers the addresses it resolves
to, looked up again after :data:`RESOLVE_TTL_S`. Calling AE titles that are not listed are not
address-checked (``[node] allowed_calling_ae_titles`` decides those).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: seconds a host name's addresses are reused before they are looked up again
RESOLVE_TTL_S = 60.0


def resolve(host: str) -> frozenset[IPAddress]:
    """The addresses ``host`` resolves to now (none when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return frozenset()
    found: set[IPAddress] = set()
    for info in infos:
        try:
            found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    return frozenset(found)


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass
class PeerPolicy:
    """``[peers]``: calling AE title -> address ranges and host names (module docstring)."""

    ranges: dict[str, tuple[IPNetwork, ...]]
    hosts: dict[str, tuple[str, ...]]
    resolver: Callable[[str], frozenset[IPAddress]] = resolve
    _cache: dict[str, tuple[float, frozenset[IPAddress]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, peers: Mapping[str, Sequence[str]]) -> PeerPolicy:
        ranges: dict[str, tuple[IPNetwork, ...]] = {}
        hosts: dict[str, tuple[str, ...]] = {}
        for title, entries in peers.items():
            nets, names = [], []
            for entry in entries:
                try:
                    nets.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    names.append(entry)
            ranges[title.strip()], hosts[title.strip()] = tuple(nets), tuple(names)
        return cls(ranges, hosts)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def allows(self, calling_ae_title: str, peer_host: str) -> bool:
        """Whether ``calling_ae_title`` may associate from ``peer_host`` (an address)."""
        title = calling_ae_title.strip()
        if title not in self.ranges:
            return True
        address = _address(peer_host)
        if address is None:
            return False
        if any(address in net for net in self.ranges[title]):
            return True
        return any(address in self._addresses(name) for name in self.hosts[title])

    def _addresses(self, host: str) -> frozenset[IPAddress]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(host)
        if cached is not None and now - cached[0] < RESOLVE_TTL_S:
            return cached[1]
        found = frozenset(a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address)
                          and a.ipv4_mapped is not None else a for a in self.resolver(host))
        with self._lock:
            self._cache[host] = (now, found)
        return found
