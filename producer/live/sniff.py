"""Live traffic from one network interface into a capture run (what ``producer sniff`` runs).

    sniffer thread (AF_PACKET socket)              main thread (the only RunWriter user)
    recvmsg: bytes, ns timestamp, wire length --->  RunWriter.add; flush when full or every
    chunks of <=256 records, bounded queue          --flush-interval; warn + close at the end

scapy's ``L2ListenSocket`` opens the socket (bind, promiscuous mode, the BPF filter compiled by
libpcap); frames are then read with ``recvmsg`` directly, never dissected: the kernel's
``SO_TIMESTAMPNS`` gives integer-ns timestamps and ``PACKET_AUXDATA`` the original length and
any VLAN tag the driver stripped (re-inserted, as libpcap does). Linux only.

A stop (the ``stop`` event, ``count`` or ``duration``) is clean: a drop-all filter is attached so
nothing new queues, the socket is drained, the kernel's counters (``PACKET_STATISTICS``) are read,
every record is flushed and the run closed, so the report job runs. Drops are recorded as a run
warning and as numbers in the run's meta hash (``kernel_packets``, ``kernel_drops``,
``producer_drops``): the kernel's (its socket buffer was full) and the producer's (its queue was
full while backpressure held the main thread). With them, ``members`` lists each sniffer process
(:class:`flowherd.models.state.SnifferMember`: one for a ring or ``recvmsg``, N for
``--fanout N``) with its own kernel counters and whether it died; it is absent where the kernel
gives no counters. These fields are written every 2 s while the sniff runs, and at its end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import OutOfMemoryError
from rq import Queue

from flowherd.models.columns import Columns
from flowherd.models.expiry import RecordsOut
from flowherd.models.keys import RunKeys
from flowherd.models.records import Timeouts
from flowherd.models.settings import Settings
from flowherd.models.state import MetaField, SnifferMember
from flowherd.producer.live.fanout import FanoutReader, FanoutSocket
from flowherd.producer.live.packet_socket import Counters, Limits, LiveSocket, Reader, SniffError
from flowherd.producer.live.ring_capture import RingOptions, RingReader, RingSocket
from flowherd.producer.live.tpacket import RingError
from flowherd.producer.run.writer import Progress as WriterProgress
from flowherd.producer.run.writer import RunWriter
from flowherd.store.backend import Store
from flowherd.store.captures import compact_done, register, set_meta
from flowherd.store.lock import RunLock

log = logging.getLogger(__name__)

#: Seconds between two writes of the drop counters while the sniff runs.
COUNTERS_S = 2.0

#: How much older than the latest frame read a frame read later may be (fanout processes and
#: CPUs hand frames over slightly out of order). Records that leave as they expire wait this
#: long; an older frame is counted as late (``late_packets``) and may split its record.
LATENESS_NS = 1_000_000_000

#: a live capture: the recvmsg socket, a ring, or a fanout group of ring processes
Live = LiveSocket | RingSocket | FanoutSocket


@dataclass
class Outcome:
    keys: RunKeys
    progress: WriterProgress
    counters: Counters


ProgressFn = Callable[[WriterProgress, Counters], None]


def sniff(
    conn: Store,
    rq_queue: Queue,
    live: Live,
    name: str,
    settings: Settings,
    limits: Limits,
    stop: threading.Event | None = None,
    replace: bool = False,
    on_progress: ProgressFn | None = None,
    timeouts: Timeouts | None = None,
    records: RecordsOut | None = None,
    on_start: Callable[[RunKeys], None] | None = None,
) -> Outcome:
    """Capture from ``live`` into a new run ``name`` until ``stop`` is set or a limit is hit.

    Every RunWriter call happens on the calling thread. On return the run is closed (its report
    job enqueued once all batches merge) and its drop counters recorded; a capture error (the
    interface vanished) ends the capture like a stop, with a warning. An exception from the
    writer (Redis) or a KeyboardInterrupt marks the run aborted and is re-raised.

    With ``records`` (and ``timeouts``) the flow records leave as they expire: the writer
    publishes the frontier (the latest timestamp read, less :data:`LATENESS_NS`; the clock's,
    less the same, while the link is quiet) and ``on_start(keys)``, called once the run is
    declared, starts the exporter (``reporter records``).
    """
    stop = stop or threading.Event()
    keys = register(conn, name, [f"live:{live.iface}"], settings, replace)
    with RunLock(conn, keys, name) as lock:
        return _sniff(
            conn,
            rq_queue,
            keys,
            live,
            settings,
            limits,
            stop,
            on_progress,
            lock,
            timeouts,
            records,
            on_start,
        )


def _sniff(
    conn: Store,
    rq_queue: Queue,
    keys: RunKeys,
    live: Live,
    settings: Settings,
    limits: Limits,
    stop: threading.Event,
    on_progress: ProgressFn | None,
    lock: RunLock,
    timeouts: Timeouts | None,
    records: RecordsOut | None,
    on_start: Callable[[RunKeys], None] | None,
) -> Outcome:
    rd = live.reader(limits, stop)
    w = RunWriter(
        conn,
        rq_queue,
        keys,
        settings,
        (lambda p: on_progress(p, rd.c)) if on_progress else None,
        lock,
        timeouts,
        records,
    )
    if on_start is not None:
        on_start(keys)
    thread = threading.Thread(target=rd.run, name="flowherd-sniff", daemon=True)
    thread.start()
    log.info("event=sniff_started iface=%s linktype=%s run=%s", live.iface, live.linktype, keys.run)
    try:
        _pump(w, rd, limits, on_progress)
    except BaseException as exc:
        rd.abandoned = True
        stop.set()
        w.abort(f"sniff aborted: {'interrupted' if isinstance(exc, KeyboardInterrupt) else exc}")
        raise
    thread.join()
    c = rd.c
    if c.error:
        w.warn(f"capture on {live.iface} is incomplete: {c.error}")
    w.warn(c.summary())
    set_meta(conn, keys, **drop_fields(c, members_of(rd)))
    w.close()
    per_frame = f"{1e6 * c.cpu_s / c.captured:.3f}" if c.cpu_s and c.captured else "-"
    log.info(
        "event=sniff_closed run=%s reader_cpu_us_per_frame=%s %s", keys.run, per_frame, c.summary()
    )
    return Outcome(keys, w.progress, c)


def members_of(rd: Reader | RingReader | FanoutReader) -> list[SnifferMember]:
    """The sniffer processes with their kernel counters: a fanout group's members, else the
    producer's own process; none where the kernel gives no counters."""
    if isinstance(rd, FanoutReader):
        return rd.members()
    c = rd.c
    if c.kernel_packets is None:
        return []
    return [
        SnifferMember(
            member=1, pid=os.getpid(), packets=c.kernel_packets, drops=c.kernel_drops or 0
        )
    ]


