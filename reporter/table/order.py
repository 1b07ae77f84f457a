"""Ranking of flow rows: the top N by bytes, packets, duration or rate, and protocol names.

Works on :class:`~flowherd.models.report.FlowRow` (unidirectional) and
:class:`~flowherd.models.report.ConvRow` (bidirectional) rows alike; both carry ``proto``,
``packets``, ``bytes``, ``first_ns`` and ``last_ns``. Pure: no I/O.

Order
-----
Rows are ranked by the chosen measure (descending), then by bytes (descending), then packets
(descending), then by their key fields, compared exactly as the oracle compares them (the text
of the key tuple, ``str((src, dst, proto, sport, dport))`` for a flow and
``str([proto, a_addr, a_port, b_addr, b_port])`` for a conversation). So the full ranking by
bytes is the row order of the oracle's ``.uni.csv`` and ``.bi.csv`` files, and two rows never
tie unless they have the same key.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from fractions import Fraction

from flowherd.console.units import PROTOCOL_NAMES, rate
from flowherd.models.report import RANK_BY, ConvRow, FlowRow, RankBy, RowT

__all__ = ["PROTOCOLS", "PROTOCOL_NAMES", "parse_proto", "rate", "sort_key", "top"]


#: IP protocol numbers by the (lower-case) names :func:`parse_proto` accepts.
PROTOCOLS: dict[str, int] = {name.lower(): p for p, name in PROTOCOL_NAMES.items()} | {
    "ipv6-icmp": 58
}

_SortKey = tuple[int | Fraction, int, int, str]


def parse_proto(text: str) -> int:
    """An IP protocol from its name (``tcp``, ``udp``, ``icmp``, ``icmpv6``/``ipv6-icmp``,
    ``gre``, ``esp``, ``sctp``; any case) or its number (``0``-``255``).

    Raises :class:`ValueError` naming the accepted forms for anything else.
    """
    t = text.strip().lower()
    if t in PROTOCOLS:
        return PROTOCOLS[t]
    if t.isdigit() and t.isascii():
        p = int(t)
        if p <= 255:
            return p
        raise ValueError(f"protocol number {p} is out of range: use 0-255")
    names = ", ".join(PROTOCOLS)
    raise ValueError(f"unknown protocol {text!r}: use one of {names} or a number 0-255")


def key_text(row: FlowRow | ConvRow) -> str:
    """The row's key as the oracle's tie-break compares it (see the module docstring)."""
    if isinstance(row, FlowRow):
        return str((row.src, row.dst, row.proto, row.sport, row.dport))
    return str([row.proto, row.a_addr, row.a_port, row.b_addr, row.b_port])


def _measure(by: str) -> Callable[[FlowRow | ConvRow], int | Fraction]:
    if by == "bytes":
        return lambda r: r.bytes
    if by == "packets":
        return lambda r: r.packets
    if by == "duration":
        return lambda r: r.last_ns - r.first_ns
    if by == "rate":
        return rate
    raise ValueError(f"cannot rank by {by!r}: use one of {', '.join(RANK_BY)}")


def sort_key(by: RankBy) -> Callable[[FlowRow | ConvRow], _SortKey]:
    """An ascending sort key that puts rows in ranking order (largest ``by`` first).

    Raises :class:`ValueError` for an unknown ``by``.
    """
    measure = _measure(by)

    def key(r: FlowRow | ConvRow) -> _SortKey:
        return (-measure(r), -r.bytes, -r.packets, key_text(r))

    return key


def top(rows: Iterable[RowT], by: RankBy, n: int, proto: int | None = None) -> list[RowT]:
    """The ``n`` highest-ranked rows by ``by``, best first (see the module docstring).

    ``proto`` keeps only rows of that IP protocol. The result is exactly the first ``n`` rows
    of the fully sorted input (``heapq.nsmallest`` keeps only ``n`` rows in memory, and sorts
    when ``n`` covers the whole input). Raises :class:`ValueError` for a negative ``n`` or an
    unknown ``by``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    key = sort_key(by)
    if proto is not None:
        rows = (r for r in rows if r.proto == proto)
    return heapq.nsmallest(n, rows, key=key)
