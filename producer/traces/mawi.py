"""MAWI-like header-only traces of any size, streamed to disk in constant memory.

::

    truth = write_trace("mawi.pcap.gz", SCALES["small"])  # or TraceSpec(packets=.., flows=..)
    truth.packets, truth.bytes, truth.flows_uni, truth.flows_bi  # exact, counted while writing

The trace looks like a MAWI sample (a backbone link, 15 minutes, ``tcpdump -s 96``): a classic
pcap of Ethernet frames, each captured at ``min(wire, snaplen)`` bytes with its whole wire length
in ``orig_len``; IPv4 and IPv6 (``v6_share`` of the flows); TCP with handshakes and both
directions (downloads, uploads, interactive), UDP (DNS-like exchanges, QUIC-like bulk), ICMP
echoes; heavy-tailed flow sizes (a third single packets, the rest a bounded Pareto, the mean
``packets / flows``: a few elephants carry most of the bytes); flows interleaved in time, with
non-decreasing timestamps over ``duration_s``.

How memory stays constant: the flows (:mod:`flowherd.producer.traces.mawi_flows`) start at sorted
uniform times drawn in blocks, and everything else about flow ``i`` is a hash of ``(seed, i)``. Time
is cut into slices of about :data:`SLICE_PACKETS` packets (a busy one is halved until it holds at
most :data:`MAX_SLICE`); each slice adds the flows that start in it, computes the packets of every
active flow that fall in it (numpy, from per-flow record templates:
:mod:`flowherd.producer.traces.mawi_frames`), sorts them by time, writes them, and drops the flows
that have ended. Memory holds the active flows (a few thousand) and one slice, whatever the trace's
size. Flow keys are unique by construction, so the counts are exact without a table of flows. The
same spec writes the same bytes on a given platform (the gzip header has no name or time).

:class:`Truth` is in the terms of flowherd's summary: bytes are wire lengths, a conversation is
one of ``flows_bi``, each of its directions that sent a packet one of ``flows_uni``.
"""

from __future__ import annotations

import contextlib
import gzip
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flowherd.producer.traces.mawi_flows import Flows, Population, uniform
from flowherd.producer.traces.mawi_frames import STAMP, K, kinds, row_width

BASE_NS = 1_704_085_200 * 10**9  # 2024-01-01 05:00 UTC: 14:00 JST, when MAWI's daily sample starts
SLICE_PACKETS = 1 << 14  # packets per time slice, on average
MAX_SLICE = 1 << 15  # packets per slice at most: a busy slice is cut in halves until it fits
_G = 10**9


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


def records(spec: TraceSpec, tally: Tally) -> Iterator[tuple[int, bytes]]:
    """The trace's pcap records in chunks (one per time slice) as (record count, bytes),
    filling ``tally`` as it goes.

    No I/O; memory holds the active flows and one slice. ValueError if ``packets < flows``.
    """
    if spec.packets < spec.flows:
        raise ValueError(f"{spec.packets} packets cannot make {spec.flows} flows")
    span = int(spec.duration_s * _G)
    pop = Population(spec.seed, spec.flows, spec.packets, span, spec.v6_share, spec.snaplen)
    xm = pop.xm
    slice_ns = span * SLICE_PACKETS / spec.packets
    starts = pop.starts()
    pend_i, pend_s = next(starts)
    active: Flows | None = None
    width = row_width(spec.snaplen)
    cols = np.arange(width, dtype=np.uint8 if width < 256 else np.uint16)
    s, t0 = 1, 0
    while pend_i.size or (active is not None and len(active)):
        target = int(s * slice_ns) if s * slice_ns < span else 1 << 62  # the last: the rest
        while pend_i.size and pend_s[0] < target:  # the flows starting in this slice
            cut = int(np.searchsorted(pend_s, target))
            new = pop.make(pend_i[:cut], pend_s[:cut], xm)
            _count_new(tally, new)
            active = new if active is None else active.extend(new)
            pend_i, pend_s = pend_i[cut:], pend_s[cut:]
            if not pend_i.size:
                pend_i, pend_s = next(starts, (pend_i, pend_s))
        if active is None:
            s, t0 = s + 1, target
            continue
        tally.peak_active_flows = max(tally.peak_active_flows, len(active))
        c = active.c
        n, sent = c["n"], c["sent"]
        t1 = target
        while True:  # packets k <= last can fall before t1 (a bound: jitter may push them after)
            last = np.minimum(n, np.floor((t1 - c["start"]) / c["gap"]) + 1).astype(np.int64)
            cnt = np.maximum(last - sent, 0)
            if cnt.sum() <= MAX_SLICE or t1 - t0 < 2:
                break
            t1 = t0 + (t1 - t0) // 2  # an elephant squeezed into the end of the trace
        s, t0 = s + (t1 == target), t1
        rep = np.repeat(np.arange(len(active)), cnt)
        k = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt) + sent[rep]
        jitter = 0.9 * uniform(spec.seed, 99, c["i"][rep], k)  # packet k in [k, k + 0.9) gaps
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
            res = 1 if spec.nanosecond else 1000  # the file's resolution, for the truth
            tally.first_ns = tally.first_ns or int(ts[0]) // res * res
            tally.last_ns = int(ts[-1]) // res * res
            out = c["recs"].reshape(-1, width)[row]  # whole template rows, then fill the times
            stamp = out.view("<u4")
            stamp[:, 0], frac = np.divmod(ts, _G)
            stamp[:, 1] = frac if spec.nanosecond else frac // 1000
            keep_cols = cols < (STAMP + 8 + c["cap"].ravel()[row]).astype(cols.dtype)[:, None]
            yield rep.size, out[keep_cols].tobytes()
        done = sent == n
        if done.any():
            both = c["c2s"][done] + c["s2c"][done]
            tally.largest_bi_bytes = max(tally.largest_bi_bytes, int(both.max()))
            uni = np.maximum(c["c2s"][done], c["s2c"][done]).max()
            tally.largest_uni_bytes = max(tally.largest_uni_bytes, int(uni))
            active = active.take(~done)


def _count_new(tally: Tally, f: Flows) -> None:
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


def write_trace(
    path: str | Path | BinaryIO,
    spec: TraceSpec,
    progress: Callable[[int], None] | None = None,
    gz: bool | None = None,
) -> Truth:
    """Write the trace to ``path`` (a file name, or a binary file open for writing; gzip level
    1 when ``gz``, by default when the name ends in ``.gz``); return its truth.

    ``progress(records written so far)`` is called after every chunk. OSError if ``path``
    cannot be written.
    """
    tally, written = Tally(), 0
    if gz is None:
        gz = isinstance(path, str | Path) and str(path).endswith(".gz")
    opened = open(path, "wb") if isinstance(path, str | Path) else contextlib.nullcontext(path)  # noqa: SIM115
    with opened as raw:
        out: IO[bytes] = gzip.GzipFile("", "wb", 1, raw, mtime=0) if gz else raw  # type: ignore[assignment]
        out.write(pcap_header(spec))
        for n, chunk in records(spec, tally):
            out.write(chunk)
            written += n
            if progress:
                progress(written)
        if out is not raw:  # the gzip stream ends here; a file given to us stays open
            out.close()
    return tally.truth(spec)