def drop_fields(c: Counters, members: list[SnifferMember]) -> dict[str, int | str]:
    """The meta hash's drop counters of a sniff (:class:`MetaField`)."""
    meta: dict[str, int | str] = {MetaField.PRODUCER_DROPS: c.producer_drops}
    if c.kernel_packets is not None:
        meta[MetaField.KERNEL_PACKETS] = c.kernel_packets
        meta[MetaField.KERNEL_DROPS] = c.kernel_drops or 0
    if members:
        meta[MetaField.MEMBERS] = json.dumps([m.model_dump(exclude_none=True) for m in members])
    return meta


def _pump(
    w: RunWriter,
    rd: Reader | RingReader | FanoutReader,
    limits: Limits,
    on_progress: ProgressFn | None,
) -> None:
    """Main-thread loop: add handed-over records, flush every interval, until the end marker.
    With records that leave as they expire, tell the writer how far the capture has got (see
    :func:`sniff`)."""
    frontier = w.frontier is not None
    add, get = w.add, rd.out.get
    interval = limits.flush_interval
    now = time.monotonic()
    deadline = now + limits.duration if limits.duration else None
    next_flush = now + interval
    next_counters = now + COUNTERS_S
    while True:
        if deadline is not None and now >= deadline:
            rd.stop.set()
            deadline = None
        try:
            chunk = get(timeout=max(0.0, min(next_flush, deadline or next_flush) - now))
        except queue.Empty:
            chunk = []
            if frontier:  # everything read is handed over: the clock vouches for the rest
                w.advance(time.time_ns() - LATENESS_NS)
        if chunk is None:
            return
        if isinstance(chunk, Columns):
            w.add_columns(chunk)
            if frontier and len(chunk):
                w.advance(int(chunk.ts.max()) - LATENESS_NS)
        else:
            for rec in chunk:
                add(rec)
            if frontier and chunk:
                w.advance(max(r[0] for r in chunk) - LATENESS_NS)
        now = time.monotonic()
        if now >= next_flush:
            w.flush()
            if on_progress:
                on_progress(w.progress, rd.c)
            if now >= next_counters:
                _counters_now(w, rd)
                next_counters = now + COUNTERS_S
            now = time.monotonic()
            next_flush = now + interval


def _counters_now(w: RunWriter, rd: Reader | RingReader | FanoutReader) -> None:
    """The drop counters so far, in the run's meta hash: a sniff that runs for weeks shows them
    while it runs; and the done markers of old batches forgotten, so that it does not keep one
    per batch forever. Skipped while Redis is full (the writer waits for room meanwhile)."""
    with contextlib.suppress(OutOfMemoryError):
        set_meta(w.store, w.keys, **drop_fields(rd.c, members_of(rd)))
        compact_done(w.store, w.keys)


def open_live(
    iface: str,
    bpf: str | None,
    promisc: bool,
    snaplen: int,
    kernel_buffer: int,
    ring: RingOptions | None,
    members: int = 1,
) -> tuple[Live, str | None]:
    """The capture of ``iface``: ``members`` > 1 sniffer processes in a fanout group; else a
    ring when ``ring`` is given and the kernel sets one up, else the ``recvmsg`` socket; and a
    note saying why the ring could not be used (None when it is used or was not asked for).
    Raises :class:`SniffError` when neither can capture."""
    if members > 1:
        if ring is None:
            raise SniffError(iface, "--fanout needs the ring: leave out --no-ring")
        return FanoutSocket(iface, bpf, promisc, snaplen, ring, members), None
    note = None
    if ring is not None:
        try:
            return RingSocket(iface, bpf, promisc, snaplen, ring), None
        except RingError as exc:
            if ring.fanout is not None:  # a fanout group needs the ring: say why it failed
                raise SniffError(iface, f"cannot join the fanout group: {exc.strerror}") from None
            note = f"no TPACKET_V3 ring ({exc.strerror}): reading one frame per recvmsg"
            log.info("event=ring_unavailable iface=%s reason=%s", iface, exc.strerror)
    return LiveSocket(iface, bpf, promisc, snaplen, kernel_buffer), note
