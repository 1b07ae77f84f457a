"""The keys of ``reporter stats``: what a flow is attributed to, and how a key value reads.

A key value is encoded as bytes that sort in the order the reports use for ties: an address as
its length then its bytes (IPv4 before IPv6, numerically within each), a prefix as the masked
address then its length, a port as 2 big-endian bytes, a protocol as 1 byte, a pair as the
length then both addresses. Pure: no I/O.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from flowherd.console.units import proto_name
from flowherd.models import numbers
from flowherd.models.flows import FlowKey, FlowStats, addr_text
from flowherd.models.report import View
from flowherd.reporter.table.packed import VALUE, Pair, split_key

KINDS = (
    "srcip",
    "dstip",
    "ip",
    "sport",
    "dport",
    "port",
    "proto",
    "pair",
    "srcnet",
    "dstnet",
    "net",
)
NETS = ("srcnet", "dstnet", "net")
KEY_FORMS = "srcip, dstip, ip, sport, dport, port, proto, pair, srcnet/N, dstnet/N, net/N"
#: IPv6 prefix length of ``net/N`` when none is given (``net/N,M`` gives one).
V6_DEFAULT = 64
#: Prefix lengths of a bare ``net``, ``srcnet`` or ``dstnet``.
V4_DEFAULT = 24
#: A predicate over a stored conversation: only those it accepts are counted.
Keep = Callable[[FlowKey, FlowStats], bool]
#: One flow of a view: (src, dst, proto, sport, dport, packets, bytes, first_ns, last_ns).
Flow = tuple[bytes, bytes, int, int, int, int, int, int, int]


@dataclass(frozen=True)
class KeySpec:
    """A statistics key: its kind and, for prefixes, the IPv4 and IPv6 prefix lengths."""

    kind: str
    v4: int = 32
    v6: int = 128

    def __str__(self) -> str:
        return f"{self.kind}/{self.v4},{self.v6}" if self.kind in NETS else self.kind


def parse_key(text: str) -> KeySpec:
    """``srcip`` ... ``pair``, or ``srcnet/N``, ``dstnet/N``, ``net/N`` with N the IPv4 prefix
    length (IPv6 addresses get /64), or ``net/N,M`` (IPv6 /M); a bare ``net`` is ``net/24,64``.
    Raises :class:`ValueError` saying what is wrong."""
    kind, sep, rest = text.strip().lower().partition("/")
    if kind not in KINDS:
        raise ValueError(f"unknown key {numbers.shown(text)}: use one of {KEY_FORMS}")
    if kind not in NETS:
        if sep:
            raise ValueError(f"{kind} takes no prefix length (only {', '.join(NETS)} do)")
        return KeySpec(kind)
    if not sep:
        return KeySpec(kind, V4_DEFAULT, V6_DEFAULT)
    v4s, comma, v6s = rest.partition(",")
    try:
        v4 = numbers.count(v4s, "a prefix length", hi=32)
        v6 = numbers.count(v6s, "a prefix length", hi=128) if comma else V6_DEFAULT
    except numbers.NumberRangeError:
        raise ValueError(
            f"{numbers.shown(text)}: IPv4 prefixes are /0 to /32, IPv6 prefixes /0 to /128"
        ) from None
    except numbers.NumberError:
        raise ValueError(
            f"{text!r}: write {kind}/N (IPv4 /N, IPv6 /{V6_DEFAULT}) or {kind}/N,M (IPv6 /M)"
        ) from None
    if not 0 <= v4 <= 32 or not 0 <= v6 <= 128:
        raise ValueError(f"{text!r}: IPv4 prefixes are /0 to /32, IPv6 prefixes /0 to /128")
    return KeySpec(kind, v4, v6)


def view_flows(pairs: Iterable[Pair], view: View, keep: Keep | None = None) -> Iterator[Flow]:
    """The flows of ``view`` in stored records (those ``keep`` accepts, if given)."""
    for k, v in pairs:
        if keep is not None and not keep(FlowKey.unpack(k), FlowStats.unpack(v)):
            continue
        a, b, proto, ap, bp = split_key(k)
        pa, ba, pb, bb, fa, la, fb, lb, _, _ = VALUE.unpack(v)
        if view == "uni":
            if pa:
                yield a, b, proto, ap, bp, int(pa), int(ba), int(fa), int(la)
            if pb:
                yield b, a, proto, bp, ap, int(pb), int(bb), int(fb), int(lb)
            continue
        f_ab, f_ba = int(fa), int(fb)
        first, last, pk, by = min(f_ab, f_ba), max(int(la), int(lb)), int(pa + pb), int(ba + bb)
        swap = f_ba < f_ab
        if f_ba == f_ab and (a, ap) != (b, bp):  # conv_row's tie: the smaller text is A
            swap = (addr_text(b), bp) < (addr_text(a), ap)
        if swap:
            yield b, a, proto, bp, ap, pk, by, first, last
        else:
            yield a, b, proto, ap, bp, pk, by, first, last


def _masker(spec: KeySpec) -> Callable[[bytes], bytes]:
    masks = {
        4: ((1 << 32) - (1 << (32 - spec.v4)), spec.v4),
        16: ((1 << 128) - (1 << (128 - spec.v6)), spec.v6),
    }

    def net(addr: bytes) -> bytes:
        n = len(addr)
        mask, plen = masks[n]
        masked = (int.from_bytes(addr, "big") & mask).to_bytes(n, "big")
        return bytes((n,)) + masked + bytes((plen,))

    return net


def _ip(a: bytes) -> bytes:
    return bytes((len(a),)) + a


def _port(p: int) -> bytes:
    return p.to_bytes(2, "big")


def key_values(spec: KeySpec, view: View) -> Callable[[Flow], tuple[bytes, ...]]:
    """The key values (encoded as bytes that sort in key order) of a flow."""
    net = _masker(spec)
    table: dict[str, Callable[[Flow], tuple[bytes, ...]]] = {
        "srcip": lambda f: (_ip(f[0]),),
        "dstip": lambda f: (_ip(f[1]),),
        "ip": lambda f: (_ip(f[0]), _ip(f[1])),
        "sport": lambda f: (_port(f[3]),),
        "dport": lambda f: (_port(f[4]),),
        "port": lambda f: (_port(f[3]), _port(f[4])),
        "proto": lambda f: (bytes((f[2],)),),
        "srcnet": lambda f: (net(f[0]),),
        "dstnet": lambda f: (net(f[1]),),
        "net": lambda f: (net(f[0]), net(f[1])),
        "pair": lambda f: (_ip(f[0]) + f[1],),
    }
    if spec.kind == "pair" and view == "bi":  # an unordered pair: the smaller address first
        return lambda f: (_ip(min(f[0], f[1])) + max(f[0], f[1]),)
    return table[spec.kind]


def key_width(spec: KeySpec) -> int:
    """The longest encoded value of ``spec`` (IPv6): values padded with zero bytes to this
    width sort as they did and read back as they were."""
    widths = {"sport": 2, "dport": 2, "port": 2, "proto": 1, "pair": 33}
    return widths.get(spec.kind, 18 if spec.kind in NETS else 17)


def _addr(raw: bytes) -> str:
    """:func:`flowherd.models.flows.addr_text`, faster: ``inet_ntop`` unless it writes an IPv6
    address
    with an embedded IPv4 part, which Python's ``ipaddress`` (the contract) writes otherwise."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    text = socket.inet_ntop(socket.AF_INET6, raw)
    return addr_text(raw) if "." in text else text


def key_text(spec: KeySpec, view: View, raw: bytes) -> str:
    """The text of an encoded key value, as the reports show it."""
    kind = spec.kind
    if kind in ("sport", "dport", "port"):
        return str(int.from_bytes(raw, "big"))
    if kind == "proto":
        return proto_name(raw[0])
    n = raw[0]
    if kind in NETS:
        return f"{_addr(raw[1 : 1 + n])}/{raw[1 + n]}"
    if kind == "pair":
        arrow = " <-> " if view == "bi" else " -> "
        return _addr(raw[1 : 1 + n]) + arrow + _addr(raw[1 + n : 1 + 2 * n])
    return _addr(raw[1 : 1 + n])
