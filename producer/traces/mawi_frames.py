"""The packets of MAWI-like flows: which kinds each flow sends, in which order, and their bytes.

A flow follows a *profile*: a list of kinds of packet (direction, TCP flags and options, payload
size) and the order it sends them in, ``prefix`` then ``body`` repeated then ``tail`` (the tail
only when the body is at least as long). :func:`kinds` says which kind packet ``k`` of a flow of
``n`` packets is; :func:`templates` builds, for a batch of flows at once (numpy, one structured
array per family and transport), the pcap record of every kind a flow will send: record header
fields (caplen ``min(wire, snaplen)``, orig_len the wire length) and the captured bytes (Ethernet,
IPv4 with a valid checksum or IPv6, TCP/UDP/ICMP headers, then zeros: the payload is cut, as in
MAWI's traces). Every profile's prefix goes client, then server: a flow of more than one packet
is two unidirectional flows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Arr = npt.NDArray[Any]
K = 8  # kinds per flow, at most
STAMP = 8  # a record template starts with room for the timestamp, then caplen and orig_len

# (protocol, kinds, prefix, body, tail). A kind: (direction: 0 client -> server, TCP flags, TCP
# options: 1 a SYN's, 2 timestamps, payload bytes; < 0: the flow's own size -1 request, -2 full
# segment, -3 message).
_ACK_C, _FINS = (0, 0x10, 2, 0), ((0, 0x11, 2, 0), (1, 0x11, 2, 0))
_HANDSHAKE = ((0, 0x02, 1, 0), (1, 0x12, 1, 0), _ACK_C)
Kind = tuple[int, int, int, int]
Profile = tuple[int, tuple[Kind, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
PROFILES: tuple[Profile, ...] = (
    (6, (*_HANDSHAKE, (0, 0x18, 2, -1), (1, 0x10, 2, -2), *_FINS), (0, 1, 2, 3), (4, 4, 2), (5, 6)),
    (6, (*_HANDSHAKE, (0, 0x18, 2, -1), (0, 0x10, 2, -2), (1, 0x10, 2, 0), *_FINS),
     (0, 1, 2, 3), (4, 4, 5), (6, 7)),
    (6, (*_HANDSHAKE, (0, 0x18, 2, -3), (1, 0x18, 2, -3), *_FINS), (0, 1, 2), (3, 4), (5, 6)),
    (17, ((0, 0, 0, -1), (1, 0, 0, -3)), (0, 1), (0, 1), ()),
    (17, ((0, 0, 0, 1252), (1, 0, 0, 1252), (1, 0, 0, -2), (0, 0, 0, -1)),
     (0, 1), (2, 2, 2, 3), ()),
    (1, ((0, 0, 0, 56), (1, 0, 0, 56)), (0, 1), (0, 1), ()),
)  # fmt: skip
DOWNLOAD, UPLOAD, INTERACTIVE, DNS, QUIC, ICMP = range(len(PROFILES))
PROTO = np.array([p[0] for p in PROFILES])


def _column(c: int) -> Arr:
    return np.array([[k[c] for k in p[1]] + [0] * (K - len(p[1])) for p in PROFILES])


_DIR, _FLAGS, _OPT, _PAY = (_column(c) for c in range(4))
_LP, _LB, _LT = (np.array([len(p[2]) for p in PROFILES]), np.array([len(p[3]) for p in PROFILES]),
                 np.array([len(p[4]) for p in PROFILES]))  # fmt: skip
# positions 0-3 the prefix, 4-7 the body, 8-9 the tail
_SEQ = np.array([[*p[2], *[0] * (4 - len(p[2])), *p[3], *[0] * (4 - len(p[3])), *p[4], 0, 0][:10]
                 for p in PROFILES]).ravel()  # fmt: skip
# the fewest packets a flow has when it sends each kind (so that mice build one template)
_FIRST = np.full((len(PROFILES), K), 1 << 62)
for _p, (_proto, _kinds, _pre, _body, _tail) in enumerate(PROFILES):
    for _at, _j in enumerate((*_pre, *_body), 1):
        _FIRST[_p, _j] = min(_FIRST[_p, _j], _at)
    for _j in _tail:
        _FIRST[_p, _j] = min(_FIRST[_p, _j], len(_pre) + 2 * len(_tail) + 1)
_OPTS = np.zeros((3, 20), np.uint8)
_OPTS[1] = np.frombuffer(bytes.fromhex("020405b40402080a000000000000000001030307"), np.uint8)
_OPTS[2, :12] = np.frombuffer(bytes.fromhex("0101080a0000000000000000"), np.uint8)  # NOP NOP TS
_OPTLEN = np.array([0, 20, 12])
_ETH = np.frombuffer(bytes.fromhex(  # [direction][ipv6]: the two routers of a backbone link
    "0016c8a0b0020016c8a0b0010800" "0016c8a0b0020016c8a0b00186dd"
    "0016c8a0b0010016c8a0b0020800" "0016c8a0b0010016c8a0b00286dd"
), np.uint8).reshape(2, 2, 14)  # fmt: skip
_IP4: list[tuple[Any, ...]] = [
    ("vihl", "u1"), ("tos", "u1"), ("tot", ">u2"), ("id", ">u2"), ("frag", ">u2"),
    ("ttl", "u1"), ("proto", "u1"), ("csum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
]  # fmt: skip
_IP6: list[tuple[Any, ...]] = [("vtf", ">u4"), ("plen", ">u2"), ("nh", "u1"), ("hop", "u1"),
        ("src", ">u8", (2,)), ("dst", ">u8", (2,))]  # fmt: skip
_L4: dict[int, list[tuple[Any, ...]]] = {
    6: [("sp", ">u2"), ("dp", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("off", "u1"),
        ("flags", "u1"), ("win", ">u2"), ("sum", ">u2"), ("urg", ">u2"), ("opts", "u1", (20,))],
    17: [("sp", ">u2"), ("dp", ">u2"), ("len", ">u2"), ("sum", ">u2")],
    1: [("type", "u1"), ("code", "u1"), ("sum", ">u2"), ("ident", ">u2"), ("echo", ">u2")],
}  # fmt: skip


def kinds(prof: Arr, n: Arr, k: Arr) -> Arr:
    """The kind of packet ``k`` of flows with profile ``prof`` and ``n`` packets."""
    lp, lb, lt = _LP[prof], _LB[prof], _LT[prof]
    lt = np.where(n - lp > 2 * lt, lt, 0)
    tail_at = n - lt
    pos = np.where(k < lp, k, np.where(k >= tail_at, 8 + k - tail_at, 4 + (k - lp) % lb))
    out: Arr = _SEQ[prof * 10 + pos]
    return out


def row_width(snaplen: int) -> int:
    """Bytes of one record template: timestamp, caplen, orig_len, snaplen bytes; a multiple of 4."""
    return (STAMP + 8 + snaplen + 3) & ~3


def templates(f: dict[str, Arr], snaplen: int) -> tuple[Arr, Arr, Arr, Arr]:
    """Record templates of a batch of flows: (rows (B, K, :func:`row_width`) uint8, wire
    lengths (B, K), directions (B, K), caplens (B, K)).

    ``f`` holds per flow: ``prof``, ``n``, ``v6`` (bool), ``cli`` and ``srv`` ((B, 2) uint64: the
    address's high and low 64 bits; IPv4 in the low 32), ``ports`` ((B, 2): client, server),
    ``ttl`` ((B, 2): client's, server's), ``isn`` ((B, 2) initial sequence numbers) and
    ``sizes`` ((B, 3): request, segment, message payloads). Only the kinds a flow of its
    length sends are built; the other rows stay zero.
    """
    prof, v6, b = f["prof"], f["v6"], len(f["prof"])
    d, pay, opt, flags = _DIR[prof], _PAY[prof], _OPT[prof], _FLAGS[prof]
    payload = np.where(pay >= 0, pay, np.take_along_axis(f["sizes"], np.clip(-pay - 1, 0, 2), 1))
    proto = PROTO[prof]
    l4 = np.where((proto == 6)[:, None], 20 + _OPTLEN[opt], 8)
    wire = np.maximum(14 + np.where(v6, 40, 20)[:, None] + l4 + payload, 60)  # Ethernet pads
    cap = np.minimum(wire, snaplen)
    recs = np.zeros((b * K, row_width(snaplen)), np.uint8)
    recs[:, STAMP : STAMP + 8] = (
        np.stack([cap.ravel(), wire.ravel()], 1).astype("<u4").view(np.uint8)
    )
    todo = (f["n"][:, None] >= _FIRST[prof]).ravel()
    fl, dr = np.repeat(np.arange(b), K), d.ravel()
    for fam6 in (False, True):
        for p in _L4:
            r = np.flatnonzero(todo & (v6[fl] == fam6) & (proto[fl] == p))
            if r.size:
                plen = l4.ravel()[r] + payload.ravel()[r]
                h = _headers(f, fam6, p, fl[r], dr[r], flags.ravel()[r], opt.ravel()[r], plen)
                raw = h.view(np.uint8).reshape(r.size, -1)[:, :snaplen]
                recs[r, STAMP + 8 : STAMP + 8 + raw.shape[1]] = raw
    return recs.reshape(b, K, -1), wire, d, cap


def _headers(
    f: dict[str, Arr], fam6: bool, p: int, fl: Arr, d: Arr, flags: Arr, opt: Arr, plen: Arr
) -> Arr:
    """Headers of template rows: flow ``fl``, direction ``d``, ``plen`` bytes after IP."""
    h = np.zeros(fl.size, np.dtype([("eth", "u1", (14,)), *(_IP6 if fam6 else _IP4), *_L4[p]]))
    h["eth"] = _ETH[d, int(fam6)]
    back = d[:, None] == 1
    cli, srv = f["cli"][fl], f["srv"][fl]
    src, dst = np.where(back, srv, cli), np.where(back, cli, srv)
    ttl = f["ttl"][fl, d]
    if fam6:
        label = (src[:, 1] ^ (dst[:, 1] >> np.uint64(3))) & np.uint64(0xFFFFF)
        h["vtf"], h["nh"], h["hop"] = label | np.uint64(0x6000_0000), 58 if p == 1 else p, ttl
        h["plen"], h["src"], h["dst"] = plen, src, dst
    else:
        a, z, tot = src[:, 1].astype(np.int64), dst[:, 1].astype(np.int64), 20 + plen
        h["vihl"], h["frag"], h["ttl"], h["proto"], h["src"], h["dst"] = 0x45, 0x4000, ttl, p, a, z
        s = (
            0x4500
            + tot
            + 0x4000
            + (ttl << 8 | p)
            + (a >> 16)
            + (a & 0xFFFF)
            + (z >> 16)
            + (z & 0xFFFF)
        )
        s = (s & 0xFFFF) + (s >> 16)
        h["tot"], h["csum"] = tot, ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF
    ports = f["ports"][fl]
    cport = ports[:, 0]
    fake_sum = (cport * 40503 + d * 7 + 1) & 0xFFFF  # cannot be checked: the payload is cut
    if p == 1:
        h["type"] = np.where(d == 0, 128, 129) if fam6 else np.where(d == 0, 8, 0)
        h["sum"], h["ident"], h["echo"] = fake_sum, cport, 1
        return h
    h["sp"], h["dp"] = np.where(d == 0, cport, ports[:, 1]), np.where(d == 0, ports[:, 1], cport)
    h["sum"] = fake_sum
    if p == 17:
        h["len"] = plen
    if p == 6:
        isn, rows = f["isn"][fl], np.arange(fl.size)
        h["seq"], h["ack"] = isn[rows, d], np.where(flags == 0x02, 0, isn[rows, 1 - d])
        h["off"], h["flags"] = (20 + _OPTLEN[opt]) << 2, flags
        h["win"], h["opts"] = np.where(d == 0, 64240, 65160), _OPTS[opt]
    return h
