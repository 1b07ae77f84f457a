"""``producer sniff``: the command, its progress display and its clean stop on signals (the
capture itself: :mod:`flowherd.producer.live.sniff`)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from flowherd.console.cli import (
    HELP,
    SafePath,
    handle_errors,
    redis_options,
    settings_from,
    setup_logging,
)
from flowherd.console.extras import require
from flowherd.console.hostport import parse_hostport
from flowherd.console.signals import stop_on_signals
from flowherd.deploy.queueing import make_queue
from flowherd.models.expiry import RecordsFormat, RecordsOut
from flowherd.models.flows import NS
from flowherd.models.keys import RunKeys
from flowherd.models.numbers import duration_ns
from flowherd.models.records import Timeouts
from flowherd.producer.cli.options import duration_option, run_options, timeouts_of
from flowherd.producer.cli.records import RecordsExporter
from flowherd.producer.cli.shell import Shell, exit_with_outcome, name_of_interface, run_shell
from flowherd.producer.live.fanout import FANOUT_MODES
from flowherd.producer.live.packet_socket import Counters, Limits
from flowherd.producer.live.ring import (
    DEFAULT_BLOCK_NR,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_RETIRE_BLK_TOV_MS,
)
from flowherd.producer.live.ring_capture import RingOptions
from flowherd.producer.live.sniff import Live, Outcome, open_live, sniff
from flowherd.producer.run.writer import Progress as WriterProgress


@click.command("sniff", context_settings=HELP)
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
    help="Receive buffer of the recvmsg socket (--no-ring): what absorbs bursts before the "
    "kernel drops.",
)
@click.option(
    "--ring/--no-ring",
    "use_ring",
    default=True,
    help="Read frames from a TPACKET_V3 ring, whole kernel blocks at a time [default: on]; "
    "--no-ring reads one frame per recvmsg call (also the fallback where no ring can be set up).",
)
@click.option(
    "--ring-blocks",
    type=click.IntRange(2, 65_536),
    default=DEFAULT_BLOCK_NR,
    show_default=True,
    metavar="N",
    help="Blocks in the ring. The ring (blocks x block size) absorbs bursts: 128 MiB holds "
    "about 100 ms of a 10 Gbit/s link.",
)
@click.option(
    "--ring-block-size",
    type=click.IntRange(1, 64),
    default=DEFAULT_BLOCK_SIZE >> 20,
    show_default=True,
    metavar="MIB",
    help="Size of one ring block, in MiB (4: the largest contiguous block most kernels give).",
)
@click.option(
    "--block-timeout",
    type=click.IntRange(1, 60_000),
    default=DEFAULT_RETIRE_BLK_TOV_MS,
    show_default=True,
    metavar="MS",
    help="Hand over a partly filled block after this many milliseconds (latency on quiet links).",
)
@click.option(
    "--fanout",
    "members",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    metavar="N",
    help="Read the link with N sniffer processes in one PACKET_FANOUT group, each with its "
    "own ring, feeding one capture (for links one core cannot keep up with).",
)
@click.option(
    "--fanout-mode",
    type=click.Choice(FANOUT_MODES),
    default="hash",
    show_default=True,
    help="How the kernel spreads frames over the processes: hash (by flow; fragments "
    "reassembled first), cpu (by the CPU that received it), lb (round robin), qm (by NIC queue).",
)
@click.option(
    "--records-dir",
    metavar="DIR",
    type=SafePath(file_okay=False),
    help="Write each flow record to DIR as soon as it expires (needs --idle-timeout or "
    "--active-timeout): rotating files that appear whole or not at all, each record exactly "
    "once; a record that has left is gone from Redis. See docs/live.md.",
)
@click.option(
    "--records-format",
    type=click.Choice(["ndjson", "csv", "parquet"]),
    default="ndjson",
    show_default=True,
    help="Format of the record files (the columns of `reporter export`).",
)
@click.option(
    "--records-rotate",
    default="60s",
    show_default=True,
    metavar="DURATION",
    help="Start a new record file at least this often.",
)
@click.option(
    "--ipfix",
    "collector",
    metavar="HOST:PORT",
    help="Send each flow record as it expires to an IPFIX collector over UDP (with or "
    "without --records-dir).",
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
    use_ring: bool,
    ring_blocks: int,
    ring_block_size: int,
    block_timeout: int,
    members: int,
    fanout_mode: str,
    records_dir: str | None,
    records_format: RecordsFormat,
    records_rotate: str,
    collector: str | None,
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
    producer drops are reported at the end and kept with the capture.

    \b
    Examples:
      producer sniff -i eth0 --duration 10m
      producer sniff -i eth0 --fanout 4 --window 10s --keep 6
      producer sniff -i eth0 --idle-timeout 30s --active-timeout 5m \\
          --window 10s --keep 6 --records-dir /var/lib/flows --ipfix 10.0.0.9:4739

    Exit status: 0 ok; 1 no such interface, no privilege, a bad filter, drops, an incomplete
    capture or Redis errors.
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
    group = (os.getpid() & 0xFFFF, fanout_mode) if members > 1 else None
    ring = (
        RingOptions(ring_block_size << 20, ring_blocks, block_timeout, group) if use_ring else None
    )
    t = timeouts_of(idle_timeout, active_timeout)
    records = _records_out(records_dir, records_format, records_rotate, collector, t)
    live, note = open_live(iface, bpf, promisc, snaplen, kernel_buffer << 20, ring, members)
    with live, run_shell(settings, wait, num_workers) as sh:
        cap_name = name or name_of_interface(iface)
        if note:
            sh.err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
        sh.err.print(
            escape(
                f"listening on {iface} ({live.describe()}), link type {live.linktype}, "
                f"capture {cap_name!r}"
            ),
            highlight=False,
        )
        exporter = RecordsExporter(sh, cap_name) if records is not None else None
        on_start = exporter.start if exporter is not None else None
        out = _sniff_with_progress(sh, live, cap_name, limits, replace, t, records, on_start)
        c = out.counters
        style = "green" if c.complete else "yellow"
        sh.err.print(f"[{style}]{c.summary()}[/]", highlight=False)
        for msg in out.progress.warnings[:-1]:  # the last one is the summary above
            sh.err.print(f"[yellow]warning:[/] {escape(msg)}")
        n, b = out.progress.packets, out.progress.batches
        ok = c.complete
        if exporter is not None:
            sh.err.print("writing the records still open (they leave once every batch is merged)")
            if exporter.wait() != 0:
                ok = False
        sh.done(f"captured {n} packets in {b} batches as {cap_name!r}", ok=ok)
        st = sh.follow(cap_name)
    exit_with_outcome(sh, cap_name, st, top_n, ok=ok)


def _sniff_with_progress(
    sh: Shell,
    live: Live,
    name: str,
    limits: Limits,
    replace: bool,
    timeouts: Timeouts | None,
    records: RecordsOut | None,
    on_start: Callable[[RunKeys], None] | None,
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
    with Progress(*columns, console=sh.err, transient=True, disable=not sh.err.is_terminal) as bar:
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
            if not stop.is_set():
                sh.check()

        with stop_on_signals(stop):
            q = make_queue(sh.conn.queue, sh.settings.queue)
            out = sniff(
                sh.conn,
                q,
                live,
                name,
                sh.settings,
                limits,
                stop,
                replace,
                update,
                timeouts,
                records,
                on_start,
            )
    return out


def _records_out(
    records_dir: str | None,
    fmt: RecordsFormat,
    rotate: str,
    collector: str | None,
    t: Timeouts | None,
) -> RecordsOut | None:
    """Where records go as they expire, from the options; None when they stay in Redis."""
    if records_dir is None and collector is None:
        return None
    if not t:
        raise click.UsageError(
            "--records-dir and --ipfix write flow records as they expire: give --idle-timeout "
            "and/or --active-timeout"
        )
    try:
        rotate_ns = duration_ns(rotate, "--records-rotate", lo=NS, hi=86_400 * NS)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--records-rotate") from None
    if collector is not None:
        host, port = parse_hostport(collector)
        collector = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if fmt == "parquet" and records_dir is not None:
        require("pyarrow", "export", "Parquet records")
    where = None
    if records_dir is not None:
        path = Path(records_dir).resolve()
        try:  # here, not in the exporter: a directory it cannot write is a usage error now
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".flowherd-probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise click.BadParameter(
                f"{records_dir}: {exc.strerror or exc}", param_hint="--records-dir"
            ) from None
        where = str(path)
    return RecordsOut(dir=where, format=fmt, rotate_ns=rotate_ns, ipfix=collector)
