"""MAWI-like header-only traces of any size, streamed to disk in constant memory.

::

    truth = write_trace("mawi.pcap.gz", SCALES["small"])  # or TraceSpec(packets=.., flows=..)
    truth.packets, truth.bytes, truth.flows_uni, truth.flows_bi  # exact, counted while writing

The trace looks like a MAWI sample (a backbone link, 15 minutes, ``tcpdump -s 96``): a classic
pcap of Ethernet frames, each captured at ``min(wire, snaplen)`` bytes with its whole wire length
in ``orig_len``; IPv4 and IPv6 (``v6_share`` of the flows); TCP with handshakes and both
directions (downloads, uploads, interactive), UDP (DNS-like exchanges, QUIC-like bulk), ICMP
echoes; heavy-tailed flow sizes (35% single packets, the rest a bounded Pareto, the mean
``packets / flows``: a few elephants carry most of the bytes); flows interleaved in time, with
non-decreasing timestamps over ``duration_s``.

How memory stays constant: flow ``i`` starts at the ``i``-th of ``flows`` sorted uniform times
over the duration (order statistics, drawn in blocks), and everything else about it (addresses,
size, profile, packet times) is a hash of ``(seed, i)``. Time is cut into slices of about 64 k
packets; each slice adds the flows that start in it, computes the packets of every active flow
that fall in it (numpy, from per-flow frame templates), sorts them by time, writes them and
forgets the flows that have ended. Memory holds the active flows and one slice. The client
address and port (for ICMP the target) are a bijection of ``i``, so flow keys are unique by
construction and the counts are exact. The same spec writes the same bytes on a given platform
(the gzip header has no name or time).

:class:`Truth` is in the terms of flowherd's summary: bytes are wire lengths, a conversation is
one of ``flows_bi``, each of its directions that sent a packet one of ``flows_uni``.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from producer.mawi_frames import (
    DNS,
    DOWNLOAD,
    ICMP,
    INTERACTIVE,
    PROTO,
    QUIC,
    STAMP,
    UPLOAD,
    Arr,
    K,
    kinds,
    row_width,
    templates,
)

BASE_NS = 1_704_085_200 * 10**9  # 2024-01-01 05:00 UTC: 14:00 JST, when MAWI's daily sample starts
ALPHA = 1.1  # Pareto shape of packets per flow: the lower, the heavier the tail
MICE = 0.35  # the share of TCP/UDP flows that are one packet (scans, probes, lost handshakes)
SLICE_PACKETS = 1 << 15  # packets per time slice, on average
_G = 10**9
_U64 = np.uint64


class TraceSpec(BaseModel):
    """What to generate: ``flows`` is exact, ``packets`` a target that the trace meets within a
    few percent (a heavy tail varies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    packets: int = Field(ge=1)
    flows: int = Field(ge=1, le=1 << 35)
    seed: int = Field(1, ge=0)
    duration_s: float = Field(900.0, gt=0)
    snaplen: int = Field(96, ge=64, le=1514)
    v6_share: float = Field(0.18, ge=0, le=1)
    nanosecond: bool = False


SCALES: dict[str, TraceSpec] = {
    "tiny": TraceSpec(packets=20_000, flows=2_000, duration_s=60),
    "small": TraceSpec(packets=500_000, flows=50_000, duration_s=300),
    "medium": TraceSpec(packets=5_000_000, flows=500_000),
    "large": TraceSpec(packets=50_000_000, flows=5_000_000),
}


class Truth(BaseModel):
    """Exact totals of a generated trace, in the terms of flowherd's summary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: TraceSpec
    packets: int
    bytes: int
    flows_uni: int
    flows_bi: int
    ipv6_packets: int
    tcp_packets: int
    udp_packets: int
    icmp_packets: int
    largest_uni_bytes: int  # the first row of `reporter top --direction uni`
    largest_bi_bytes: int
    first_ns: int
    last_ns: int
    peak_active_flows: int  # the most flows sending in one slice: what memory holds


@dataclass
class Tally:
    """The counters :func:`records` fills as it goes; :meth:`truth` once it is exhausted."""

    packets: int = 0
    bytes: int = 0
    flows_uni: int = 0
    flows_bi: int = 0
    ipv6_packets: int = 0
    tcp_packets: int = 0
    udp_packets: int = 0
    icmp_packets: int = 0
    largest_uni_bytes: int = 0
    largest_bi_bytes: int = 0
    first_ns: int = 0
    last_ns: int = 0
    peak_active_flows: int = 0

    def truth(self, spec: TraceSpec) -> Truth:
        return Truth(spec=spec, **vars(self))


def pareto_scale(mean: float, cap: int, alpha: float = ALPHA) -> float:
    """``xm`` such that ``N = max(1, min(cap, floor(xm * U ** (-1/alpha))))`` has mean ``mean``.

    E[N] = 1 + sum over j = 2..cap of min(1, (xm/j) ** alpha): the first 4096 terms exactly, the
    rest (all below 1 there) as an integral.
    """
    head = min(cap, 4096)
    j = np.arange(2, head + 1, dtype=float)

    def expect(xm: float) -> float:
        s = 1.0 + float(np.minimum(1.0, (xm / j) ** alpha).sum())
        if cap > head:
            s += (
                xm**alpha * ((head + 0.5) ** (1 - alpha) - (cap + 0.5) ** (1 - alpha)) / (alpha - 1)
            )
        return s

    lo, hi = 0.0, float(cap)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expect(mid) < mean else (lo, mid)
    return (lo + hi) / 2


def _mix(x: Arr) -> Arr:
    """splitmix64's finaliser: uint64 -> well-mixed uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _uniform(seed: int, field: int, i: Arr, k: Arr | int = 0) -> Arr:
    """A uniform in [0, 1) for each (seed, field, i, k): a counter-based random stream."""
    base = _U64((seed * 0x9E3779B97F4A7C15 + field * 0xD1B54A32D192ED03) % 2**64)
    x = _mix(i.astype(_U64) * _U64(0x9E3779B97F4A7C15) + base)
    if not isinstance(k, int):
        x = _mix(x ^ k.astype(_U64))
    return (x >> _U64(11)).astype(float) * 2.0**-53


def flow_keys(i: Arr, seed: int) -> Arr:
    """A bijection of [0, 2**35) (xor, odd multipliers, xor-shifts): distinct flows get distinct
    (20-bit client host, 15-bit client port or ICMP target) pairs, whatever the seed."""
    m = _U64((1 << 35) - 1)
    x = (i.astype(_U64) ^ _U64(seed * 0x9E3779B1 % 2**35)) * _U64(0x2545F4914F6CDD1D) & m
    x ^= x >> _U64(17)
    x = x * _U64(0x5851F42D4C957F2D) & m
    return x ^ (x >> _U64(13))


class _Flows:
    """Columns of the active flows: their parameters, progress and frame templates."""

    def __init__(self, cols: dict[str, Arr]) -> None:
        self.c = cols

    def __len__(self) -> int:
        return len(self.c["i"])

    def take(self, sel: Arr) -> _Flows:
        return _Flows({k: v[sel] for k, v in self.c.items()})

    def extend(self, other: _Flows) -> _Flows:
        if not len(self):
            return other
        return _Flows({k: np.concatenate([v, other.c[k]]) for k, v in self.c.items()})


def _new_flows(spec: TraceSpec, i: Arr, start: Arr, cap: int, xm: float, end: int) -> _Flows:
    """Flows ``i`` starting at ``start`` (ns from the trace's start): every choice a hash of i."""

    def u(field: int) -> Arr:
        return _uniform(spec.seed, field, i)

    key = flow_keys(i, spec.seed)
    host, low = key >> _U64(15), key & _U64(0x7FFF)
    v6, roll = u(1) < spec.v6_share, u(2)
    pareto = np.floor(xm * (1.0 - u(3)) ** (-1 / ALPHA))
    n = np.where(u(4) < MICE, 1, np.clip(pareto, 1, cap)).astype(np.int64)
    icmp_n = 1 + np.minimum(np.floor(-1.5 * np.log1p(-u(5))), 60)
    n = np.where(roll < 0.03, icmp_n, n).astype(np.int64)
    tcp = np.select([u(6) < 0.1, u(6) < 0.25], [UPLOAD, INTERACTIVE], DOWNLOAD)
    prof = np.select([roll < 0.03, roll < 0.2], [ICMP, np.where(n <= 6, DNS, QUIC)], tcp)
    proto = PROTO[prof]
    srv_i = np.where(prof == ICMP, 0x10000 | low, np.floor(65536 * u(7) ** 4).astype(_U64))
    hi = np.where(v6, np.array([0x20010DB8C0000000, 0x20010DB850000000], _U64)[:, None], 0)
    lo_c = np.where(v6, host << _U64(4) | _U64(1), _U64(0x0A000000) | host)  # 10.0.0.0/12
    lo_s = np.where(v6, srv_i << _U64(4) | _U64(2), _U64(0xC6120000) | srv_i)  # 198.18.0.0/15
    sport = np.array([443, 443, 443, 80, 80, 8080, 22, 993])[np.floor(u(8) * 8).astype(int)]
    sport = np.choose(prof, [sport, sport, 22, 53, 443, 0])
    mss = np.where(v6, 1428, 1448)  # a 1500-byte MTU less the IP, TCP and timestamp headers
    udp = prof == DNS
    sizes = np.stack(
        [
            np.where(proto == 6, 80 + 700 * u(9), np.where(udp, 30 + 40 * u(9), 40)),
            np.where(proto == 6, mss, 1200 + 150 * u(10)),
            np.where(proto == 6, 20 + 300 * u(10), 60 + 400 * u(11)),
        ],
        1,
    ).astype(np.int64)
    # lifetime ~ 50 ms * n ** 0.8, spread by a lognormal; every flow ends by the trace's end
    z = np.sqrt(-2 * np.log1p(-u(12))) * np.cos(2 * np.pi * u(13))
    life = 50e6 * n**0.8 * np.exp(z)
    cols: dict[str, Arr] = {
        "i": i,
        "start": start,
        "n": n,
        "gap": np.maximum(np.minimum(life, end - 1 - start) / n, 1.0),
        "prof": prof,
        "v6": v6,
        "proto": proto,
        "cli": np.stack([hi[0], lo_c], 1).astype(_U64),
        "srv": np.stack([hi[1], lo_s], 1).astype(_U64),
        "ports": np.stack([32768 | low.astype(np.int64), sport], 1),
        "ttl": np.stack([64 - np.floor(24 * u(14)), 40 + np.floor(20 * u(15))], 1).astype(int),
        "isn": np.floor(np.stack([u(16), u(17)], 1) * 2**32).astype(_U64),
        "sizes": sizes,
    }
    recs, wire, d, caps = templates(cols, spec.snaplen)
    cols = {k: cols[k] for k in ("i", "start", "n", "gap", "prof", "v6", "proto")}
    cols.update(recs=recs, wire=wire, dir=d, cap=caps)
    cols.update({k: np.zeros(len(i), np.int64) for k in ("sent", "c2s", "s2c")})
    return _Flows(cols)


def _starts(spec: TraceSpec, span: int, block: int = 1 << 16) -> Iterator[tuple[Arr, Arr]]:
    """(i, start ns) in blocks: the sorted uniform order statistics over ``span``, one after the
    other (the gap to the next of m remaining ones is a Beta(1, m))."""
    lo, log_rest = 0, 0.0
    while lo < spec.flows:
        i = np.arange(lo, min(spec.flows, lo + block), dtype=np.int64)
        lr = log_rest + np.cumsum(np.log1p(-_uniform(spec.seed, 0, i)) / (spec.flows - i))
        log_rest, lo = float(lr[-1]), int(i[-1]) + 1
        yield i, np.minimum(np.floor(-np.expm1(lr) * span), span - 1).astype(np.int64)


def records(spec: TraceSpec, tally: Tally) -> Iterator[bytes]:
    """The trace's pcap records in chunks (one per time slice), filling ``tally`` as it goes.

    No I/O; memory holds the active flows and one slice. ValueError if ``packets < flows``.
    """
    if spec.packets < spec.flows:
        raise ValueError(f"{spec.packets} packets cannot make {spec.flows} flows")
    span = int(spec.duration_s * _G)
    mean = spec.packets / spec.flows
    cap = max(spec.packets // 20, int(20 * mean), 2)
    # ICMP flows (3%) average 2.5 packets and MICE of the rest 1: the Pareto makes up the mean
    xm = pareto_scale(max(1.0, ((mean - 0.03 * 2.5) / 0.97 - MICE) / (1 - MICE)), cap)
    slice_ns = span * SLICE_PACKETS / spec.packets
    starts = _starts(spec, span)
    pend_i, pend_s = next(starts)
    active: _Flows | None = None
    width = row_width(spec.snaplen)
    cols = np.arange(width, dtype=np.uint8 if width < 256 else np.uint16)
    s = 0
    while pend_i.size or (active is not None and len(active)):
        s += 1
        t1 = int(s * slice_ns) if s * slice_ns < span else 1 << 62  # the last takes the rest
        while pend_i.size and pend_s[0] < t1:  # the flows starting in this slice
            cut = int(np.searchsorted(pend_s, t1))
            new = _new_flows(spec, pend_i[:cut], pend_s[:cut], cap, xm, span)
            _count_new(tally, new)
            active = new if active is None else active.extend(new)
            pend_i, pend_s = pend_i[cut:], pend_s[cut:]
            if not pend_i.size:
                pend_i, pend_s = next(starts, (pend_i, pend_s))
        if active is None:
            continue
        tally.peak_active_flows = max(tally.peak_active_flows, len(active))
        c = active.c
        n, sent = c["n"], c["sent"]
        last = np.minimum(n, np.floor((t1 - c["start"]) / c["gap"]) + 1).astype(np.int64)
        cnt = np.maximum(last - sent, 0)
        rep = np.repeat(np.arange(len(active)), cnt)
        k = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt) + sent[rep]
        jitter = 0.9 * _uniform(spec.seed, 99, c["i"][rep], k)  # packet k in [k, k + 0.9) gaps
        ts = c["start"][rep] + np.floor(c["gap"][rep] * (k + jitter)).astype(np.int64)
        keep = ts < t1
        rep, k, ts = rep[keep], k[keep], ts[keep]
        sent += np.bincount(rep, minlength=len(active))
        if rep.size:
            order = np.argsort(ts, kind="stable")  # ties: flow order, then packet order
            rep, ts = rep[order], ts[order] + BASE_NS
            row = rep * K + kinds(c["prof"][rep], n[rep], k[order])
            wire, back = c["wire"].ravel()[row], c["dir"].ravel()[row] == 1
            c["c2s"] += np.bincount(rep, wire * ~back, len(active)).astype(np.int64)
            c["s2c"] += np.bincount(rep, wire * back, len(active)).astype(np.int64)
            tally.bytes += int(wire.sum())
            tally.first_ns = tally.first_ns or int(ts[0])
            tally.last_ns = int(ts[-1])
            out = c["recs"].reshape(-1, width)[row]  # whole template rows, then fill the times
            stamp = out.view("<u4")
            stamp[:, 0], frac = np.divmod(ts, _G)
            stamp[:, 1] = frac if spec.nanosecond else frac // 1000
            yield out[
                cols < (STAMP + 8 + c["cap"].ravel()[row]).astype(cols.dtype)[:, None]
            ].tobytes()
        done = sent == n
        if done.any():
            both = c["c2s"][done] + c["s2c"][done]
            tally.largest_bi_bytes = max(tally.largest_bi_bytes, int(both.max()))
            uni = np.maximum(c["c2s"][done], c["s2c"][done]).max()
            tally.largest_uni_bytes = max(tally.largest_uni_bytes, int(uni))
            active = active.take(~done)


def _count_new(tally: Tally, f: _Flows) -> None:
    n, proto = f.c["n"], f.c["proto"]
    tally.packets += int(n.sum())
    tally.flows_bi += len(f)
    tally.flows_uni += int(np.where(n == 1, 1, 2).sum())
    tally.ipv6_packets += int(n[f.c["v6"]].sum())
    tally.tcp_packets += int(n[proto == 6].sum())
    tally.udp_packets += int(n[proto == 17].sum())
    tally.icmp_packets += int(n[proto == 1].sum())


def pcap_header(spec: TraceSpec) -> bytes:
    """Classic pcap's global header: little-endian, µs or ns magic, snaplen, LINKTYPE_ETHERNET."""
    magic = 0xA1B23C4D if spec.nanosecond else 0xA1B2C3D4
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, spec.snaplen, 1)


def write_trace(path: str | Path, spec: TraceSpec) -> Truth:
    """Write the trace to ``path`` (gzip level 1 when it ends in ``.gz``); return its truth."""
    tally = Tally()
    with open(path, "wb") as raw:
        gz = str(path).endswith(".gz")
        out: IO[bytes] = gzip.GzipFile("", "wb", 1, raw, mtime=0) if gz else raw
        out.write(pcap_header(spec))
        for chunk in records(spec, tally):
            out.write(chunk)
        out.close()
    return tally.truth(spec)
