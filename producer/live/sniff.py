"""``producer sniff``: live traffic from one network interface into a capture run.

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
full while backpressure held the main thread).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rq import Queue

from flowherd.console.cli import (
    handle_errors,
    open_backend,
    redis_options,
    settings_from,
    setup_logging,
)
from flowherd.console.show import err_console, show_outcome
from flowherd.deploy.queueing import make_queue
from flowherd.models.keys import RunKeys
from flowherd.models.records import Timeouts
from flowherd.models.settings import Settings
from flowherd.producer.live.packet_socket import Counters, Limits, LiveSocket, Reader
from flowherd.producer.options import duration_option, flow_timeouts, run_options, timeouts_ns
from flowherd.producer.run.follow import LocalWorkers, follow_with_progress
from flowherd.producer.run.writer import Progress as WriterProgress
from flowherd.producer.run.writer import RunWriter
from flowherd.store.backend import Store
from flowherd.store.captures import register, set_meta
from flowherd.store.lock import RunLock

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    keys: RunKeys
    progress: WriterProgress
    counters: Counters


ProgressFn = Callable[[WriterProgress, Counters], None]


def sniff(
    conn: Store,
    rq_queue: Queue,
    live: LiveSocket,
    name: str,
    settings: Settings,
    limits: Limits,
    stop: threading.Event | None = None,
    replace: bool = False,
    on_progress: ProgressFn | None = None,
) -> Outcome:
    """Capture from ``live`` into a new run ``name`` until ``stop`` is set or a limit is hit.

    Every RunWriter call happens on the calling thread. On return the run is closed (its report
    job enqueued once all batches merge) and its drop counters recorded; a capture error (the
    interface vanished) ends the capture like a stop, with a warning. An exception from the
    writer (Redis) or a KeyboardInterrupt marks the run aborted and is re-raised.
    """
    stop = stop or threading.Event()
    keys = register(conn, name, [f"live:{live.iface}"], settings, replace)
    with RunLock(conn, keys, name) as lock:
        return _sniff(conn, rq_queue, keys, live, settings, limits, stop, on_progress, lock)


def _sniff(
    conn: Store,
    rq_queue: Queue,
    keys: RunKeys,
    live: LiveSocket,
    settings: Settings,
    limits: Limits,
    stop: threading.Event,
    on_progress: ProgressFn | None,
    lock: RunLock,
) -> Outcome:
    rd = Reader(live, limits, stop)
    w = RunWriter(
        conn,
        rq_queue,
        keys,
        settings,
        (lambda p: on_progress(p, rd.c)) if on_progress else None,
        lock,
    )
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
        w.warn(f"capture on {live.iface} ended early: {c.error}")
    w.warn(c.summary())
    meta: dict[str, int] = {"producer_drops": c.producer_drops}
    if c.kernel_packets is not None:
        meta |= {"kernel_packets": c.kernel_packets, "kernel_drops": c.kernel_drops or 0}
    set_meta(conn, keys, **meta)
    w.close()
    log.info("event=sniff_closed run=%s %s", keys.run, c.summary())
    return Outcome(keys, w.progress, c)


def _pump(w: RunWriter, rd: Reader, limits: Limits, on_progress: ProgressFn | None) -> None:
    """Main-thread loop: add handed-over records, flush every interval, until the end marker."""
    add, get = w.add, rd.out.get
    interval = limits.flush_interval
    now = time.monotonic()
    deadline = now + limits.duration if limits.duration else None
    next_flush = now + interval
    while True:
        if deadline is not None and now >= deadline:
            rd.stop.set()
            deadline = None
        try:
            chunk = get(timeout=max(0.0, min(next_flush, deadline or next_flush) - now))
        except queue.Empty:
            chunk = []
        if chunk is None:
            return
        for rec in chunk:
            add(rec)
        now = time.monotonic()
        if now >= next_flush:
            w.flush()
            if on_progress:
                on_progress(w.progress, rd.c)
            now = time.monotonic()
            next_flush = now + interval


def default_name(iface: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in f"sniff-{iface}-{stamp}")


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """SIGINT/SIGTERM set ``stop`` (a clean stop); a second one raises KeyboardInterrupt."""
    got: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and got:
            raise KeyboardInterrupt
        got.append(signum)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@click.command("sniff")
@click.option("-i", "--interface", "iface", required=True, help="Interface to capture on.")
@click.option("-f", "--filter", "bpf", metavar="BPF", help="libpcap filter, e.g. 'tcp or udp'.")
@click.option("--name", help="Capture name [default: sniff-IFACE-UTCTIME].")
@click.option("--replace", is_flag=True, help="Overwrite an existing capture of that name.")
@click.option(
    "--duration", callback=duration_option, metavar="DURATION", help="Stop after this long (10m)."
)
@click.option("-c", "--count", type=click.IntRange(1), help="Stop after N packets.")
@click.option(
    "--flush-interval",
    callback=duration_option,
    metavar="DURATION",
    default="1s",
    show_default=True,
    help="Queue a partial batch at least this often, so quiet links report promptly.",
)
@click.option(
    "--snaplen",
    type=click.IntRange(64, 262_144),
    default=262_144,
    show_default=True,
    help="Bytes kept of each frame (wire lengths are always exact).",
)
@click.option("--promisc/--no-promisc", default=True, help="Promiscuous mode [default: on].")
@click.option(
    "--kernel-buffer",
    type=click.IntRange(1, 4096),
    default=32,
    show_default=True,
    metavar="MIB",
    help="Socket receive buffer: what absorbs bursts before the kernel drops.",
)
@run_options
@click.option("-v", "--verbose", count=True, help="-v: progress logs; -vv: debug.")
@redis_options
@handle_errors
def sniff_command(
    iface: str,
    bpf: str | None,
    name: str | None,
    replace: bool,
    duration: float | None,
    count: int | None,
    flush_interval: float,
    snaplen: int,
    promisc: bool,
    kernel_buffer: int,
    wait: bool | None,
    num_workers: int,
    top_n: int,
    engine: str | None,
    batch_packets: int | None,
    max_in_flight: int | None,
    window: float | None,
    keep_windows: int | None,
    idle_timeout: float | None,
    active_timeout: float | None,
    verbose: int,
    redis_url: str | None,
    queue: str,
) -> None:
    """Capture live traffic on an interface (root or CAP_NET_RAW) into one capture.

    Frames go undissected into the same batches as `submit`. Ctrl-C, SIGTERM, --duration or
    --count stop cleanly: what was captured is queued and the capture completes. Kernel and
    producer drops are reported at the end and kept with the capture. Exit status: 0 ok; 1 no
    such interface, no privilege, a bad filter, drops, an incomplete capture or Redis errors.
    """
    setup_logging(verbose)
    settings = settings_from(
        redis_url,
        queue,
        window=window,
        keep_windows=keep_windows,
        engine=engine,
        batch_packets=batch_packets,
        max_in_flight=max_in_flight,
    )
    limits = Limits(count=count, duration=duration, flush_interval=flush_interval)
    err = err_console()
    with LiveSocket(iface, bpf, promisc, snaplen, kernel_buffer << 20) as live:
        conn, url, embedded = open_backend(settings)
        cap_name = name or default_name(iface)
        wait = embedded if wait is None else wait
        workers = (
            LocalWorkers(url, settings.queue, num_workers, settings.store_url) if embedded else None
        )
        try:
            err.print(
                escape(f"listening on {iface}, link type {live.linktype}, capture {cap_name!r}"),
                highlight=False,
            )
            with flow_timeouts(Timeouts(*timeouts_ns(idle_timeout, active_timeout))):
                out = _sniff_with_progress(
                    conn, live, cap_name, settings, limits, replace, err, workers
                )
            c = out.counters
            style = "green" if c.complete else "yellow"
            err.print(f"[{style}]{c.summary()}[/]", highlight=False)
            for msg in out.progress.warnings[:-1]:  # the last one is the summary above
                err.print(f"[yellow]warning:[/] {escape(msg)}")
            if not wait:
                n, b = out.progress.packets, out.progress.batches
                click.echo(f"captured {n} packets in {b} batches as {cap_name!r}")
                sys.exit(0 if c.complete else 1)
            st = follow_with_progress(conn, cap_name, err, workers)
        finally:
            if workers:
                workers.stop()
    if not show_outcome(conn, cap_name, st, top_n):
        sys.exit(1)
    sys.exit(0 if c.complete else 1)


def _sniff_with_progress(
    conn: Store,
    live: LiveSocket,
    name: str,
    settings: Settings,
    limits: Limits,
    replace: bool,
    err: Console,
    workers: LocalWorkers | None,
) -> Outcome:
    columns = (
        TextColumn(f"[bold]sniffing[/] {escape(live.iface)}"),
        TextColumn(
            "{task.fields[packets]:,} pkts  {task.fields[rate]:,.0f} pkt/s  "
            "{task.fields[batches]} batches  drops: kernel {task.fields[kd]:,} "
            "producer {task.fields[pd]:,} {task.fields[note]}"
        ),
        TimeElapsedColumn(),
    )
    stop = threading.Event()
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("", packets=0, rate=0.0, batches=0, kd=0, pd=0, note="")
        t0 = time.monotonic()

        def update(p: WriterProgress, c: Counters) -> None:
            rate = c.captured / max(time.monotonic() - t0, 1e-3)
            note = f"(waiting for {p.waiting_for or 'workers'})" if p.waiting else ""
            bar.update(
                task,
                packets=c.captured,
                rate=rate,
                batches=p.batches,
                kd=c.kernel_drops or 0,
                pd=c.producer_drops,
                note=note,
            )
            if workers and not stop.is_set():
                workers.check()

        with _stop_on_signals(stop):
            q = make_queue(conn.queue, settings.queue)
            out = sniff(conn, q, live, name, settings, limits, stop, replace, update)
    return out
