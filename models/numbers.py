"""Numbers users type: counts, durations, sizes, rates and times, read in one place, with bounds.

Every count, duration, size and rate of an option, a ``FLOWHERD_*`` setting, a ``--where``
filter or a web parameter is read here, by the same rules:

* ASCII digits with an optional fraction (``1.5``, ``.5``): no sign, no exponent, no ``inf`` or
  ``nan``, no other script's digits (``٣`` is not 3), at most :data:`MAX_DIGITS` characters;
* then a unit from the quantity's table (case as the table says), spaces allowed between;
* the value, in its base unit (packets, bytes, ns, bit/s), whole where the base unit is, and
  within ``[lo, hi]``: at most :data:`MAX_STORED` (what a Redis integer holds) unless the
  caller narrows it.

Every failure is a :class:`NumberError` (a :class:`ValueError`) whose one-line message names
what was expected and shows at most :data:`SHOWN` characters of the text. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction

#: the largest value any stored counter, size or time holds (a signed 64-bit Redis integer)
MAX_STORED = 2**63 - 1
#: the longest number (digits and the point) read at all: beyond any bound, and far below
#: Python's integer-string limit
MAX_DIGITS = 40
#: the longest duration: 100 years, in ns
MAX_DURATION_NS = 100 * 36525 * 86400 * 10**7
#: the latest time a capture can hold, in ns since the epoch (pcapng's and pcap's limit too)
MAX_EPOCH_NS = 10**19 - 1
#: at most this many characters of a refused text appear in a message
SHOWN = 40

NS = 10**9
COUNT_UNITS: Mapping[str, int] = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
SIZE_UNITS: Mapping[str, int] = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
TIME_UNITS: Mapping[str, int] = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "ms": 10**6,
    "s": NS,
    "m": 60 * NS,
    "min": 60 * NS,
    "h": 3600 * NS,
    "d": 86400 * NS,
}
_PREFIX: Mapping[str, int] = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)
_UNIT = re.compile(r"[A-Za-zµ/%]*")


class NumberError(ValueError):
    """A number the user typed that flowherd will not take (the message says why)."""


class NumberRangeError(NumberError):
    """A well-formed number out of bounds, or one with more than :data:`MAX_DIGITS` digits."""


def shown(text: str) -> str:
    """``text`` quoted for a message, cut to :data:`SHOWN` characters."""
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def split(text: str, what: str) -> tuple[Fraction, str]:
    """``(value, unit)`` of ``text``: an ASCII decimal and the letters after it (any case, as
    written). :class:`NumberError` naming ``what`` for anything else."""
    t = text.strip()
    m = _NUMBER.match(t)
    if m is None:
        raise NumberError(f"{shown(text)} is not {what}")
    if m.end() > MAX_DIGITS:
        raise NumberRangeError(
            f"{shown(text)} has too many digits (at most {MAX_DIGITS}): not {what}"
        )
    rest = t[m.end() :].lstrip()
    if _UNIT.fullmatch(rest) is None:
        raise NumberError(f"{shown(text)} is not {what}")
    return Fraction(m.group()), rest


def bounded(value: Fraction, text: str, what: str, lo: Fraction | int, hi: Fraction | int) -> None:
    if value < lo or value > hi:
        shown_text = text.strip()[:SHOWN]
        raise NumberRangeError(
            f"{shown_text} is out of range for {what}: use {_plain(lo)} to {_plain(hi)}"
        )


def _plain(x: Fraction | int) -> str:
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


def scaled(
    text: str,
    units: Mapping[str, int],
    what: str,
    *,
    lo: Fraction | int = 0,
    hi: Fraction | int = MAX_STORED,
    whole: bool = True,
    default: str = "",
    fold: bool = True,
) -> Fraction:
    """The value of ``text`` times its unit from ``units`` (``default`` when none is written;
    case-folded when ``fold``); whole unless ``whole`` is False; within ``[lo, hi]``."""
    value, unit = split(text, what)
    key = (unit.lower() if fold else unit) or default
    if key not in units:
        names = ", ".join(u for u in units if u)
        raise NumberError(f"{shown(text)}: unknown unit {unit!r} for {what} (use {names})")
    v = value * units[key]
    if whole and v.denominator != 1:
        raise NumberError(f"{shown(text)} is not a whole number: {what} counts in whole units")
    bounded(v, text, what, lo, hi)
    return v


def count(
    text: str, what: str = "a count", *, lo: int = 0, hi: int = MAX_STORED, units: bool = False
) -> int:
    """A whole number such as ``10`` (with ``units``: also ``2k``, ``1.5M``, ``3G``)."""
    return int(scaled(text, COUNT_UNITS if units else {"": 1}, what, lo=lo, hi=hi))


def size(text: str, what: str = "a size", *, lo: int = 0, hi: int = MAX_STORED) -> int:
    """Bytes in ``1500``, ``10k``, ``1.5M``, ``2GB`` or ``64KiB`` (SI and binary prefixes, any
    case); whole bytes."""
    return int(scaled(text, SIZE_UNITS, what, lo=lo, hi=hi))


def duration_ns(
    text: str,
    what: str = "a duration",
    *,
    lo: int = 1,
    hi: int = MAX_DURATION_NS,
    default: str = "s",
) -> int:
    """Nanoseconds in ``500ms``, ``30s``, ``1.5min``, ``10m``, ``2h``, ``1d``, ``100us`` or
    ``1ns`` (no unit: ``default``); whole nanoseconds, at least ``lo`` (1 ns)."""
    return int(scaled(text, TIME_UNITS, what, lo=lo, hi=hi, default=default))


def seconds(
    text: str, what: str = "a duration", *, lo_ns: int = 1, hi_ns: int = MAX_DURATION_NS
) -> float:
    """:func:`duration_ns` in seconds."""
    return duration_ns(text, what, lo=lo_ns, hi=hi_ns) / NS


def bit_rate(text: str, what: str = "a rate") -> Fraction:
    """Bit/s in ``1M``, ``500kbps``, ``2Gbit/s``, ``1b/s`` (bits) or ``10MB/s``, ``1MBps``
    (bytes: a capital ``B``); prefixes k, M, G, T in any case."""
    value, unit = split(text, what)
    for suffix, mult in (("bit/s", 1), ("bps", 1), ("b/s", 1), ("Bps", 8), ("B/s", 8), ("", 1)):
        if unit.endswith(suffix):
            pre = unit[: len(unit) - len(suffix)].lower()
            if pre in _PREFIX:
                v = value * _PREFIX[pre] * mult
                bounded(v, text, what, 0, MAX_STORED)
                return v
    raise NumberError(f"{shown(text)}: unknown unit {unit!r} for {what} (use e.g. 10Mbit/s, 1MB/s)")


def byte_rate(text: str, what: str = "a rate") -> Fraction:
    """Bytes per second in ``10Mbit/s``, ``10Mbps`` (bits, SI prefixes) or ``1MB/s``,
    ``512KiB/s`` (bytes); units in any case."""
    value, unit = split(text, what)
    u = unit.lower()
    for suffix in ("bit/s", "bps"):
        if u.endswith(suffix) and u[: -len(suffix)] in _PREFIX:
            v = value * _PREFIX[u[: -len(suffix)]] / 8
            bounded(v, text, what, 0, MAX_STORED)
            return v
    if u.endswith("/s") and u[:-2] in SIZE_UNITS and u[:-2]:
        v = value * SIZE_UNITS[u[:-2]]
        bounded(v, text, what, 0, MAX_STORED)
        return v
    raise NumberError(
        f"{shown(text)}: unknown unit {unit!r} for {what} (use e.g. 10Mbit/s, 10Mbps, 1MB/s)"
    )


def epoch_ns(text: str, what: str = "a time in epoch seconds") -> int:
    """Nanoseconds since the epoch in ``1704067200`` or ``1704067200.5`` (seconds, no unit),
    rounded to the nanosecond, at most :data:`MAX_EPOCH_NS`."""
    v = scaled(text, {"": NS}, what, hi=MAX_EPOCH_NS, whole=False)
    return round(v)


def fraction(text: str, what: str) -> Fraction:
    """A share in (0, 1]: ``0.05`` or ``5%``."""
    t = text.strip()
    pct = t.endswith("%")
    value, unit = split(t[:-1] if pct else t, f"{what}: a number in (0, 1] or a percentage")
    if unit:
        raise NumberError(f"{shown(text)} is not {what}: a number in (0, 1] or a percentage")
    v = value / 100 if pct else value
    if not 0 < v <= 1:
        raise NumberError(f"{what} must be in (0, 1] (or (0%, 100%]), not {shown(text)}")
    return v


def real(value: float, what: str, *, lo: float = 0.0, hi: float = float(MAX_STORED)) -> float:
    """``value`` when it is finite and within ``[lo, hi]``; :class:`NumberError` otherwise (a
    number already read as a float: a setting, a click ``FloatRange``)."""
    if not math.isfinite(value):
        raise NumberError(f"{value!r} is not {what}: it must be a finite number")
    if not lo <= value <= hi:
        raise NumberError(f"{value:g} is out of range for {what}: use {lo:g} to {hi:g}")
    return value
