"""How numbers, times, protocols and rules read on a terminal (pure; shared by every CLI)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from flowherd.models.flows import NS
from flowherd.models.report import ConvRow, ElephantRule, FlowRow

_SI = ("k", "M", "G", "T", "P", "E")

#: Display names of the common IP protocols.
PROTOCOL_NAMES: dict[int, str] = {
    1: "ICMP",
    6: "TCP",
    17: "UDP",
    47: "GRE",
    50: "ESP",
    58: "ICMPv6",
    132: "SCTP",
}


def proto_name(p: int) -> str:
    """``TCP``, ``UDP``, ``ICMP``, ``ICMPv6``, ``GRE``, ``ESP``, ``SCTP``, else the number."""
    return PROTOCOL_NAMES.get(p, str(p))


def human_duration(ns: int) -> str:
    """A duration in seconds with millisecond precision, e.g. ``12.345 s``."""
    return f"{Decimal(ns) / NS:.3f} s"


def human_ts(ns: int) -> str:
    """A timestamp as UTC date and time with nanoseconds, e.g. ``1999-03-11 13:45:18.266121000
    UTC`` (timezone-aware; never local time)."""
    t = datetime.fromtimestamp(ns // NS, tz=UTC)
    return f"{t:%Y-%m-%d %H:%M:%S}.{ns % NS:09d} UTC"


def rate(row: FlowRow | ConvRow) -> Fraction:
    """Bytes per second over the row's duration (``last_ns - first_ns``), exactly.

    A one-packet row, or one whose packets share a timestamp (duration 0), has rate 0: it has
    no duration to spread its bytes over, and ranking it first would only reward short flows.
    """
    d = row.last_ns - row.first_ns
    if row.packets < 2 or d <= 0:
        return Fraction(0)
    return Fraction(row.bytes * NS, d)


def _si(value: Decimal, unit: str) -> str:
    """``value`` (>= 0) with an SI prefix and 3 significant digits, e.g. ``1.23 MB``."""
    for i, prefix in enumerate(("", *_SI)):
        d = value.scaleb(-3 * i)
        if i < len(_SI) and d >= 1000:
            continue
        if d == 0:
            return f"0 {prefix}{unit}"
        q = d.quantize(Decimal(1).scaleb(min(0, d.adjusted() - 2)), ROUND_HALF_EVEN)
        if q.adjusted() != d.adjusted():  # 9.996 -> 10.00: drop the fourth digit
            q = q.quantize(Decimal(1).scaleb(min(0, q.adjusted() - 2)), ROUND_HALF_EVEN)
        if q >= 1000 and i < len(_SI):
            continue
        return f"{q} {prefix}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_bytes(n: int) -> str:
    """Bytes in SI units with 3 significant digits: ``999 B``, ``1.23 kB``, ``45.6 MB``.

    Below 1000 the exact count is shown. Negative values get a leading ``-``.
    """
    if n < 0:
        return "-" + human_bytes(-n)
    if n < 1000:
        return f"{n} B"
    return _si(Decimal(n), "B")


def human_rate(bytes_per_s: Fraction | float | int) -> str:
    """A byte rate as bits per second in SI units, 3 significant digits: ``8.00 Mbit/s``."""
    v = Fraction(bytes_per_s) * 8
    if v < 0:
        return "-" + human_rate(-Fraction(bytes_per_s))
    return _si(Decimal(v.numerator) / Decimal(v.denominator), "bit/s")


def rule_text(rule: ElephantRule) -> str:
    """A rule's definition in words, e.g. ``>= 1% of all bytes`` or ``constant load, beta=0.8``."""
    if rule.kind == "top_n":
        return f"the {rule.n} largest flows"
    if rule.kind == "threshold":
        if rule.bytes is not None:
            return f">= {human_bytes(rule.bytes)}"
        return f">= {(rule.fraction or 0) * 100:g}% of all bytes"
    if rule.kind == "constant_load":
        beta = rule.beta or 0.0
        return f"fewest largest flows with {beta * 100:g}% of bytes (constant load, beta={beta:g})"
    return "> mean + 3 sigma"
