"""The fast engine's batch fold: the common frames' headers read as numpy arrays, a whole batch at
a time, the others frame by frame.

Contract::

    fold_vector(records, dissect_fast) == fold(records, dissect_fast)   #
    flowherd.workers.fold.aggregate

:func:`fold_vector` groups a batch's frames by header layout. It reads, with array operations
over all of them at once, the frames whose answer :func:`flowherd.workers.decode.fastpath.decode`
would give without doubt and that nearly every trace is made of:

* link type 1 (Ethernet), then an ethertype the walker's table
  (:data:`flowherd.workers.decode.framing.ETHERTYPES`) maps to IPv4 or IPv6, directly or after one
  or two tags it maps to :func:`flowherd.workers.decode.framing.vlan`, each tag followed by an
  ethertype (not an
  802.3 length);
* IPv4 with a 20-byte header (version/IHL byte 0x45), total length >= 20, not a fragment; or
  IPv6 (version 6) with a non-zero payload length and no extension header (next header not 0,
  43, 44 or 60);
* then a whole TCP (20 bytes) or UDP (8 bytes) header inside the IP payload and the captured
  bytes, or any other protocol (ports and flags 0): the rules of
  :func:`flowherd.workers.decode.fastpath.decode`, which this module's tests check frame by frame.

Every other frame goes to the per-frame decoder given (``dissect_fast``: its own rules, then
scapy's dissector), and its answer joins the same arrays. The conversations are then one
sort-reduce: canonical keys (endpoint A the smaller ``(address, port)``), one sort of a 64-bit
mix of each key (a lexicographic sort of the key columns in the rare batch where two keys share
a mix), then per-group sums, minima, maxima and bitwise ors per direction. The table equals the
per-frame fold's (same conversations, counters, totals and not-counted buckets); only the dict's
order may differ, which no reader depends on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from flowherd.models.batch import Columns, RawRecord
from flowherd.models.flows import NO_FIRST, NO_LAST, FlowKey, FlowStats
from flowherd.workers.decode.framing import ETHERTYPES, IPV4, IPV6, vlan
from flowherd.workers.decode.headers import ETHERNET, VLAN
from flowherd.workers.fold.aggregate import DissectFn, PartialTable
from flowherd.workers.fold.vecpack import addr_bytes, groups, pack_records

__all__ = ["fold_vector", "fold_windows_vector", "read_as_arrays"]

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]

_LINKTYPE_ETHERNET = 1
_ETH_SIZE = ETHERNET.size  # 14
_ETH_TYPE = ETHERNET.at("type")  # 12
_VLAN_SIZE = VLAN.size  # 4
_VLAN_TYPE = VLAN.at("type")  # 2
_MAX_TAGS = 2
#: bytes read past an IP header's start: IPv6 (40) + TCP up to its flags byte (14)
_IP_SPAN = 54
#: zero bytes after the last frame, so every read of a candidate stays inside the buffer
_PAD = _ETH_SIZE + _MAX_TAGS * _VLAN_SIZE + _IP_SPAN
_IPV6_NOT_PLAIN = (0, 43, 44, 60)  # hop-by-hop, routing, fragment, destination options
_IPV4_NO_FRAGMENT_MASK = 0xBFFF  # everything in the flags/offset word except DF
_TCP, _UDP = 6, 17
_FAMILY_BIT = 1 << 40  # in the last sort key: IPv6 apart from IPv4
_NO_FIRST = np.uint64(NO_FIRST)
_NO_LAST = np.uint64(NO_LAST)


def _types(kind: object) -> list[int]:
    """Ethertypes the walker's table maps to ``kind`` (an IP kind, or the VLAN step)."""
    if isinstance(kind, int):
        return [k for k, v in ETHERTYPES.items() if isinstance(v, int) and v == kind]
    return [k for k, v in ETHERTYPES.items() if v is kind]


class _Frames:
    """A batch's captured bytes back to back, with each frame's start and length."""

    def __init__(self, cols: Columns) -> None:
        self.lens: I64 = cols.cap.astype(np.int64)
        self.starts: I64 = cols.starts
        raw = cols.data + bytes(_PAD)
        self.buf: U8 = np.frombuffer(raw, np.uint8)
        # the same bytes as big-endian 16/32/64-bit fields starting at every offset
        self.be16 = _fields(raw, ">u2")
        self.be32 = _fields(raw, ">u4")
        self.be64 = _fields(raw, ">u8")

    def u16(self, at: I64) -> I64:
        """The big-endian 16-bit fields at absolute offsets ``at``."""
        out: I64 = self.be16[at].astype(np.int64)
        return out

    def u32(self, at: I64) -> I64:
        """The big-endian 32-bit fields at absolute offsets ``at``."""
        out: I64 = self.be32[at].astype(np.int64)
        return out

    def u64(self, at: I64) -> U64:
        """The big-endian 64-bit fields at absolute offsets ``at``."""
        out: U64 = self.be64[at].astype(np.uint64)
        return out


