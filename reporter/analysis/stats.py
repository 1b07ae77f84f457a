"""Statistics by key: top talkers, ports, prefixes and host pairs of a flow table.

Each flow of the chosen view (``uni``: one per direction that carried packets, as NetFlow and
nfdump count records; ``bi``: one per conversation) is attributed to the values of a key
(:class:`KeySpec`): ``srcip``/``dstip``, ``sport``/``dport``, ``srcnet/N``/``dstnet/N`` (the
address masked to a prefix), ``proto``, ``pair`` (``src -> dst``; in ``bi`` the unordered
``a <-> b``, smaller address first). The two-endpoint keys ``ip``, ``port`` and ``net/N``
attribute a flow to its source and to its destination, as tshark's ``-z endpoints`` does: its
packets and bytes count for each endpoint (twice for a flow whose two endpoints are equal, as
tshark's Tx + Rx), and the flow counts once per distinct value. In ``bi`` the source of a
conversation is its endpoint A (the sender of its first packet,
:func:`flowherd.reporter.table.views.conv_row`) and its packets are those of both directions.

Per key: packets, bytes, flows, the earliest first and latest last timestamp, shares (percent
of the packets, bytes and flows counted in the view: the totals, not the sum over keys, which
is twice them for two-endpoint keys) and nfdump's rates: ``pps = packets / span`` and
``bps = 8 * bytes / span`` over the key's active span ``last - first`` in seconds, 0 when the
span is 0.

Memory: one counter per distinct key, at most ``max_keys`` at once; past that, the counters are
written to a temporary file in key order and cleared, and the files are merged at the end (a
spill, like :mod:`flowherd.reporter.output.ranked_lines`'s runs). Ranking keeps ``n`` rows; ``n =
0`` (every key) sorts through temporary files of ``max_keys`` rows. Files are removed when
:func:`key_stats` exits. Pure apart from those temporary files: no Redis, no display.
"""

from __future__ import annotations

import heapq
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from flowherd.models.flows import NO_FIRST, NO_LAST, NS
from flowherd.models.report import View
from flowherd.reporter.analysis.keys import (
    KEY_FORMS,
    KINDS,
    Flow,
    Keep,
    KeySpec,
    key_text,
    key_values,
    key_width,
    parse_key,
    view_flows,
)
from flowherd.reporter.table.packed import Pair

__all__ = [
    "BY",
    "KEY_FORMS",
    "KINDS",
    "MAX_KEYS",
    "Keep",
    "KeySpec",
    "StatRow",
    "Totals",
    "key_stats",
    "parse_key",
]

By = Literal["bytes", "packets", "flows", "pps", "bps"]
BY: tuple[By, ...] = ("bytes", "packets", "flows", "pps", "bps")
#: Distinct keys held in memory before the counters spill to disk.
MAX_KEYS = 100_000

_F64 = 2**64 - 1  # complements of counts and of doubles' bit patterns sort descending
_DOUBLE = struct.Struct(">d")
_RANK = struct.Struct(">4Q")  # measure, bytes, packets, flows: complemented
_COUNTS = struct.Struct("<5q")  # packets, bytes, flows, first_ns, last_ns


@dataclass
class Totals:
    """What the view counted (after ``keep``): the denominators of the shares."""

    packets: int = 0
    bytes: int = 0
    flows: int = 0
    first_ns: int = NO_FIRST
    last_ns: int = NO_LAST


@dataclass(frozen=True, slots=True)
class StatRow:
    """One key's statistics (see the module docstring for each figure)."""

    key: str
    packets: int
    bytes: int
    flows: int
    packets_pct: float
    bytes_pct: float
    flows_pct: float
    pps: float
    bps: float
    first_ns: int
    last_ns: int


# counters of one key: [packets, bytes, flows, first_ns, last_ns]
Counts = list[int]


def _rate(c: Counts, by: str) -> float:
    span = c[4] - c[3]
    if span <= 0:
        return 0.0
    return c[0] * NS / span if by == "pps" else 8 * c[1] * NS / span


def measure(c: Counts, by: str) -> float:
    """The ranking measure ``by`` of a key's counters."""
    if by in ("pps", "bps"):
        return _rate(c, by)
    return c[("packets", "bytes", "flows").index(by)]


