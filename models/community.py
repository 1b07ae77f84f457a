"""Community ID v1 (corelight's community-id-spec): the flow hash that Zeek, Suricata, Arkime,
Wireshark and Elastic share to join their records of one connection.

``1:`` + base64(SHA-1(seed as 2 bytes big-endian + source address + destination address +
protocol (1 byte) + a zero byte + source port + destination port)), over the endpoints put in
order: the smaller address first (network byte order), and on equal addresses the smaller
port. Both directions of a connection share the ID. Ports are hashed only for the protocols
that have them in the spec (TCP, UDP, SCTP, ICMP and ICMPv6, where the message type and code
stand in for the ports, mapped as Zeek maps them so that a request and its reply share an ID);
other protocols hash the addresses and protocol only.

:func:`community_id` is the whole algorithm, for any tuple. :func:`flow_community_id` is what
flowherd reports for a flow key, whose ports are TCP/UDP ports only (as tshark's, which the
oracle follows): it is ``None`` for ICMP and ICMPv6 (the key has no type and code, and one
flowherd ICMP flow holds every message type two hosts exchanged, so no single ID describes it)
and for SCTP (the key has no SCTP ports). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Callable

__all__ = ["NO_ID_PROTOS", "PORT_PROTOS", "community_id", "flow_community_id", "key_hasher"]

ICMP, TCP, UDP, ICMP6, SCTP = 1, 6, 17, 58, 132
#: Protocols whose tuple includes ports (ICMP/ICMPv6: type and code) in the spec.
PORT_PROTOS = frozenset({ICMP, TCP, UDP, ICMP6, SCTP})
#: Protocols for which a flowherd flow key lacks what the spec hashes: no ID is reported.
NO_ID_PROTOS = frozenset({ICMP, ICMP6, SCTP})

# Zeek's pairing of ICMP message types (request <-> reply), as the spec takes it.
_ICMP_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {
    128: 129,
    129: 128,
    130: 131,
    131: 130,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    139: 140,
    140: 139,
    144: 145,
    145: 144,
}
_PROTO_PAD = [struct.pack("!BB", p, 0) for p in range(256)]


def community_id(
    src: bytes, dst: bytes, proto: int, sport: int = 0, dport: int = 0, seed: int = 0
) -> str:
    """The Community ID v1 of a flow tuple (base64 form, e.g. ``1:LQU9qZlK+B5F3KDmev6m5PMibrg=``).

    ``src``/``dst`` are packed addresses (4 or 16 bytes each, the same family); ``sport`` and
    ``dport`` are ports (for ICMP/ICMPv6: the message type and code), ignored for protocols
    outside :data:`PORT_PROTOS`. Raises :class:`ValueError` for a seed, protocol or port out of
    range or mismatched addresses.
    """
    if not 0 <= seed <= 0xFFFF:
        raise ValueError(f"community ID seed must be 0-65535, not {seed}")
    if not 0 <= proto <= 255:
        raise ValueError(f"protocol must be 0-255, not {proto}")
    if len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError("addresses must both be IPv4 (4 bytes) or both IPv6 (16 bytes)")
    ports = proto in PORT_PROTOS
    one_way = False
    if ports:
        if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
            raise ValueError(f"ports must be 0-65535, not {sport} and {dport}")
        if proto in (ICMP, ICMP6):
            pairs = _ICMP_PAIRS if proto == ICMP else _ICMP6_PAIRS
            mapped = pairs.get(sport)
            if mapped is None:
                one_way = True  # type and code as they are, never flipped
            else:
                dport = mapped
    if not one_way and (src > dst or (src == dst and ports and sport > dport)):
        src, dst, sport, dport = dst, src, dport, sport
    data = struct.pack("!H", seed) + src + dst + _PROTO_PAD[proto]
    if ports:
        data += struct.pack("!HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def flow_community_id(
    a: bytes, b: bytes, proto: int, a_port: int, b_port: int, seed: int = 0
) -> str | None:
    """The Community ID of a flowherd flow (either direction: the ID is symmetric), or ``None``
    for ICMP, ICMPv6 and SCTP (see the module docstring)."""
    if proto in NO_ID_PROTOS:
        return None
    return community_id(a, b, proto, a_port, b_port, seed)


def key_hasher(seed: int = 0) -> Callable[[bytes, bytes, int, int, int], bytes | None]:
    """A fast :func:`flow_community_id` for many keys, answering ASCII bytes (or None):
    ``f(a_addr, b_addr, proto, a_port, b_port)``. The key's parts are trusted (they come from a
    packed flow key); raises :class:`ValueError` here for a seed outside 0-65535."""
    if not 0 <= seed <= 0xFFFF:
        raise ValueError(f"community ID seed must be 0-65535, not {seed}")
    head = struct.pack("!H", seed)
    ports = struct.Struct("!HH").pack
    sha1, b64 = hashlib.sha1, binascii.b2a_base64
    with_ports = frozenset(PORT_PROTOS - NO_ID_PROTOS)

    def cid(a: bytes, b: bytes, proto: int, ap: int, bp: int) -> bytes | None:
        if proto in NO_ID_PROTOS:
            return None
        if a > b or (a == b and ap > bp):  # a canonical key is already in order
            a, b, ap, bp = b, a, bp, ap
        data = head + a + b + _PROTO_PAD[proto]
        if proto in with_ports:
            data += ports(ap, bp)
        return b"1:" + b64(sha1(data).digest(), newline=False)

    return cid