def _fields(raw: bytes, dtype: str) -> npt.NDArray[np.unsignedinteger]:
    """A read-only view of ``raw`` with one ``dtype`` item starting at every byte offset."""
    size = np.dtype(dtype).itemsize
    return np.ndarray((len(raw) - size + 1,), dtype, raw, 0, (1,))


def _ip_starts(lt: I64, fr: _Frames) -> tuple[I64, I64]:
    """For every frame, where a plain Ethernet/VLAN walk finds its IP header (-1: elsewhere) and
    which kind it is (:data:`IPV4`, :data:`IPV6`, 0)."""
    n = len(lt)
    l3 = np.full(n, -1, np.int64)
    kind = np.zeros(n, np.int64)
    ip4, ip6, tags = _types(IPV4), _types(IPV6), _types(vlan)
    live = (lt == _LINKTYPE_ETHERNET) & (fr.lens >= _ETH_SIZE)
    off = _ETH_SIZE
    etype = fr.u16(fr.starts + _ETH_TYPE)
    for depth in range(_MAX_TAGS + 1):
        for k, types in ((IPV4, ip4), (IPV6, ip6)):
            hit = live & np.isin(etype, types)
            l3[hit] = off
            kind[hit] = k
        if depth == _MAX_TAGS:
            break
        # vlan(): a whole tag, whose type field is an ethertype (> 1500) of the table
        live &= np.isin(etype, tags) & (fr.lens >= off + _VLAN_SIZE)
        etype = fr.u16(fr.starts + off + _VLAN_TYPE)
        live &= etype > 1500
        off += _VLAN_SIZE
    return l3, kind


class _Rows:
    """Counted frames, one row each: addresses (high and low 64 bits), protocol, ports, flags,
    and the frame's index in the batch."""

    def __init__(self) -> None:
        self.parts: list[tuple[npt.NDArray[np.generic], ...]] = []

    def add(self, *cols: npt.NDArray[np.generic]) -> None:
        self.parts.append(cols)

    def columns(self) -> list[npt.NDArray[np.generic]]:
        return [np.concatenate(c) for c in zip(*self.parts, strict=True)]


def _ipv4(fr: _Frames, idx: I64, l3: I64, rows: _Rows) -> Mask:
    """Read the IPv4 frames ``idx``; add the ones decode() answers; return which those are."""
    room = fr.lens[idx] - l3
    at = fr.starts[idx] + l3
    word0, word2 = fr.u32(at), fr.u32(at + 6)  # version/IHL, TOS, length; flags/offset, TTL, proto
    total, fragment, proto = word0 & 0xFFFF, word2 >> 16, word2 & 0xFF
    seg = np.minimum(total, room) - 20
    tcp, udp = proto == _TCP, proto == _UDP
    ok: Mask = (room >= 20) & ((word0 >> 24) == 0x45) & (total >= 20)
    ok &= (fragment & _IPV4_NO_FRAGMENT_MASK) == 0
    ok &= np.where(tcp, seg >= 20, np.where(udp, seg >= 8, True))
    at, proto, tcp, ports = at[ok], proto[ok], tcp[ok], (tcp | udp)[ok]
    both = np.where(ports, fr.u32(at + 20), 0)
    zero = np.zeros(len(at), np.uint64)
    rows.add(
        zero,
        fr.u32(at + 12).astype(np.uint64),
        zero,
        fr.u32(at + 16).astype(np.uint64),
        proto,
        both >> 16,
        both & 0xFFFF,
        np.where(tcp, fr.u32(at + 30) & 0xFF, 0),  # TCP header byte 13
        np.zeros(len(at), np.int64),
        idx[ok],
    )
    return ok