def _spill(recs: list[bytes], stack: ExitStack, state: dict[str, str], tmpdir: str | None) -> str:
    """Write sorted records to a new run file (in a temporary directory the stack removes)."""
    if "dir" not in state:
        state["dir"] = stack.enter_context(tempfile.TemporaryDirectory(dir=tmpdir))
    path = os.path.join(state["dir"], f"run{len(os.listdir(state['dir']))}")
    with open(path, "wb") as fh:
        fh.writelines(recs)
    return path


def _read(path: str, size: int, stack: ExitStack) -> Iterator[bytes]:
    """The fixed-size records of a run file, in order."""
    # closed when the stack exits
    fh = stack.enter_context(open(path, "rb"))  # noqa: SIM115
    while chunk := fh.read(size * 4096):
        for i in range(0, len(chunk), size):
            yield chunk[i : i + size]


def aggregate(
    flows: Iterable[Flow],
    values: Callable[[Flow], tuple[bytes, ...]],
    width: int,
    totals: Totals,
    stack: ExitStack,
    max_keys: int = MAX_KEYS,
    tmpdir: str | None = None,
) -> Iterator[tuple[bytes, Counts]]:
    """Fold ``flows`` into counters per key value (adding to ``totals``) and return them in key
    order as ``(key, counts)``: lazily merged from spilled runs past ``max_keys`` keys. Keys
    read back from runs are padded with zero bytes to ``width`` (:func:`key_width`)."""
    d: dict[bytes, Counts] = {}
    runs: list[str] = []
    state: dict[str, str] = {}
    get = d.get
    tp, tb, tf, t0, t1 = totals.packets, totals.bytes, totals.flows, totals.first_ns, totals.last_ns
    for f in flows:
        p, b, first, last = f[5], f[6], f[7], f[8]
        tp += p
        tb += b
        tf += 1
        if first < t0:
            t0 = first
        if last > t1:
            t1 = last
        ks = values(f)
        if len(ks) == 2 and ks[0] == ks[1]:  # both endpoints: counted twice, one flow
            ks, p, b = ks[:1], 2 * p, 2 * b
        for k in ks:
            c = get(k)
            if c is None:
                d[k] = [p, b, 1, first, last]
                continue
            c[0] += p
            c[1] += b
            c[2] += 1
            if first < c[3]:
                c[3] = first
            if last > c[4]:
                c[4] = last
        if len(d) >= max_keys:
            runs.append(_spill(_packed(d, width), stack, state, tmpdir))
            d.clear()
    totals.packets, totals.bytes, totals.flows, totals.first_ns, totals.last_ns = tp, tb, tf, t0, t1
    if not runs:
        return ((k, d[k]) for k in sorted(d))
    size = width + _COUNTS.size
    merged = heapq.merge(_packed(d, width), *(_read(r, size, stack) for r in runs))
    return _combine((r[:width], list(_COUNTS.unpack_from(r, width))) for r in merged)


def _packed(d: dict[bytes, Counts], width: int) -> list[bytes]:
    """The counters as records (key padded to ``width``, then the counts) in key order."""
    pack = _COUNTS.pack
    return [k.ljust(width, b"\0") + pack(*d[k]) for k in sorted(d)]


def _combine(entries: Iterable[tuple[bytes, Counts]]) -> Iterator[tuple[bytes, Counts]]:
    """Entries in key order with equal keys' counters added up."""
    cur: tuple[bytes, Counts] | None = None
    for k, c in entries:
        if cur is not None and cur[0] == k:
            a = cur[1]
            cur = (k, [a[0] + c[0], a[1] + c[1], a[2] + c[2], min(a[3], c[3]), max(a[4], c[4])])
            continue
        if cur is not None:
            yield cur
        cur = (k, c)
    if cur is not None:
        yield cur


def _rank_record(key: bytes, c: Counts, by: str, width: int) -> bytes:
    """A record whose byte order is the ranking: measure, bytes, packets and flows descending
    (complemented, big-endian), then the key; the counts follow."""
    m = measure(c, by)
    top = _F64 - int.from_bytes(_DOUBLE.pack(m), "big") if by in ("pps", "bps") else _F64 - int(m)
    head = _RANK.pack(top, _F64 - c[1], _F64 - c[0], _F64 - c[2])
    return head + key.ljust(width, b"\0") + _COUNTS.pack(*c)


