"""``--where``: filter the flows of a report while they stream past.

::

    w = compile_where("proto tcp and dport 443 and bytes > 1M")   # WhereError if it is bad
    w.bi(key, st)              # a conversation (FlowKey, FlowStats) matches?
    w.uni(key, st, direction)  # one direction of it (0: A to B, 1: B to A) matches?
    w.pairs(pairs, "uni")      # stored (packed key, packed value) pairs, filtered

What ``src`` and ``dst`` mean:

* unidirectional view (``--direction uni``): the flow's sender and receiver, as the row shows
  them (``src``/``sport`` send to ``dst``/``dport``); packets, bytes, first, last, duration
  and rate are the direction's own;
* bidirectional view (``--direction bi``): ``src`` is endpoint A, the one that sent the first
  packet of the conversation (the row's ``a_addr``/``a_port``), ``dst`` is B; the counters
  are the conversation's (both directions).

``host``, ``net`` and ``port`` without ``src``/``dst`` match either endpoint in both views.

:meth:`Where.pairs` keeps what every stored-pair consumer (exports, top-N, sizes) reads: in
the bidirectional view a pair passes whole or not at all; in the unidirectional view a
direction that does not match is blanked (no packets, so no row), the other kept as stored.

:func:`where_option` is the click option every reporter command shares: ``--where TEXT``,
parsed when the command line is, so a bad filter fails at once with one line (exit code 2)
naming the column of the bad token, e.g. ``error: --where: unknown field 'dprt' at column 15``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

from flowherd.models.capture import CaptureStatus
from flowherd.models.flows import NO_FIRST, NO_LAST, FlowKey, FlowStats, addr_text
from flowherd.models.report import View
from flowherd.reporter.table.packed import VALUE, Pair, split_key
from flowherd.reporter.where.parse import FIELDS, Facts, Pred, WhereError, parse

__all__ = ["FIELDS", "Facts", "Where", "WhereError", "compile_where", "where_option"]

_NO_FIRST, _NO_LAST = b"%019d" % NO_FIRST, b"%019d" % NO_LAST
F = TypeVar("F", bound=Callable[..., Any])


def a_sent_first(key: FlowKey, st: FlowStats) -> bool:
    """Whether endpoint A of ``key`` is the conversation's A as
    :func:`flowherd.reporter.table.views.conv_row` orients it (the sender of the earliest packet; on
    a tie,
    the smaller ``(address as text, port)``)."""
    if st.first_ba > st.first_ab:
        return True
    same = key.a_addr == key.b_addr and key.a_port == key.b_port
    if st.first_ba < st.first_ab:
        return same
    a = (addr_text(key.a_addr), key.a_port)
    b = (addr_text(key.b_addr), key.b_port)
    return not (b < a) or same


def uni_facts(key: FlowKey, st: FlowStats, direction: int) -> Facts:
    """The facts of one direction (0: A to B, 1: B to A)."""
    if direction == 0:
        return Facts(key.a_addr, key.b_addr, key.proto, key.a_port, key.b_port,
                     st.pkts_ab, st.bytes_ab, st.first_ab, st.last_ab)  # fmt: skip
    return Facts(key.b_addr, key.a_addr, key.proto, key.b_port, key.a_port,
                 st.pkts_ba, st.bytes_ba, st.first_ba, st.last_ba)  # fmt: skip


def bi_facts(key: FlowKey, st: FlowStats) -> Facts:
    """The facts of a conversation, ``src`` being its A (see the module docstring)."""
    if a_sent_first(key, st):
        ends = (key.a_addr, key.b_addr, key.a_port, key.b_port)
    else:
        ends = (key.b_addr, key.a_addr, key.b_port, key.a_port)
    src, dst, sport, dport = ends
    return Facts(src, dst, key.proto, sport, dport, st.packets, st.bytes, st.first, st.last)


def _blank(st: FlowStats, direction: int) -> FlowStats:
    """``st`` without the counters of ``direction``."""
    if direction == 0:
        return FlowStats(0, 0, st.pkts_ba, st.bytes_ba, NO_FIRST, NO_LAST,
                         st.first_ba, st.last_ba, 0, st.flags_ba)  # fmt: skip
    return FlowStats(st.pkts_ab, st.bytes_ab, 0, 0, st.first_ab, st.last_ab,
                     NO_FIRST, NO_LAST, st.flags_ab, 0)  # fmt: skip


class Where:
    """A compiled ``--where`` filter (see the module docstring); ``text`` is what was given."""

    __slots__ = ("pred", "text")

    def __init__(self, text: str, pred: Pred) -> None:
        self.text = text
        self.pred = pred

    def __repr__(self) -> str:
        return f"Where({self.text!r})"

    def matches(self, facts: Facts) -> bool:
        return self.pred(facts)

    def bi(self, key: FlowKey, st: FlowStats) -> bool:
        """Whether the conversation matches (bidirectional view)."""
        return self.pred(bi_facts(key, st))

    def uni(self, key: FlowKey, st: FlowStats, direction: int) -> bool:
        """Whether one direction matches (unidirectional view); a direction without packets
        never does."""
        n = st.pkts_ab if direction == 0 else st.pkts_ba
        return n > 0 and self.pred(uni_facts(key, st, direction))

    def flows(
        self, flows: Iterable[tuple[FlowKey, FlowStats]], view: View
    ) -> Iterator[tuple[FlowKey, FlowStats]]:
        """:meth:`pairs` on unpacked ``(FlowKey, FlowStats)`` records."""
        for key, st in flows:
            if view == "bi":
                if self.bi(key, st):
                    yield key, st
                continue
            ok_ab, ok_ba = self.uni(key, st, 0), self.uni(key, st, 1)
            if (ok_ab and (ok_ba or not st.pkts_ba)) or (ok_ba and not st.pkts_ab):
                yield key, st
            elif ok_ab or ok_ba:
                yield key, _blank(st, 1 if ok_ab else 0)

    def pairs(self, pairs: Iterable[Pair], view: View) -> Iterator[Pair]:
        """The stored pairs that match in ``view`` (``uni``: with unmatched directions
        blanked), in their order. Raises :class:`ValueError` for a record that is not a flow
        record, like every reader of pairs."""
        if view not in ("uni", "bi"):
            raise ValueError(f"view must be 'uni' or 'bi', not {view!r}")
        pred, unpack = self.pred, VALUE.unpack
        for k, v in pairs:
            # the fields as stored, no models (this runs once per record of the table)
            a, b, p, ap, bp = split_key(k)
            pa, ba, pb, bb, fa, la, fb, lb, ga, gb = unpack(v)
            if view == "bi":
                ifa, ifb = int(fa), int(fb)
                if ifb != ifa:
                    a_first = ifb > ifa or (a, ap) == (b, bp)
                else:  # a tie: the text order decides (rare)
                    a_first = a_sent_first(FlowKey(a, b, p, ap, bp), FlowStats.unpack(v))
                src, dst, sport, dport = (a, b, ap, bp) if a_first else (b, a, bp, ap)
                first, last = min(ifa, ifb), max(int(la), int(lb))
                if pred(Facts(src, dst, p, sport, dport, int(pa + pb), int(ba + bb), first, last)):
                    yield k, v
                continue
            ok_ab = pa > 0 and pred(Facts(a, b, p, ap, bp, int(pa), int(ba), int(fa), int(la)))
            ok_ba = pb > 0 and pred(Facts(b, a, p, bp, ap, int(pb), int(bb), int(fb), int(lb)))
            if (ok_ab or not pa) and (ok_ba or not pb):
                if ok_ab or ok_ba:
                    yield k, v
            elif ok_ab:
                yield k, VALUE.pack(pa, ba, 0, 0, fa, la, _NO_FIRST, _NO_LAST, ga, 0)
            elif ok_ba:
                yield k, VALUE.pack(0, 0, pb, bb, _NO_FIRST, _NO_LAST, fb, lb, 0, gb)


def compile_where(text: str) -> Where:
    """The filter of ``text`` (grammar: ``docs/filters.md``, :mod:`flowherd.reporter.where.parse`).
    Raises :class:`WhereError` (a :class:`~flowherd.models.errors.FlowherdError` with exit code 2
    and a
    :class:`ValueError`) naming the column of the bad token."""
    return Where(text, parse(text))


def filtered(pairs: Iterable[Pair], where: Where | None, view: View) -> Iterable[Pair]:
    """``pairs`` through ``where`` (unchanged when there is no filter)."""
    return pairs if where is None else where.pairs(pairs, view)


def matched_status(status: CaptureStatus, pairs: Iterable[Pair]) -> CaptureStatus:
    """``status`` with the totals of ``pairs`` (already filtered) in place of the capture's:
    packets and bytes (all counted), first and last packet, conversations; no not-counted
    buckets (a frame outside every flow matches no filter)."""
    packets = nbytes = convs = 0
    first, last = NO_FIRST, NO_LAST
    for _, v in pairs:
        st = FlowStats.unpack(v)
        packets += st.packets
        nbytes += st.bytes
        convs += 1
        first, last = min(first, st.first), max(last, st.last)
    return status.model_copy(
        update={
            "packets": packets,
            "bytes": nbytes,
            "counted_packets": packets,
            "counted_bytes": nbytes,
            "flows": convs,
            "not_counted": {},
            "first_ns": first if packets else None,
            "last_ns": last if packets else None,
        }
    )


def _parse_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Where | None:
    if value is None:
        return None
    try:
        return compile_where(value)
    except WhereError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)
    raise AssertionError("unreachable")  # pragma: no cover


WHERE_HELP = (
    "Only the flows matching FILTER, e.g. 'proto tcp and dport 443 and bytes > 1M' or "
    "'net 10.0.0.0/8 and not port 53 and duration >= 5s'. Fields: proto, [src|dst] host, "
    "[src|dst] net, [src|dst] port, sport, dport, packets, bytes, duration, rate (bit/s), "
    "first, last; = != < <= > >=, and, or, not, parentheses. In the bi view src is endpoint A "
    "(the first sender). See docs/filters.md."
)


def where_option(f: F) -> F:
    """The ``--where FILTER`` option: the command receives ``where`` (:class:`Where` or None).
    A bad filter exits with code 2 and one line on stderr, before the command runs."""
    return click.option(
        "--where", "where", metavar="FILTER", callback=_parse_option, help=WHERE_HELP
    )(f)
