"""Live capture through a TPACKET_V3 ring: whole kernel blocks handed over as columns.

    reader thread (ring)                                  main thread (the only RunWriter user)
    a retired block of frames -> Columns (numpy, no   ->  RunWriter.add_columns; flush when full
    object per frame); a bounded queue of blocks          or every --flush-interval

:class:`RingSocket` opens the ring (:class:`flowherd.producer.live.ring.Ring`) with the BPF
filter compiled by libpcap, the snap length, promiscuous mode and, with ``--fanout``, a
PACKET_FANOUT group; :class:`RingReader` is the sniffer thread, with the contract of
:class:`flowherd.producer.live.packet_socket.Reader` (counters, limits, clean stop, drop
accounting) so :func:`flowherd.producer.live.sniff.sniff` runs either.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass

from flowherd.models.columns import Columns
from flowherd.producer.live.bpf import compile_bpf
from flowherd.producer.live.packet_socket import Counters, Limits, SniffError
from flowherd.producer.live.ring import (
    DEFAULT_BLOCK_NR,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_RETIRE_BLK_TOV_MS,
    Ring,
    iface_linktype,
)
from flowherd.producer.live.tpacket import RingError

log = logging.getLogger(__name__)

#: what the reader may hold in blocks waiting for the writer, in bytes of frames
QUEUE_BYTES = 256 << 20


@dataclass(frozen=True)
class RingOptions:
    """The ring's geometry (``--ring-blocks``, ``--ring-block-size``, ``--block-timeout``) and
    its fanout group (``--fanout``: ``(group id, mode)``)."""

    block_size: int = DEFAULT_BLOCK_SIZE
    block_nr: int = DEFAULT_BLOCK_NR
    block_timeout_ms: int = DEFAULT_RETIRE_BLK_TOV_MS
    fanout: tuple[int, str] | None = None

    def open(self, iface: str, prog: bytes | None, promisc: bool, snaplen: int) -> Ring:
        """A ring of this geometry on ``iface`` with the compiled filter ``prog``; raises
        :class:`RingError` where the kernel refuses it."""
        return Ring(
            iface,
            snaplen=snaplen,
            promisc=promisc,
            bpf=prog,
            fanout=self.fanout,
            block_size=self.block_size,
            block_nr=self.block_nr,
            retire_blk_tov=self.block_timeout_ms,
        )


class RingSocket:
    """An open ring on ``iface`` with its LINKTYPE; ``close()`` it (context manager).

    Raises :class:`SniffError` for a filter libpcap does not compile and
    :class:`flowherd.producer.live.ring.RingError` where the ring cannot be set up (no such
    interface, no privilege, the kernel refused the ring or the fanout group)."""

    def __init__(
        self,
        iface: str,
        bpf: str | None,
        promisc: bool,
        snaplen: int,
        opts: RingOptions,
    ) -> None:
        prog = filter_program(iface, bpf, iface_linktype(iface), snaplen)
        self.ring = opts.open(iface, prog, promisc, snaplen)
        self.iface, self.linktype, self.snaplen, self.opts = (
            iface,
            self.ring.linktype,
            snaplen,
            opts,
        )

    def describe(self) -> str:
        o = self.opts
        text = (
            f"TPACKET_V3 ring, {o.block_nr} blocks of {o.block_size >> 20} MiB, "
            f"block timeout {o.block_timeout_ms} ms"
        )
        if o.fanout:
            text += f", fanout group {o.fanout[0]} ({o.fanout[1]})"
        return text

    def reader(self, limits: Limits, stop: threading.Event) -> RingReader:
        return RingReader(self, limits, stop)

    def close(self) -> None:
        self.ring.close()

    def __enter__(self) -> RingSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def filter_program(iface: str, bpf: str | None, linktype: int, snaplen: int) -> bytes | None:
    """The ``-f`` filter compiled for ``linktype`` (None without one); :class:`SniffError`
    with libpcap's reason when it does not compile."""
    if not bpf:
        return None
    try:
        return compile_bpf(bpf, linktype, snaplen)
    except ValueError as exc:
        raise SniffError(iface, f"invalid filter {bpf!r}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.rsplit("): ", 1)[-1].strip("()") if "(" in text else text


class BlockReader:
    """What a sniffer thread that hands over whole blocks shares: the counters, ``--count``
    honoured within a block, and a bounded queue of blocks; a full queue (the writer held back
    by backpressure) drops the block and counts it as producer drops, except while draining
    after the stop, when nothing read may be lost."""

    def __init__(self, block_size: int, limits: Limits, stop: threading.Event) -> None:
        self.stop, self.c = stop, Counters()
        self.limit = limits.count or sys.maxsize
        self.out: queue.Queue[Columns | None] = queue.Queue(max(1, QUEUE_BYTES // block_size))
        self.abandoned = False  # the main thread gave up: never block on the queue

    def _hand(self, cols: Columns | None, block: bool) -> None:
        if not block:
            try:
                self.out.put_nowait(cols)
            except queue.Full:
                self.c.producer_drops += len(cols) if cols is not None else 0
            return
        while not self.abandoned:
            with contextlib.suppress(queue.Full):
                return self.out.put(cols, timeout=0.2)

    def _take(self, cols: Columns, draining: bool) -> None:
        c = self.c
        room = self.limit - c.captured
        if len(cols) > room:
            c.beyond_count += len(cols) - room
            cols = cols.slice(0, max(room, 0))
        if len(cols):
            c.captured += len(cols)
            self._hand(cols, block=draining)
        if c.captured >= self.limit:
            self.stop.set()


class RingReader(BlockReader):
    """The sniffer thread of a ring: hands each block over as :class:`Columns` and stops
    cleanly: a drop-all filter, then the ring drained."""

    def __init__(self, live: RingSocket, limits: Limits, stop: threading.Event) -> None:
        super().__init__(live.opts.block_size, limits, stop)
        self.live = live

    def _kernel(self) -> None:
        with contextlib.suppress(RingError, OSError):
            self.c.kernel_packets, self.c.kernel_drops = self.live.ring.stats()

    def run(self) -> None:
        ring, c = self.live.ring, self.c
        # after the stop, the last partly filled block retires within the block timeout
        drain_wait = 2 * ring.retire_blk_tov / 1000 + 0.1
        plugged = False
        next_stats = time.monotonic() + 1.0
        cpu0 = time.thread_time()
        try:
            while True:
                blk = ring.next_block(drain_wait if plugged else 0.1)
                if blk is None:
                    if plugged:
                        break  # drained after the stop
                elif len(blk.ts):
                    self._take(Columns(blk.ts, blk.wire, blk.linktype, blk.cap, blk.data), plugged)
                now = time.monotonic()
                if now >= next_stats:
                    self._kernel()
                    next_stats = now + 1.0
                if not plugged and self.stop.is_set():
                    ring.plug()
                    plugged = True
        except (RingError, OSError) as exc:  # e.g. the interface went down
            c.error = exc.strerror or str(exc)
        finally:
            self._kernel()
            c.cpu_s = time.thread_time() - cpu0
            self._hand(None, block=True)


__all__ = ["BlockReader", "RingOptions", "RingReader", "RingSocket"]
