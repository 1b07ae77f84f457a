"""Build a capture's :class:`~models.report.Report` from its conversations (pure)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from models.capture import CaptureStatus
from models.flows import FlowKey, FlowStats
from models.report import ElephantRule, Report, Summary
from reporter.distribution import share_of_top, share_top_fraction
from reporter.elephants import DEFAULT_RULES, classify_all
from reporter.rank import top
from reporter.views import conv_row, uni_rows


def make_report(
    status: CaptureStatus,
    flows: Iterable[tuple[FlowKey, FlowStats]],
    generated_ns: int,
    n: int = 20,
    rules: Sequence[ElephantRule] = DEFAULT_RULES,
) -> Report:
    """Summarise every conversation of a run. Elephants are classified on unidirectional flows
    (the 5-tuple view), as in the flow measurement literature."""
    table = list(flows)
    sizes = [
        b for _, st in table for b, p in ((st.bytes_ab, st.pkts_ab), (st.bytes_ba, st.pkts_ba)) if p
    ]
    # rows only for the candidates of the top n (ties at the boundary included), not every flow
    uni_cut = heapq.nlargest(n, sizes)[-1] if sizes else 0
    bi_cut = heapq.nlargest(n, (st.bytes for _, st in table))[-1] if table else 0
    unis = [
        r for k, st in table if st.bytes >= uni_cut for r in uni_rows(k, st) if r.bytes >= uni_cut
    ]
    convs = [conv_row(k, st) for k, st in table if st.bytes >= bi_cut]
    summary = Summary(
        packets=status.packets,
        bytes=status.bytes,
        counted_packets=status.counted_packets,
        counted_bytes=status.counted_bytes,
        flows_uni=len(sizes),
        flows_bi=len(table),
        not_counted=status.not_counted,
        first_ns=status.first_ns,
        last_ns=status.last_ns,
        share_top1pct_uni=share_top_fraction(sizes, 0.01),
        share_top10_uni=share_of_top(sizes, 10),
    )
    complete = status.batches_failed == 0 and status.total_batches == status.batches_done
    return Report(
        name=status.name,
        run=status.run,
        generated_ns=generated_ns,
        complete=complete,
        summary=summary,
        top_uni=top(unis, "bytes", n),
        top_bi=top(convs, "bytes", n),
        elephants=classify_all(sizes, rules),
        warnings=status.warnings,
    )
