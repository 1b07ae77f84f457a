"""One link read by several processes: ``producer sniff --fanout N``.

    sniffer process 1: ring in fanout group G --\\
    sniffer process 2: ring in fanout group G ----> main process: RunWriter (one capture)
    ...                                         --/  blocks over pipes, counters per process

The kernel spreads the frames of one interface over the members of a PACKET_FANOUT group (by
flow hash, CPU, load or queue mapping): each member is a process with its own TPACKET_V3 ring
(:class:`flowherd.producer.live.ring.Ring`) that turns whole blocks into columns, the part that
costs CPU per frame. Blocks reach the main process over a pipe as raw arrays (no pickling) and
go into the one capture run: batches are cut there, so the capture is one stream of batches and
completes as any other. The merge is exact and order-free, so it does not matter which member
saw which frame; with ``hash`` a flow's two directions may still land in different members.

A member that dies is named in the capture's warnings (with its exit status) and the others
carry on; the capture then completes, marked incomplete (exit status 1), like a capture with
drops. Kernel counters are kept per member and summed; :meth:`FanoutReader.members` lists each
member with its counters and whether it died (what the capture's meta hash records).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import struct
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.synchronize import Event

import numpy as np

from flowherd.models.columns import Columns
from flowherd.models.state import SnifferMember
from flowherd.producer.live.packet_socket import Limits, SniffError
from flowherd.producer.live.ring import iface_linktype
from flowherd.producer.live.ring_capture import BlockReader, RingOptions, filter_program
from flowherd.producer.live.tpacket import RingError

log = logging.getLogger(__name__)

FANOUT_MODES = ("hash", "lb", "cpu", "qm")
_HEAD = struct.Struct("<cQQ")  # kind, frames, data bytes
_STATS = struct.Struct("<cQQd")  # b"S", kernel packets, kernel drops, CPU seconds
_READY, _BLOCK, _STAT, _END = b"R", b"B", b"S", b"E"


def _pack(blk_ts: np.ndarray, wire: np.ndarray, cap: np.ndarray, data: bytes) -> list[bytes]:
    n = len(blk_ts)
    return [_HEAD.pack(_BLOCK, n, len(data)), blk_ts.tobytes(), wire.tobytes(), cap.tobytes(), data]


def _unpack(msg: bytes, linktype: int) -> Columns:
    _, n, size = _HEAD.unpack_from(msg)
    at = _HEAD.size
    ts = np.frombuffer(msg, np.uint64, n, at)
    wire = np.frombuffer(msg, np.uint32, n, at + 8 * n)
    cap = np.frombuffer(msg, np.uint32, n, at + 12 * n)
    data = msg[at + 16 * n : at + 16 * n + size]
    return Columns(ts, wire, np.full(n, linktype, np.uint16), cap, data)


def _member(
    iface: str,
    prog: bytes | None,
    promisc: bool,
    snaplen: int,
    opts: RingOptions,
    conn: Connection,
    stop: Event,
) -> None:
    """A sniffer process: its ring's blocks to ``conn`` until ``stop``, then drained."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    try:
        ring = opts.open(iface, prog, promisc, snaplen)
    except RingError as exc:
        conn.send_bytes(_END + (exc.strerror or str(exc)).encode())
        return
    conn.send_bytes(_READY)
    drain = 2 * opts.block_timeout_ms / 1000 + 0.1
    plugged, next_stats, error = False, time.monotonic() + 0.5, ""
    try:
        while True:
            blk = ring.next_block(drain if plugged else 0.1)
            if blk is None:
                if plugged:
                    break
            elif len(blk.ts):
                conn.send_bytes(b"".join(_pack(blk.ts, blk.wire, blk.cap, blk.data)))
            now = time.monotonic()
            if now >= next_stats:
                conn.send_bytes(_STATS.pack(_STAT, *ring.stats(), time.process_time()))
                next_stats = now + 0.5
            if not plugged and stop.is_set():
                ring.plug()
                plugged = True
    except (RingError, OSError) as exc:
        error = exc.strerror or str(exc)
    finally:
        with contextlib.suppress(OSError):
            conn.send_bytes(_STATS.pack(_STAT, *ring.stats(), time.process_time()))
            conn.send_bytes(_END + error.encode())
        ring.close()


