"""``/metrics``: capture-level gauges in Prometheus' text format, read from the store at each
scrape (nothing is kept between scrapes).

Every gauge has the label ``capture`` (the capture's name):

* ``flowherd_capture_packets``, ``flowherd_capture_bytes``: merged so far (every frame, counted
  or not); ``flowherd_capture_flows``: conversations in the table;
* ``flowherd_capture_batches_enqueued``, ``_done``, ``_failed``; ``_expected`` once the
  producer has enqueued the last batch (absent before: the total is not known yet);
* ``flowherd_capture_state{state=...}``: 1 for the capture's state, 0 for the others;
* ``flowherd_capture_elapsed_seconds``: from submission to completion (or to now);
* live captures (``producer sniff``), once the sniff has ended: ``flowherd_capture_kernel_packets``
  and ``flowherd_capture_kernel_drops`` (the kernel's counters, all sniffer processes together),
  ``flowherd_capture_producer_drops``; and per sniffer process (label ``member``, 1-based):
  ``flowherd_capture_member_kernel_packets``, ``flowherd_capture_member_kernel_drops`` (they sum
  to the totals) and ``flowherd_capture_member_died`` (1 for a process that died, else 0).

``flowherd_captures`` counts the captures. Worker-level counters and histograms come from
``workers run --metrics-port``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flowherd.models.capture import CaptureState, CaptureStatus
from flowherd.reporter.web.docs import captures
from flowherd.store.backend import Store

_PER_CAPTURE = (
    ("packets", "Packets merged into the capture's table (counted or not)", "packets"),
    ("bytes", "Bytes merged into the capture's table (counted or not)", "bytes"),
    ("flows", "Conversations in the capture's table", "flows"),
    ("batches_enqueued", "Batches the producer has enqueued", "batches_enqueued"),
    ("batches_done", "Batches merged", "batches_done"),
    ("batches_failed", "Batches failed for good", "batches_failed"),
    ("elapsed_seconds", "Seconds from submission to completion, or to now", "elapsed_s"),
)
#: a live capture's drop counters (absent for a file capture; written every 2 s while it runs)
_LIVE = (
    ("kernel_packets", "Frames the kernel counted for a live capture (drops included)"),
    ("kernel_drops", "Frames the kernel dropped in a live capture (all sniffer processes)"),
    ("producer_drops", "Frames of a live capture the producer read but dropped"),
)


class CaptureCollector(Collector):
    """Reads every capture's status at collect time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        sts = captures(self.store, detail=False)
        count = GaugeMetricFamily("flowherd_captures", "Captures known to the store")
        count.add_metric([], len(sts))
        yield count
        for suffix, doc, attr in _PER_CAPTURE:
            g = GaugeMetricFamily(f"flowherd_capture_{suffix}", doc, labels=["capture"])
            for st in sts:
                g.add_metric([st.name], float(getattr(st, attr)))
            yield g
        exp = GaugeMetricFamily(
            "flowherd_capture_batches_expected",
            "Batches of the whole capture (once the producer has enqueued the last)",
            labels=["capture"],
        )
        for st in sts:
            if st.total_batches is not None:
                exp.add_metric([st.name], st.total_batches)
        yield exp
        state = GaugeMetricFamily(
            "flowherd_capture_state",
            "1 for the capture's state, 0 for the others",
            labels=["capture", "state"],
        )
        for st in sts:
            for s in CaptureState:
                state.add_metric([st.name, s.value], 1.0 if st.state is s else 0.0)
        yield state
        yield from _live(sts)
        yield from _records(sts)


#: records that leave as they expire (``producer sniff --records-dir``/``--ipfix``)
_RECORDS = (
    ("records_left", "Flow records of a live capture that have left Redis as they expired",
     "records"),
    ("records_left_packets", "Packets in the flow records that have left", "packets"),
    ("records_left_bytes", "Bytes in the flow records that have left", "bytes"),
    ("records_files", "Record files written", "files"),
    ("records_open", "Conversations of a live capture with a record not over yet", "open"),
    ("late_packets", "Packets that arrived later than the frontier allowed", "late_packets"),
)  # fmt: skip


def _records(sts: list[CaptureStatus]) -> Iterator[Metric]:
    """What has left a live capture whose records leave as they expire, and what is open."""
    for suffix, doc, attr in _RECORDS:
        g = GaugeMetricFamily(f"flowherd_capture_{suffix}", doc, labels=["capture"])
        for st in sts:
            if st.records_left is not None:
                g.add_metric([st.name], float(getattr(st.records_left, attr)))
        yield g


def _live(sts: list[CaptureStatus]) -> Iterator[Metric]:
    """The drop counters of live captures, in total and per sniffer process."""
    for attr, doc in _LIVE:
        g = GaugeMetricFamily(f"flowherd_capture_{attr}", doc, labels=["capture"])
        for st in sts:
            v = getattr(st, attr)
            if v is not None:
                g.add_metric([st.name], float(v))
        yield g
    packets = GaugeMetricFamily(
        "flowherd_capture_member_kernel_packets",
        "Frames the kernel counted for one sniffer process of a live capture (drops included)",
        labels=["capture", "member"],
    )
    drops = GaugeMetricFamily(
        "flowherd_capture_member_kernel_drops",
        "Frames the kernel dropped for one sniffer process of a live capture",
        labels=["capture", "member"],
    )
    died = GaugeMetricFamily(
        "flowherd_capture_member_died",
        "1 for a sniffer process of a live capture that died, 0 for one that ran to the end",
        labels=["capture", "member"],
    )
    for st in sts:
        for m in st.members:
            labels = [st.name, str(m.member)]
            packets.add_metric(labels, float(m.packets))
            drops.add_metric(labels, float(m.drops))
            died.add_metric(labels, 1.0 if m.state == "died" else 0.0)
    yield from (packets, drops, died)


def registry_for(store: Store) -> CollectorRegistry:
    """A registry of its own (not the process-wide default) holding the capture gauges."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CaptureCollector(store))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
