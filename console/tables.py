"""Rich tables of flows, summaries, elephants and capture status (shared by every CLI)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from flowherd.console.units import (
    human_bytes,
    human_duration,
    human_rate,
    human_ts,
    proto_name,
    rate,
    rule_text,
)
from flowherd.models.report import ConvRow, ElephantResult, FlowRow, Row, Summary


def _rate_text(r: FlowRow | ConvRow) -> str:
    v = rate(r)
    return human_rate(v) if v else "-"


def rows_table(rows: Sequence[Row], title: str) -> Table:
    """A rich table of ``rows`` in the given order: addresses whole (IPv6 included: on one line
    when the console is wide enough, else folded over lines, never cut short), protocol names,
    bytes in SI units with 3 significant digits, duration in seconds and rate in bit/s (``-``
    for a one-packet or zero-duration row). An empty sequence gives a flow table with no rows.
    """
    conv = bool(rows) and isinstance(rows[0], ConvRow)
    # Addresses fold (every character shown, never "...") and absorb the squeeze on a narrow
    # console; an IPv4 address always fits one line. Short columns never wrap.
    addr_width = min(15, max((len(a) for r in rows for a in _addrs(r)), default=0))
    t = Table(title=title)
    t.add_column("#", justify="right", no_wrap=True)
    a, b = ("A", "B") if conv else ("source", "destination")
    for h, port in ((a, "port A" if conv else "sport"), (b, "port B" if conv else "dport")):
        t.add_column(h, overflow="fold", min_width=addr_width)
        t.add_column(port, justify="right", no_wrap=True)
    t.add_column("proto", no_wrap=True)
    if conv:
        for h in ("pkts A→B", "bytes A→B", "pkts B→A", "bytes B→A"):
            t.add_column(h, justify="right", no_wrap=True)
    for h in ("packets", "bytes", "duration", "rate"):
        t.add_column(h, justify="right", no_wrap=True)
    for i, r in enumerate(rows, 1):
        if isinstance(r, ConvRow):
            cells = [
                r.a_addr,
                str(r.a_port),
                r.b_addr,
                str(r.b_port),
                proto_name(r.proto),
                f"{r.packets_a_to_b:,}",
                human_bytes(r.bytes_a_to_b),
                f"{r.packets_b_to_a:,}",
                human_bytes(r.bytes_b_to_a),
            ]
        else:
            cells = [r.src, str(r.sport), r.dst, str(r.dport), proto_name(r.proto)]
        cells += [
            f"{r.packets:,}",
            human_bytes(r.bytes),
            human_duration(r.last_ns - r.first_ns),
            _rate_text(r),
        ]
        t.add_row(str(i), *cells)
    return t


def _addrs(r: FlowRow | ConvRow) -> tuple[str, str]:
    return (r.src, r.dst) if isinstance(r, FlowRow) else (r.a_addr, r.b_addr)


def _count_bytes(packets: int, n_bytes: int) -> str:
    exact = f" ({n_bytes:,} B)" if n_bytes >= 1000 else ""
    return f"{packets:,} packets, {human_bytes(n_bytes)}{exact}"


def summary_table(summary: Summary) -> Table:
    """A two-column rich table of a capture's totals: packets and bytes (counted and not, per
    reason), flows in both views, first and last packet in UTC, and the byte shares of the top
    1% and top 10 unidirectional flows."""
    t = Table(title="Capture summary", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("all frames", _count_bytes(summary.packets, summary.bytes))
    t.add_row("counted in flows", _count_bytes(summary.counted_packets, summary.counted_bytes))
    for reason, bucket in sorted(summary.not_counted.items()):
        t.add_row(f"not counted: {reason}", _count_bytes(bucket.packets, bucket.bytes))
    t.add_row("flows (unidirectional)", f"{summary.flows_uni:,}")
    t.add_row("conversations (bidirectional)", f"{summary.flows_bi:,}")
    if summary.first_ns is not None and summary.last_ns is not None:
        t.add_row("first packet", human_ts(summary.first_ns))
        t.add_row("last packet", human_ts(summary.last_ns))
        t.add_row("duration", human_duration(summary.last_ns - summary.first_ns))
    t.add_row("bytes in top 1% of flows", f"{summary.share_top1pct_uni * 100:.1f}%")
    t.add_row("bytes in top 10 flows", f"{summary.share_top10_uni * 100:.1f}%")
    return t


def elephants_table(results: Sequence[ElephantResult]) -> Table:
    """A rich table with one row per elephant rule: its definition, how many flows it selects,
    their bytes and share of all bytes, and the size of the smallest one."""
    t = Table(title="Elephant flows")
    t.add_column("rule")
    t.add_column("definition")
    for h in ("flows", "bytes", "share of bytes", "smallest"):
        t.add_column(h, justify="right")
    for res in results:
        t.add_row(
            res.rule.name,
            rule_text(res.rule),
            f"{res.flows:,}",
            human_bytes(res.bytes),
            f"{res.share_of_bytes * 100:.1f}%",
            human_bytes(res.threshold_bytes) if res.flows else "-",
        )
    return t