class FanoutSocket:
    """``members`` sniffer processes in one PACKET_FANOUT group on ``iface``; ``close()`` it.

    Raises :class:`SniffError` for a filter libpcap does not compile, and when a member cannot
    set up its ring or join the group (its reason, e.g. no privilege or no such interface)."""

    def __init__(
        self,
        iface: str,
        bpf: str | None,
        promisc: bool,
        snaplen: int,
        opts: RingOptions,
        members: int,
    ) -> None:
        try:
            self.linktype = iface_linktype(iface)
        except RingError as exc:
            raise SniffError(iface, exc.strerror or str(exc)) from None
        prog = filter_program(iface, bpf, self.linktype, snaplen)
        if opts.fanout is None:
            opts = RingOptions(
                opts.block_size,
                opts.block_nr,
                opts.block_timeout_ms,
                (os.getpid() & 0xFFFF, "hash"),
            )
        self.iface, self.snaplen, self.opts = iface, snaplen, opts
        ctx = mp.get_context("spawn")  # no fork of a process that holds threads and clients
        self.stop_members = ctx.Event()
        self.procs: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []
        try:
            for i in range(members):
                here, there = ctx.Pipe(duplex=False)
                p = ctx.Process(
                    target=_member,
                    args=(iface, prog, promisc, snaplen, opts, there, self.stop_members),
                    name=f"flowherd-sniff-{i + 1}",
                    daemon=True,
                )
                p.start()
                there.close()
                self.procs.append(p)
                self.conns.append(here)
            for i, conn in enumerate(self.conns):
                if not conn.poll(30):
                    raise SniffError(iface, f"sniffer process {i + 1} did not start")
                msg = conn.recv_bytes()
                if msg[:1] == _END:
                    raise SniffError(iface, f"cannot capture: {msg[1:].decode()}")
        except BaseException:
            self.close()
            raise

    def describe(self) -> str:
        o = self.opts
        group, mode = o.fanout or (0, "hash")
        return (
            f"{len(self.procs)} processes in fanout group {group} ({mode}), each a TPACKET_V3 "
            f"ring of {o.block_nr} blocks of {o.block_size >> 20} MiB"
        )

    def reader(self, limits: Limits, stop: threading.Event) -> FanoutReader:
        return FanoutReader(self, limits, stop)

    def close(self) -> None:
        self.stop_members.set()
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> FanoutSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _death(proc: mp.process.BaseProcess) -> tuple[str, str | None]:
    """How a member that closed its pipe ended, in words, and the name of the signal that
    killed it (None when none did)."""
    proc.join(2)
    code = proc.exitcode
    if code is None:
        return "stopped answering", None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name
            return f"died of signal {-code}", f"signal {-code}"
        return f"died of signal {-code} ({name})", name
    return f"exited with status {code}", None


class FanoutReader(BlockReader):
    """The main process's side: one thread receives every member's blocks and counters, with
    the contract of :class:`flowherd.producer.live.ring_capture.RingReader`."""

    def __init__(self, live: FanoutSocket, limits: Limits, stop: threading.Event) -> None:
        super().__init__(live.opts.block_size, limits, stop)
        self.live = live
        #: each member's kernel counters (packets, drops) as it last reported them
        self.kernel: list[tuple[int, int]] = [(0, 0)] * len(live.procs)
        #: frames received from each member (a member killed before it reported keeps these)
        self.received: list[int] = [0] * len(live.procs)
        self.cpu: list[float] = [0.0] * len(live.procs)
        self.problems: list[str] = []
        #: members that died: index -> the name of the signal that killed it (or None)
        self.died: dict[int, str | None] = {}

    def counts(self) -> list[tuple[int, int]]:
        """Each member's (kernel packets, kernel drops): as it last reported them, but never
        fewer packets than the frames it handed over plus its drops (a member reports every
        0.5 s, so one that died may not have reported what it read since, or at all)."""
        return [(max(p, r + d), d) for (p, d), r in zip(self.kernel, self.received, strict=True)]

    def members(self) -> list[SnifferMember]:
        """Each member with its kernel counters (:meth:`counts`) and whether it died."""
        return [
            SnifferMember(
                member=i + 1,
                pid=proc.pid or 0,
                packets=p,
                drops=d,
                state="died" if i in self.died else "ok",
                signal=self.died.get(i),
            )
            for i, (proc, (p, d)) in enumerate(zip(self.live.procs, self.counts(), strict=True))
        ]

    def _count(self) -> None:
        counts = self.counts()
        self.c.kernel_packets = sum(p for p, _ in counts)
        self.c.kernel_drops = sum(d for _, d in counts)
        self.c.per_member = counts
        self.c.cpu_s = sum(self.cpu)

    def run(self) -> None:
        live = self.live
        open_ = {conn: i for i, conn in enumerate(live.conns)}
        try:
            while open_:
                if self.stop.is_set():
                    live.stop_members.set()
                for conn in wait(list(open_), timeout=0.1):
                    i = open_[conn]  # type: ignore[index]
                    try:
                        msg = conn.recv_bytes()  # type: ignore[union-attr]
                    except (EOFError, OSError):
                        why, self.died[i] = _death(live.procs[i])
                        self.problems.append(
                            f"sniffer process {i + 1} of {len(live.procs)} "
                            f"(pid {live.procs[i].pid}) {why}; the others carried on"
                        )
                        log.warning("event=sniffer_died member=%d %s", i + 1, why)
                        del open_[conn]  # type: ignore[arg-type]
                        continue
                    kind = msg[:1]
                    if kind == _BLOCK:
                        cols = _unpack(msg, live.linktype)
                        self.received[i] += len(cols)
                        self._take(cols, self.stop.is_set())
                    elif kind == _STAT:
                        _, p, d, cpu = _STATS.unpack(msg)
                        self.kernel[i], self.cpu[i] = (p, d), cpu
                        self._count()
                    elif kind == _END:
                        if len(msg) > 1:
                            self.problems.append(f"sniffer process {i + 1}: {msg[1:].decode()}")
                        del open_[conn]  # type: ignore[arg-type]
        finally:
            self._count()
            if self.problems:
                self.c.error = "; ".join(self.problems)
            self._hand(None, block=True)