def _ipv6(fr: _Frames, idx: I64, l3: I64, rows: _Rows) -> Mask:
    """Read the IPv6 frames ``idx``; add the ones decode() answers; return which those are."""
    room = fr.lens[idx] - l3
    at = fr.starts[idx] + l3
    word1 = fr.u32(at + 4)  # payload length, next header, hop limit
    plen, proto = word1 >> 16, (word1 >> 8) & 0xFF
    seg = np.minimum(plen, room - 40)
    tcp, udp = proto == _TCP, proto == _UDP
    ok: Mask = (room >= 40) & ((fr.u32(at) >> 28) == 6) & (plen != 0)
    ok &= ~np.isin(proto, _IPV6_NOT_PLAIN)
    ok &= np.where(tcp, seg >= 20, np.where(udp, seg >= 8, True))
    at, proto, tcp, ports = at[ok], proto[ok], tcp[ok], (tcp | udp)[ok]
    both = np.where(ports, fr.u32(at + 40), 0)
    rows.add(
        fr.u64(at + 8),
        fr.u64(at + 16),
        fr.u64(at + 24),
        fr.u64(at + 32),
        proto,
        both >> 16,
        both & 0xFFFF,
        np.where(tcp, fr.u32(at + 50) & 0xFF, 0),  # TCP header byte 13
        np.ones(len(at), np.int64),
        idx[ok],
    )
    return ok


def _addr(raw: bytes) -> tuple[int, int]:
    """An address's high and low 64 bits (IPv4: 0 and the address)."""
    if len(raw) == 4:
        return 0, int.from_bytes(raw, "big")
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")


def fold_vector(records: Sequence[RawRecord] | Columns, dissect: DissectFn) -> PartialTable:
    """:func:`flowherd.workers.fold.aggregate.fold` of ``records`` (or the frames of a block of
    columns), the common frames read as arrays (see the module docstring) and the others by
    ``dissect`` (the fast engine: ``dissect_fast``). The table also holds its flows packed for the
    merge
    (:attr:`PartialTable.packed`)."""
    t = PartialTable()
    cols = records if isinstance(records, Columns) else Columns.from_records(records)
    n = len(cols)
    if not n:
        return t
    ts: U64 = cols.ts.astype(np.uint64, copy=False)
    wire: I64 = cols.wire.astype(np.int64)
    t.packets, t.bytes = n, int(wire.sum())
    t.first_ns, t.last_ns = int(ts.min()), int(ts.max())
    t.packed = b""
    rows = _Rows()
    done = _read(cols.linktype.astype(np.int64), _Frames(cols), rows)
    rest = np.flatnonzero(~done).tolist()
    if rest:
        _per_frame(cols, rest, dissect, t, rows)
    if rows.parts:
        _reduce(rows.columns(), ts, wire, t)
    return t


def fold_windows_vector(cols: Columns, dissect: DissectFn, window_ns: int) -> PartialTable:
    """:func:`flowherd.workers.fold.aggregate.fold_windows` with :func:`fold_vector` of a batch's
    columns: the frames put in window order once (batch order within a window), each window then a
    slice."""
    whole = PartialTable()
    if not len(cols):
        return whole
    w = cols.ts - cols.ts % np.uint64(window_ns)
    starts, which = np.unique(w, return_inverse=True)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(starts) + 1)).tolist()
    ordered = cols.take(order)
    for k, start in enumerate(starts.tolist()):
        part = fold_vector(ordered.slice(bounds[k], bounds[k + 1]), dissect)
        whole.windows[start] = part
        whole.merge(part)
    return whole


def read_as_arrays(records: Sequence[RawRecord] | Columns) -> list[bool]:
    """Which frames of ``records`` :func:`fold_vector` reads as arrays (the others go to the
    per-frame decoder)."""
    cols = records if isinstance(records, Columns) else Columns.from_records(records)
    if not len(cols):
        return []
    read: list[bool] = _read(cols.linktype.astype(np.int64), _Frames(cols), _Rows()).tolist()
    return read


def _read(lt: I64, fr: _Frames, rows: _Rows) -> Mask:
    """Add the frames of the plain layouts to ``rows``; return which frames those are."""
    l3, kind = _ip_starts(lt, fr)
    done = np.zeros(len(lt), np.bool_)
    for k, read in ((IPV4, _ipv4), (IPV6, _ipv6)):
        idx = np.flatnonzero(kind == k)
        if len(idx):
            done[idx[read(fr, idx, l3[idx], rows)]] = True
    return done