def ranked(
    entries: Iterable[tuple[bytes, Counts]],
    by: str,
    n: int,
    width: int,
    stack: ExitStack,
    run_rows: int = MAX_KEYS,
    tmpdir: str | None = None,
) -> Iterator[tuple[bytes, Counts]]:
    """The ``n`` best entries by ``by`` (0: all of them), best first; ties by bytes, packets
    and flows descending, then key order. ``n = 0`` sorts through runs of ``run_rows``."""
    if n > 0:
        best = heapq.nsmallest(
            n, entries, key=lambda e: (-measure(e[1], by), -e[1][1], -e[1][0], -e[1][2], e[0])
        )
        yield from best
        return
    runs: list[str] = []
    state: dict[str, str] = {}
    buf: list[bytes] = []
    for k, c in entries:
        buf.append(_rank_record(k, c, by, width))
        if len(buf) >= run_rows:
            buf.sort()
            runs.append(_spill(buf, stack, state, tmpdir))
            buf = []
    buf.sort()
    at, size = _RANK.size + width, _RANK.size + width + _COUNTS.size
    for r in heapq.merge(buf, *(_read(path, size, stack) for path in runs)):
        yield r[_RANK.size : at], list(_COUNTS.unpack_from(r, at))


def _pct(x: int, total: int) -> float:
    return x * 100 / total if total else 0.0


def row_of(spec: KeySpec, view: View, key: bytes, c: Counts, tot: Totals) -> StatRow:
    return StatRow(
        key=key_text(spec, view, key),
        packets=c[0],
        bytes=c[1],
        flows=c[2],
        packets_pct=_pct(c[0], tot.packets),
        bytes_pct=_pct(c[1], tot.bytes),
        flows_pct=_pct(c[2], tot.flows),
        pps=_rate(c, "pps"),
        bps=_rate(c, "bps"),
        first_ns=c[3],
        last_ns=c[4],
    )


@contextmanager
def key_stats(
    pairs: Iterable[Pair],
    spec: KeySpec,
    view: View = "uni",
    by: By = "bytes",
    n: int = 10,
    threshold: float | None = None,
    percentage: float | None = None,
    keep: Keep | None = None,
    max_keys: int = MAX_KEYS,
    tmpdir: str | None = None,
) -> Iterator[tuple[Totals, Iterator[StatRow]]]:
    """Statistics of ``spec`` over stored records ``pairs``: ``(totals, rows best first)``.

    Rows are the ``n`` best keys by ``by`` (``n = 0``: every key) among those whose measure is
    at least ``threshold``, or whose share of the view's total is at least ``percentage``
    percent (bytes, packets and flows only). The records are read (and aggregated) on entry;
    rows stream while the block runs. Raises :class:`ValueError` for bad arguments.
    """
    if by not in BY:
        raise ValueError(f"--by takes one of {', '.join(BY)}, not {by!r}")
    if percentage is not None and by in ("pps", "bps"):
        raise ValueError(f"a percentage of {by} means nothing: use --threshold with --by {by}")
    if n < 0 or max_keys < 1:
        raise ValueError(f"n must be >= 0 and max_keys >= 1, not {n} and {max_keys}")
    with ExitStack() as stack:
        tot = Totals()
        flows = view_flows(pairs, view, keep)
        width = key_width(spec)
        entries = aggregate(flows, key_values(spec, view), width, tot, stack, max_keys, tmpdir)
        lo: float | Fraction | None = threshold
        if percentage is not None:  # exactly: measure / whole >= percentage / 100
            whole = {"packets": tot.packets, "bytes": tot.bytes, "flows": tot.flows}[by]
            lo = Fraction(percentage) * whole / 100
        if lo is not None:
            floor = lo
            entries = (e for e in entries if measure(e[1], by) >= floor)
        best = ranked(entries, by, n, width, stack, max_keys, tmpdir)
        yield tot, (row_of(spec, view, k, c, tot) for k, c in best)
