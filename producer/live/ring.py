"""The TPACKET_V3 RX ring of a Linux AF_PACKET socket: set up, read block by block, stopped.

A :class:`Ring` memory-maps the ring on one interface (snap length and BPF filter in the
kernel, promiscuous mode, a PACKET_FANOUT group) and returns one
:class:`~flowherd.producer.live.tpacket.Block` of columns per retired kernel block, parsed by
:func:`~flowherd.producer.live.tpacket.parse_block` and given back to the kernel before the
call returns. Set-up failures raise :class:`~flowherd.producer.live.tpacket.RingError`, so
the caller can fall back to one ``recvmsg`` per frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator
from types import TracebackType

from flowherd.producer.live.bpf import accept_all, attach_filter, cap_snaplen
from flowherd.producer.live.tpacket import (
    ARPHRD_TO_LINKTYPE,
    BLK_STATUS,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    Block,
    RingError,
    parse_block,
)

__all__ = [
    "DEFAULT_BLOCK_NR",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_RETIRE_BLK_TOV_MS",
    "FANOUT_MODES",
    "Ring",
    "iface_linktype",
    "tune_malloc",
]

# --- kernel ABI (include/uapi/linux/if_packet.h) -------------------------------------------
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003

FANOUT_MODES: dict[str, int] = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "qm": 5}
PACKET_FANOUT_FLAG_DEFRAG = 0x8000


# Sizing for a 10 Gbit/s link (1.25 GB/s at line rate).
# 4 MiB = order-10 allocation, the largest the buddy allocator hands out with 4 KiB pages, so
# each block is physically contiguous (larger blocks fall back to vmalloc). It holds ~5k
# average frames, so even at line rate a block retires only every ~3.4 ms and the fixed
# per-block Python cost (~tens of us) is amortised over thousands of frames; a 64 KiB
# GRO/TSO frame always fits.
DEFAULT_BLOCK_SIZE = 4 << 20
# 32 x 4 MiB = 128 MiB per socket: ~100 ms of line-rate traffic to ride out a GC pause or a
# burst while the reader is busy with the previous block.
DEFAULT_BLOCK_NR = 32
# A block that is not full is retired after this many ms: bounds latency at low rates
# (a flow table does not care about 50 ms) while at >= ~100k frames/s blocks fill first.
DEFAULT_RETIRE_BLK_TOV_MS = 50
MAXIMUM_SNAPLEN = 262144  # libpcap's default/maximum snapshot length


_M_TRIM_THRESHOLD = -1  # glibc mallopt() parameters
_M_MMAP_THRESHOLD = -3
_malloc_tuned = False


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Make glibc serve multi-MiB allocations from the heap; True if it took effect.

    Each block becomes a new multi-MiB ``bytes`` (plus numpy temporaries). With glibc's
    default (dynamic) thresholds these often get fresh mmap'd pages, i.e. ~1000 page faults
    per block: measured live, 0.6 s of system time per 2.6 M frames, gone with this setting.
    Process-wide and kept: freed memory up to ``trim_threshold`` stays with the process.
    Not glibc (no mallopt, or it refuses): returns False and changes nothing.
    """
    global _malloc_tuned
    if not _malloc_tuned:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        _malloc_tuned = (
            mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
            and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
        )
    return _malloc_tuned


# --- the socket --------------------------------------------------------------------------------


def _raise(err: OSError, what: str) -> RingError:
    code = err.errno if err.errno is not None else errno.EIO
    return RingError(code, f"{what}: {err.strerror or err}")


