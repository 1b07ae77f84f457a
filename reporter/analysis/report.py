"""Build a capture's :class:`~flowherd.models.report.Report` from its conversations (pure).

* :func:`stream_report`: in bounded memory, from stored ``(key, value)`` pairs read once (plus
  a rescan in the rare case an exact cut needs it); what the report job and ``summary`` use;
* :func:`make_report`: the same document from a table held in memory, the reference that
  :func:`stream_report` is tested against.

Both add the heavy hitters by duration and rate (:mod:`flowherd.reporter.analysis.heavy`; by
burstiness when the windows are given) and the tail fit of the sizes
(:mod:`flowherd.reporter.analysis.tail`), which :func:`stream_report` computes from the same first
read of the table.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence

from flowherd.models.capture import CaptureStatus
from flowherd.models.flows import FlowKey, FlowStats
from flowherd.models.report import (
    ConvRow,
    ElephantResult,
    ElephantRule,
    FlowRow,
    HeavyResult,
    HeavyRule,
    Report,
    Summary,
    TailFit,
)
from flowherd.reporter.analysis.bursts import burst_items
from flowherd.reporter.analysis.distribution import (
    share_of_top,
    share_top_fraction,
    top_fraction_count,
)
from flowherd.reporter.analysis.elephants import DEFAULT_RULES, classify_all, classify_dist
from flowherd.reporter.analysis.heavy import DEFAULT_HEAVY, classify_heavy
from flowherd.reporter.analysis.measures import (
    Columns,
    Measures,
    columns,
    uni_chunks,
    uni_columns,
    uni_items,
)
from flowherd.reporter.analysis.scan import TableScan, scan_table, uni_sizes
from flowherd.reporter.analysis.sizes import Prefix
from flowherd.reporter.analysis.tail import TopSizes, tail_fit
from flowherd.reporter.table.order import top
from flowherd.reporter.table.packed import Pair
from flowherd.reporter.table.views import conv_row, uni_rows


def make_report(
    status: CaptureStatus,
    flows: Iterable[tuple[FlowKey, FlowStats]],
    generated_ns: int,
    n: int = 20,
    rules: Sequence[ElephantRule] = DEFAULT_RULES,
    heavy: Sequence[HeavyRule] = DEFAULT_HEAVY,
    fit: bool = True,
) -> Report:
    """Summarise every conversation of a run. Elephants, the other heavy hitters (duration
    and rate: burst rules need :func:`stream_report`'s windows) and the tail fit are taken on
    unidirectional flows (the 5-tuple view), as in the flow measurement literature. Holds the
    whole table: use :func:`stream_report` for anything that grows."""
    table = list(flows)
    sizes = [
        b for _, st in table for b, p in ((st.bytes_ab, st.pkts_ab), (st.bytes_ba, st.pkts_ba)) if p
    ]
    items = list(uni_items((k.pack(), st.pack()) for k, st in table)) if heavy else []
    kept = TopSizes()
    kept.add_many(sizes if fit else ())
    # rows only for the candidates of the top n (ties at the boundary included), not every flow
    uni_cut = heapq.nlargest(n, sizes)[-1] if sizes else 0
    bi_cut = heapq.nlargest(n, (st.bytes for _, st in table))[-1] if table else 0
    unis = [
        r for k, st in table if st.bytes >= uni_cut for r in uni_rows(k, st) if r.bytes >= uni_cut
    ]
    convs = [conv_row(k, st) for k, st in table if st.bytes >= bi_cut]
    return _report(
        status,
        generated_ns,
        flows_uni=len(sizes),
        flows_bi=len(table),
        share_top1pct_uni=share_top_fraction(sizes, 0.01),
        share_top10_uni=share_of_top(sizes, 10),
        top_uni=top(unis, "bytes", n),
        top_bi=top(convs, "bytes", n),
        elephants=classify_all(sizes, rules),
        heavy=_heavy(heavy, Measures(("duration", "rate")).add_many(items), lambda: columns(items)),
        tail=tail_fit(kept) if fit else None,
    )


def _heavy(
    rules: Sequence[HeavyRule],
    measures: Measures,
    rescan: Callable[[], Iterable[Columns]],
    bursts: Callable[[], Iterable[Iterable[Pair]]] | None = None,
    window_ns: int = 0,
) -> list[HeavyResult]:
    """The heavy rules' results in the order given: duration and rate from ``measures``,
    burst from the windows ``bursts`` returns (ValueError when a burst rule has none)."""
    flat = [r for r in rules if r.metric != "burst"]
    out = dict(zip(flat, classify_heavy(flat, measures, rescan), strict=True))
    peaks = [r for r in rules if r.metric == "burst"]
    if peaks:
        if bursts is None or not window_ns:
            raise ValueError("burst rules need a capture with windows (--window)")
        got = Measures(("burst",)).add_many(burst_items(bursts))
        found = classify_heavy(peaks, got, lambda: columns(burst_items(bursts)), window_ns)
        out |= dict(zip(peaks, found, strict=True))
    return [out[r] for r in rules]


def _report(
    status: CaptureStatus,
    generated_ns: int,
    *,
    flows_uni: int,
    flows_bi: int,
    share_top1pct_uni: float,
    share_top10_uni: float,
    top_uni: list[FlowRow],
    top_bi: list[ConvRow],
    elephants: list[ElephantResult],
    heavy: list[HeavyResult],
    tail: TailFit | None,
) -> Report:
    """The document around the numbers computed from the table (shared by both builders)."""
    summary = Summary(
        packets=status.packets,
        bytes=status.bytes,
        counted_packets=status.counted_packets,
        counted_bytes=status.counted_bytes,
        flows_uni=flows_uni,
        flows_bi=flows_bi,
        not_counted=status.not_counted,
        first_ns=status.first_ns,
        last_ns=status.last_ns,
        share_top1pct_uni=share_top1pct_uni,
        share_top10_uni=share_top10_uni,
    )
    complete = status.batches_failed == 0 and status.total_batches == status.batches_done
    return Report(
        name=status.name,
        run=status.run,
        generated_ns=generated_ns,
        complete=complete,
        summary=summary,
        top_uni=top_uni,
        top_bi=top_bi,
        elephants=elephants,
        warnings=status.warnings,
        heavy=heavy,
        tail=tail,
    )


def stream_report(
    status: CaptureStatus,
    rescan: Callable[[], Iterable[Pair]],
    generated_ns: int,
    n: int = 20,
    rules: Sequence[ElephantRule] = DEFAULT_RULES,
    scan: TableScan | None = None,
    heavy: Sequence[HeavyRule] = DEFAULT_HEAVY,
    fit: bool = True,
    bursts: Callable[[], Iterable[Iterable[Pair]]] | None = None,
    window_ns: int = 0,
) -> Report:
    """:func:`make_report`'s document, field for field, in memory that does not grow with the
    table.

    ``rescan`` returns a fresh iterable of the run's stored ``(packed key, packed value)``
    pairs (every shard's). The first pass is :func:`flowherd.reporter.analysis.scan.scan_table` over
    it, unless ``scan`` is given (e.g. the merged scans of the shards, with ``scan.n >= n``). Every
    number is exact: the byte shares and elephant rules are cuts of the sorted sizes, answered from
    the scan's size buckets and, when a cut falls inside a bucket of different sizes, from further
    reads (:func:`flowherd.reporter.analysis.sizes.resolve`: usually none or one, at most four).

    The duration and rate measures of ``heavy`` and the sizes of the tail fit (``fit``) are
    taken in the same first read; burst rules read the windows ``bursts`` returns (each an
    iterable of a window's stored pairs, ``window_ns`` wide: see
    :mod:`flowherd.reporter.analysis.bursts`).

    Raises :class:`ValueError` when the table changes between reads (a capture still being
    merged), holds a record that is not a flow record, or when a burst rule has no windows.
    """
    measures = Measures(("duration", "rate"))
    kept = TopSizes()
    wanted = bool([r for r in heavy if r.metric != "burst"]) or fit
    if scan is None:
        scan = scan_table(_tap(rescan(), measures, kept) if wanted else rescan(), n)
    elif wanted:
        for _ in _tap(rescan(), measures, kept):
            pass
    dist = scan.uni
    shares = [Prefix(top_fraction_count(dist.n, 0.01)), Prefix(min(10, dist.n))]
    elephants, (top1pct, top10) = classify_dist(
        dist, rules, lambda: uni_sizes(rescan()), extra=shares
    )
    total = dist.total
    return _report(
        status,
        generated_ns,
        flows_uni=dist.n,
        flows_bi=scan.flows_bi,
        share_top1pct_uni=top1pct.total / total if total else 0.0,
        share_top10_uni=top10.total / total if total else 0.0,
        top_uni=scan.top_uni.rows()[:n],
        top_bi=scan.top_bi.rows()[:n],
        elephants=elephants,
        heavy=_heavy(heavy, measures, lambda: uni_chunks(rescan()), bursts, window_ns),
        tail=tail_fit(kept) if fit else None,
    )


def _tap(pairs: Iterable[Pair], measures: Measures, top: TopSizes) -> Iterator[Pair]:
    """``pairs`` unchanged, folding each unidirectional flow's measures and size on the way."""
    chunk: list[Pair] = []
    for pair in pairs:
        yield pair
        chunk.append(pair)
        if len(chunk) >= 8192:
            _fold(chunk, measures, top)
            chunk.clear()
    _fold(chunk, measures, top)


def _fold(chunk: list[Pair], measures: Measures, top: TopSizes) -> None:
    nbytes, durs, rates = uni_columns(chunk)
    measures.add_columns(nbytes, durs, rates)
    top.add_many(nbytes)