def _per_frame(
    frames: Columns, rest: list[int], dissect: DissectFn, t: PartialTable, rows: _Rows
) -> None:
    """Dissect the frames ``rest`` one by one: buckets into ``t``, counted ones into ``rows``."""
    cols: list[list[int]] = [[] for _ in range(10)]
    for i in rest:
        _, wire, linktype, data = frames.record(i)
        info = dissect(linktype, data)
        if isinstance(info, str):
            t.not_counted_add(info, wire)
            continue
        src, dst = info.src, info.dst
        for col, value in zip(
            cols,
            (*_addr(src), *_addr(dst), info.proto, info.sport, info.dport, info.tcp_flags),
            strict=False,
        ):
            col.append(value)
        cols[8].append(len(src) == 16)
        cols[9].append(i)
    if cols[9]:
        rows.add(
            *(np.array(c, np.uint64) for c in cols[:4]),
            *(np.array(c, np.int64) for c in cols[4:]),
        )


def _reduce(cols: list[npt.NDArray[np.generic]], ts: U64, wire: I64, t: PartialTable) -> None:
    """Fold the counted rows into ``t.flows``: canonical keys, one sort, per-group reductions."""
    if not len(cols[0]):
        return
    s_hi, s_lo, d_hi, d_lo = (c.astype(np.uint64) for c in cols[:4])
    proto, sport, dport, flags, v6, idx = (c.astype(np.int64) for c in cols[4:])
    # direction 1 where (src, sport) > (dst, dport), bytes-wise: B sent it
    back = (s_hi > d_hi) | ((s_hi == d_hi) & ((s_lo > d_lo) | ((s_lo == d_lo) & (sport > dport))))
    a_hi, a_lo = np.where(back, d_hi, s_hi), np.where(back, d_lo, s_lo)
    b_hi, b_lo = np.where(back, s_hi, d_hi), np.where(back, s_lo, d_lo)
    a_port, b_port = np.where(back, dport, sport), np.where(back, sport, dport)
    tail = (v6 * _FAMILY_BIT) | (proto << 32) | (a_port << 16) | b_port
    keys = [k.astype(np.uint64) for k in (tail, b_lo, b_hi, a_lo, a_hi) if k is tail or k.any()]
    order, heads = groups(keys)

    back, idx = back[order], idx[order]
    t_s, w_s, f_s = ts[idx], wire[idx], flags[order]
    fwd = ~back
    zero_ts = np.zeros_like(t_s)
    count = np.diff(np.append(heads, len(order)))
    pkts_ba = np.add.reduceat(back.astype(np.int64), heads)
    bytes_all = np.add.reduceat(w_s, heads)
    bytes_ba = np.add.reduceat(np.where(back, w_s, 0), heads)
    stats = (
        count - pkts_ba,
        bytes_all - bytes_ba,
        pkts_ba,
        bytes_ba,
        np.minimum.reduceat(np.where(fwd, t_s, _NO_FIRST), heads),
        np.maximum.reduceat(np.where(fwd, t_s, zero_ts), heads),
        np.minimum.reduceat(np.where(back, t_s, _NO_FIRST), heads),
        np.maximum.reduceat(np.where(back, t_s, zero_ts), heads),
        np.bitwise_or.reduceat(np.where(fwd, f_s, 0), heads),
        np.bitwise_or.reduceat(np.where(back, f_s, 0), heads),
    )
    first = order[heads]
    a = addr_bytes(a_hi[first], a_lo[first])
    b = addr_bytes(b_hi[first], b_lo[first])
    six, pr, ap, bp = v6[first], proto[first], a_port[first], b_port[first]
    flows, new, stats_of = t.flows, tuple.__new__, FlowStats
    for i, (is6, p, x, y, pa, ba, pb, bb, fa, la, fb, lb, ga, gb) in enumerate(
        zip(
            six.tolist(),
            pr.tolist(),
            ap.tolist(),
            bp.tolist(),
            *(s.tolist() for s in stats),
            strict=True,
        )
    ):
        lo, hi = (16 * i if is6 else 16 * i + 12), 16 * i + 16
        key = new(FlowKey, (a[lo:hi], b[lo:hi], p, x, y))
        flows[key] = stats_of(pa, ba, pb, bb, fa, la, fb, lb, ga, gb)
    t.packed = b"".join(
        pack_records(
            six == k,
            k == 1,
            np.frombuffer(a, np.uint8),
            np.frombuffer(b, np.uint8),
            pr,
            ap,
            bp,
            stats,
        )
        for k in (0, 1)
    )