class Ring:
    """A TPACKET_V3 RX ring bound to one interface.

    Blocks are handed over in ring order by :meth:`next_block` / :meth:`blocks`; each block is
    copied out by :func:`parse_block` and returned to the kernel before the call returns, so
    no returned object refers to the ring. Not thread-safe. Set-up failures raise
    :class:`RingError` (not Linux, no CAP_NET_RAW, no such interface, ring refused, ...).

    ``fanout=(group_id, mode)`` joins a PACKET_FANOUT group (mode: an int or a key of
    :data:`FANOUT_MODES`); for "hash", ``fanout_defrag`` (default on) reassembles IP
    fragments before hashing so all fragments of a datagram reach the same member as its
    unfragmented packets (the member then sees the reassembled datagram); all members of a
    group must use the same mode and flags or the kernel refuses the join. ``ignore_outgoing``
    (default: only on loopback, where each frame is seen twice) skips frames this host sent,
    with PACKET_IGNORE_OUTGOING or, on kernels without it, in :func:`parse_block`.
    ``malloc_tuning`` calls :func:`tune_malloc` (process-wide, see there).
    """

    def __init__(
        self,
        iface: str,
        *,
        snaplen: int | None = None,
        promisc: bool = False,
        bpf: bytes | None = None,
        fanout: tuple[int, int | str] | None = None,
        fanout_defrag: bool = True,
        ignore_outgoing: bool | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        block_nr: int = DEFAULT_BLOCK_NR,
        retire_blk_tov: int = DEFAULT_RETIRE_BLK_TOV_MS,
        malloc_tuning: bool = True,
    ) -> None:
        self._sock: socket.socket | None = None
        self._mm: mmap.mmap | None = None
        self._mv: memoryview | None = None
        self._status: memoryview | None = None  # the ring as uint32 words
        self._packets = 0
        self._drops = 0
        self._cur = 0
        if not sys.platform.startswith("linux"):
            raise RingError(errno.ENOSYS, f"AF_PACKET rings need Linux, not {sys.platform}")
        page = mmap.PAGESIZE
        if block_size <= 0 or block_size % page or block_nr <= 0:
            raise RingError(
                errno.EINVAL, f"block_size must be a positive multiple of {page}, block_nr > 0"
            )
        if snaplen is not None and snaplen <= 0:
            raise RingError(errno.EINVAL, f"snaplen must be positive, got {snaplen}")
        if malloc_tuning:
            tune_malloc()
        self.iface = iface
        self.snaplen = snaplen
        self.block_size = block_size
        self.block_nr = block_nr
        self.retire_blk_tov = retire_blk_tov
        try:
            ifindex = socket.if_nametoindex(iface)
        except OSError:
            raise RingError(errno.ENODEV, f"no such interface: {iface!r}") from None
        self.linktype = iface_linktype(iface)
        loopback = _iface_arphrd(iface) == 772
        want_ignore = loopback if ignore_outgoing is None else ignore_outgoing
        self._drop_outgoing = False
        try:
            # why protocol 0: receive nothing until bind() picks the interface, so the ring
            # does not start with frames from every interface (libpcap does the same).
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as e:
            raise RingError(e.errno, "AF_PACKET socket needs root or CAP_NET_RAW") from None
        except OSError as e:
            raise _raise(e, "cannot open AF_PACKET socket") from None
        try:
            self._setup(ifindex, want_ignore, bpf, promisc, fanout, fanout_defrag, retire_blk_tov)
        except BaseException:
            self.close()
            raise
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN | select.POLLERR)

    def _setup(
        self,
        ifindex: int,
        want_ignore: bool,
        bpf: bytes | None,
        promisc: bool,
        fanout: tuple[int, int | str] | None,
        fanout_defrag: bool,
        tov: int,
    ) -> None:
        sock = self._sock
        assert sock is not None
        step = "set TPACKET_V3"
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            if want_ignore:
                try:
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                except OSError:  # kernel < 4.20: filter on sll_pkttype instead
                    self._drop_outgoing = True
            prog = bpf
            if self.snaplen is not None:
                # why: truncating in the kernel keeps the ring from filling with bytes we cut.
                prog = (
                    cap_snaplen(prog, self.snaplen)
                    if prog is not None
                    else accept_all(self.snaplen)
                )
            if prog is not None:
                step = "attach BPF filter"
                attach_filter(sock, prog)
            step = "set up PACKET_RX_RING"
            frame_size = 2048  # why: unused by V3, but the kernel checks the arithmetic
            frames = self.block_size // frame_size * self.block_nr
            req = struct.pack("7I", self.block_size, self.block_nr, frame_size, frames, tov, 0, 0)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            step = "mmap the ring"
            self._mm = mmap.mmap(
                sock.fileno(),
                self.block_size * self.block_nr,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
            self._mv = memoryview(self._mm)
            self._status = self._mv.cast("I")
            step = f"bind to {self.iface}"
            sock.bind((self.iface, ETH_P_ALL))
            if promisc:
                step = "set promiscuous mode"
                mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            if fanout is not None:
                step = "join fanout group"
                group, mode = fanout
                m = FANOUT_MODES[mode] if isinstance(mode, str) else mode
                if not 0 <= group <= 0xFFFF:
                    raise OSError(errno.EINVAL, f"fanout group id {group} not in 0..65535")
                if m == FANOUT_MODES["hash"] and fanout_defrag:
                    m |= PACKET_FANOUT_FLAG_DEFRAG
                # why bytes: DEFRAG sets bit 31, which overflows setsockopt's signed int.
                sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("I", group | m << 16))
        except KeyError as e:
            raise RingError(errno.EINVAL, f"unknown fanout mode {e}") from None
        except OSError as e:
            raise _raise(e, f"cannot {step} on {self.iface}") from None

    # -- reading ---------------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's file descriptor (for an outer event loop)."""
        if self._sock is None:
            raise RingError(errno.EBADF, "ring is closed")
        return self._sock.fileno()

    def _ready(self) -> bool:
        assert self._status is not None
        return bool(self._status[(self._cur * self.block_size + BLK_STATUS) >> 2] & TP_STATUS_USER)

    def _take(self) -> Block:
        assert self._mv is not None and self._status is not None
        off = self._cur * self.block_size
        view = self._mv[off : off + self.block_size]
        try:
            blk = parse_block(
                view, self.linktype, snaplen=self.snaplen, drop_outgoing=self._drop_outgoing
            )
        finally:
            view.release()
            # why only now: the kernel may overwrite the block as soon as it is KERNEL again.
            self._status[(off + BLK_STATUS) >> 2] = TP_STATUS_KERNEL
            self._cur = (self._cur + 1) % self.block_nr
        return blk

    def next_block(self, timeout: float | None = None) -> Block | None:
        """Return the next retired block, waiting at most ``timeout`` s (None: forever).

        Returns None on timeout. A block may hold zero frames (all dropped as outgoing).
        Raises RingError if the socket reports an error (e.g. ENETDOWN: the interface went
        down); the error is then cleared and reading may continue.
        """
        if self._sock is None:
            raise RingError(errno.EBADF, "ring is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._ready():
                return self._take()
            if deadline is None:
                wait = -1
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = max(1, int(left * 1000 + 0.999))
            for _fd, ev in self._poll.poll(wait):
                if ev & select.POLLERR:
                    err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise RingError(err, f"{self.iface}: {os.strerror(err)}")

    def blocks(self, timeout: float | None = None) -> Iterator[Block]:
        """Yield blocks until ``timeout`` s pass with none ready (None: forever)."""
        while (blk := self.next_block(timeout)) is not None:
            yield blk

    def plug(self) -> None:
        """Attach a drop-all filter: nothing more enters the ring; what is in it can be read
        (a clean stop: the last blocks retire within ``retire_blk_tov`` ms)."""
        if self._sock is None:
            raise RingError(errno.EBADF, "ring is closed")
        try:
            attach_filter(self._sock, accept_all(0))
        except OSError as e:
            raise _raise(e, f"cannot stop the capture on {self.iface}") from None

    def stats(self) -> tuple[int, int]:
        """Return ``(packets, drops)`` accumulated since the ring was opened.

        ``packets`` counts every frame that passed the filter, including the dropped ones
        (the kernel adds drops into tp_packets for V3). The kernel resets its counters on each
        read, so they are accumulated here.
        """
        if self._sock is None:
            return self._packets, self._drops
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, _freeze = struct.unpack("III", raw)
        self._packets += packets
        self._drops += drops
        return self._packets, self._drops

    def close(self) -> None:
        """Unmap the ring and close the socket; idempotent."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self.stats()  # why: keep the final counts readable after close
        for v in (self._status, self._mv):
            if v is not None:
                v.release()
        self._status = self._mv = None
        if self._mm is not None:
            # BufferError: a view is still exported somewhere; GC unmaps it later
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Ring:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else f"fd={self._sock.fileno()}"
        return (
            f"Ring({self.iface!r}, {state}, block_size={self.block_size}, "
            f"block_nr={self.block_nr}, linktype={self.linktype})"
        )


def _iface_arphrd(iface: str) -> int:
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            return int(f.read())
    except (OSError, ValueError):
        raise RingError(errno.ENODEV, f"cannot read link type of {iface!r}") from None


def iface_linktype(iface: str) -> int:
    """The LINKTYPE_* of the frames a SOCK_RAW packet socket reads on ``iface``; RingError
    for a missing interface or an unsupported link type."""
    hatype = _iface_arphrd(iface)
    try:
        return ARPHRD_TO_LINKTYPE[hatype]
    except KeyError:
        raise RingError(
            errno.EPROTONOSUPPORT, f"{iface!r}: unsupported ARPHRD type {hatype}"
        ) from None
