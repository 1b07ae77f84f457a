"""Linux AF_PACKET TPACKET_V3 ring reader that hands over captured frames as columns.

A :class:`Ring` memory-maps a TPACKET_V3 RX ring and returns one :class:`Block` per retired
kernel block: numpy columns ``ts`` (uint64 ns since the epoch), ``wire`` (uint32 original
length), ``linktype`` (uint16 LINKTYPE_*), ``cap`` (uint32 captured length) and ``data`` (one
``bytes`` object: all captured frames back to back; frame ``i`` is
``data[starts[i]:starts[i] + cap[i]]`` where ``starts`` is the exclusive cumsum of ``cap``).

The parsing core, :func:`parse_block`, is a pure function over one block's bytes in the
kernel layout, so it is tested without a socket. The frame headers are read with numpy fancy
indexing; the ``tp_next_offset`` chain is found by a vectorised scan verified exactly against
the chain (a per-frame loop only as fallback), and the frames are gathered either by a numpy
byte gather (small frames) or ``b"".join`` of memoryview slices, one object per frame (larger
frames). Choices and thresholds come from ``bench_ring.py``.

Semantics follow libpcap's Linux memory-mapped capture: a VLAN tag stripped by the driver is
re-inserted after the MAC addresses (wire and cap grow by 4), then ``snaplen`` truncates.
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
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_BLOCK_NR",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_RETIRE_BLK_TOV_MS",
    "FANOUT_MODES",
    "Block",
    "Ring",
    "RingError",
    "compile_bpf",
    "iface_linktype",
    "parse_block",
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

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
ETH_P_8021Q = 0x8100

FANOUT_MODES: dict[str, int] = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "qm": 5}
PACKET_FANOUT_FLAG_DEFRAG = 0x8000

TPACKET_ALIGNMENT = 16  # TPACKET_ALIGN(): frame headers / tp_net alignment
V3_ALIGNMENT = 8  # TOTAL_PKT_LEN_INCL_ALIGN(): tp_next_offset alignment
BLK_HDR_LEN = 48  # ALIGN(sizeof(struct tpacket_block_desc), 8)
TPACKET3_HDR_LEN = 48  # sizeof(struct tpacket3_hdr)
SOCKADDR_LL_LEN = 20  # struct sockaddr_ll follows the header at TPACKET_ALIGN(48)

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1.
_BLK_STATUS = 8
_BLK_NUM_PKTS = 12
_BLK_OFF_FIRST = 16

# Word (uint32) indices inside one frame, relative to its tpacket3_hdr:
# 0 tp_next_offset, 1 tp_sec, 2 tp_nsec, 3 tp_snaplen, 4 tp_len, 5 tp_status,
# 6 tp_mac | tp_net << 16, 7 hv1.tp_rxhash, 8 hv1.tp_vlan_tci, 9 hv1.tp_vlan_tpid | pad << 16,
# 12.. struct sockaddr_ll: 14 = sll_hatype | sll_pkttype << 16 | sll_halen << 24.
_COLS = np.array([1, 2, 3, 4, 5, 6, 8, 9, 14], dtype=np.intp)

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IEEE802_11_RADIOTAP = 127
# ARPHRD_* (/sys/class/net/IF/type) -> LINKTYPE_*, for link types whose SOCK_RAW frames
# libpcap saves unchanged.
_ARPHRD_TO_LINKTYPE: dict[int, int] = {
    1: LINKTYPE_ETHERNET,  # ARPHRD_ETHER
    772: LINKTYPE_ETHERNET,  # ARPHRD_LOOPBACK: Linux lo carries a (zero) Ethernet header
    65534: LINKTYPE_RAW,  # ARPHRD_NONE: tun and similar, frames start at the IP header
    803: LINKTYPE_IEEE802_11_RADIOTAP,  # ARPHRD_IEEE80211_RADIOTAP
}

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


class RingError(OSError):
    """The ring could not be set up or broke; the caller may fall back to recvmsg."""


class Block(NamedTuple):
    """Frames of one ring block as columns (see module docstring for the data layout)."""

    ts: npt.NDArray[np.uint64]
    wire: npt.NDArray[np.uint32]
    linktype: npt.NDArray[np.uint16]
    cap: npt.NDArray[np.uint32]
    data: bytes


def empty_block() -> Block:
    """Return a Block with zero frames."""
    return Block(
        np.empty(0, np.uint64),
        np.empty(0, np.uint32),
        np.empty(0, np.uint16),
        np.empty(0, np.uint32),
        b"",
    )


# --- pure core -------------------------------------------------------------------------------


_U32 = struct.Struct("<I")
_BLK_LEN = 20

# Measured in bench_ring.py (AMD EPYC VM, Python 3.11, numpy 2.4):
# the vectorised scan costs ~0.07 ns per block byte plus ~10 ns per frame, the loop ~80 ns per
# frame, so the scan wins below ~1 KiB of ring space per frame (the traffic mix: ~800).
SCAN_MAX_FOOTPRINT = 1024
# The numpy byte gather costs ~1.7 ns per byte, b"".join ~150-200 ns per frame (one
# memoryview slice each) plus the copy: numpy wins while frames average <= ~96 bytes.
NUMPY_GATHER_MAX_MEAN = 96


def walk_loop(mv: memoryview, first: int, n: int) -> list[int]:
    """Offsets of the first ``n`` frames by following tp_next_offset one frame at a time.

    ``mv`` is a byte memoryview. Indexing a uint32 cast of it in a comprehension was the
    cheapest loop measured (struct.unpack_from: ~15 ns more per frame). Raises IndexError
    when an offset runs off the buffer.
    """
    if n <= 0:
        return []
    words = mv[: mv.nbytes & ~3].cast("I")
    o = first
    offs = [o]
    offs += [o := o + words[o >> 2] for _ in range(n - 1)]
    return offs


def walk_scan(mv: memoryview, first: int, n: int) -> npt.NDArray[np.intp] | None:
    """Offsets of the ``n`` frames without a per-frame Python step, or None if unproven.

    Candidates are the 8-aligned positions whose tp_mac|tp_net word equals the first frame's
    (the kernel gives every frame of a socket the same one). The chain is then verified
    exactly: in one shot when the candidates are exactly ``n`` (``pos[i+1] - pos[i] ==
    tp_next_offset[i]``, last 0), else by pointer doubling over the candidates, which drops
    look-alikes inside payloads. None (caller falls back to :func:`walk_loop`) when the chain
    leaves the candidates or the block is not laid out as the kernel does.
    """
    size = mv.nbytes
    if n < 2 or first % V3_ALIGNMENT or first + TPACKET3_HDR_LEN > size:
        return None
    blk_len = _U32.unpack_from(mv, _BLK_LEN)[0]
    end = min((blk_len + 7) & ~7, size & ~7)
    u32 = np.frombuffer(mv, np.uint32, end >> 2)
    w0 = first >> 2
    if w0 + 6 >= u32.size:
        return None
    cand = np.flatnonzero(u32[w0 + 6 :: 2] == u32[w0 + 6])  # row r <-> offset first + 8r
    if cand.size < n or cand[0] != 0:
        return None
    hop = u32[w0 + 2 * cand]  # tp_next_offset of every candidate
    if cand.size == n:
        pos = first + 8 * cand
        if hop[-1] == 0 and np.array_equal(pos[1:] - pos[:-1], hop[:-1]):
            return pos
        return None
    target = cand + (hop >> 3)
    j = np.searchsorted(cand, target)
    j[j >= cand.size] = cand.size
    ok = (j < cand.size) & (hop != 0)
    ok[ok] = cand[j[ok]] == target[ok]
    jump = np.append(np.where(ok, j, cand.size), cand.size)  # sentinel -> itself
    path = np.zeros(1, np.intp)
    while path.size < n:  # path[k] = jump^k(0); each round doubles the known prefix
        path = np.concatenate((path, jump[path]))
        jump = jump[jump]
    path = path[:n]
    if path[-1] == cand.size:
        return None
    return first + 8 * cand[path]


def frame_offsets(mv: memoryview, first: int, n: int) -> npt.NDArray[np.intp]:
    """Byte offsets of the ``n`` frames of a block (exact; see walk_scan / walk_loop)."""
    if n > 1 and _U32.unpack_from(mv, _BLK_LEN)[0] < n * SCAN_MAX_FOOTPRINT:
        offs = walk_scan(mv, first, n)
        if offs is not None:
            return offs
    return np.array(walk_loop(mv, first, n), dtype=np.intp)


def gather_join(mv: memoryview, starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp]) -> bytes:
    """``b"".join`` of memoryview slices (one copy of the data).

    A comprehension with ``mv[s:e]`` beat ``map(mv.__getitem__, map(slice, ...))`` by
    ~35 ns per frame (the slot-wrapper call costs more than BINARY_SUBSCR).
    """
    return b"".join([mv[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])


def gather_numpy(mv: memoryview, starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp]) -> bytes:
    """Byte gather with a precomputed index: ones, with a jump at every frame start, cumsum."""
    lens = ends - starts
    nz = lens > 0
    s, e, ln = starts[nz], ends[nz], lens[nz]
    if s.size == 0:
        return b""
    out_starts = np.cumsum(ln) - ln
    total = int(out_starts[-1] + ln[-1])
    idx: npt.NDArray[np.signedinteger[Any]] = np.ones(
        total, np.int32 if mv.nbytes < 1 << 31 else np.intp
    )
    idx[out_starts[1:]] = s[1:] - e[:-1] + 1
    idx[0] = s[0]
    np.cumsum(idx, out=idx)
    return bytes(np.frombuffer(mv, np.uint8).take(idx).tobytes())


def gather(mv: memoryview, starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp]) -> bytes:
    """Concatenate ``mv[starts[i]:ends[i]]`` for all ``i`` into one ``bytes``.

    Picks the cheaper of :func:`gather_numpy` (small frames) and :func:`gather_join`.
    """
    if starts.size == 0:
        return b""
    if int((ends - starts).sum()) <= starts.size * NUMPY_GATHER_MAX_MEAN:
        return gather_numpy(mv, starts, ends)
    return gather_join(mv, starts, ends)


def parse_block(
    buf: memoryview | bytes | bytearray,
    linktype: int = LINKTYPE_ETHERNET,
    *,
    snaplen: int | None = None,
    drop_outgoing: bool = False,
) -> Block:
    """Parse one TPACKET_V3 block (``struct tpacket_block_desc`` and its frames) into columns.

    Contract: pure; reads only ``buf`` and copies every frame's bytes out, so the block may be
    handed back to the kernel as soon as this returns (no view into ``buf`` survives).
    ``linktype`` is the LINKTYPE_* of all frames. A tag the driver stripped (tp_status has
    TP_STATUS_VLAN_VALID, or tp_vlan_tci != 0) on an Ethernet link is re-inserted after the 12
    MAC bytes with the TPID from hv1 (when TP_STATUS_VLAN_TPID_VALID) else 0x8100, adding 4 to
    wire and cap, as libpcap does (only when at least 12 bytes were captured). Then ``cap`` is
    truncated to ``snaplen`` (wire stays the original length). ``drop_outgoing`` drops frames
    whose sockaddr_ll says PACKET_OUTGOING. Raises ValueError on a malformed block.
    """
    mv = memoryview(buf).cast("B")
    size = mv.nbytes
    if size < BLK_HDR_LEN:
        raise ValueError(f"block of {size} bytes is shorter than its {BLK_HDR_LEN}-byte header")
    n, first = struct.unpack_from("<II", mv, _BLK_NUM_PKTS)
    if n == 0:
        return empty_block()
    try:
        offs = np.asarray(frame_offsets(mv, first, n), dtype=np.intp)
    except IndexError:
        raise ValueError("tp_next_offset chain leaves the block") from None
    # why: one 2-D fancy index reads every needed header word of every frame at once.
    u32 = np.frombuffer(mv, np.uint32, size >> 2)
    idx = (offs >> 2)[:, None] + _COLS
    # why: the kernel packs frames in increasing order; a 0 or short hop means corruption.
    if (
        offs[0] < BLK_HDR_LEN
        or idx[-1, -1] >= u32.size
        or (n > 1 and int(np.diff(offs).min()) < TPACKET3_HDR_LEN)
    ):
        raise ValueError("frame headers out of order or outside the block")
    rows = u32[idx]
    sec, nsec, snap, wire, status, macnet, tci, tpid, sll = rows.T
    if drop_outgoing:
        keep = ((sll >> 16) & 0xFF) != PACKET_OUTGOING
        if not keep.all():
            offs = offs[keep]
            sec, nsec, snap, wire, status, macnet, tci, tpid = (
                c[keep] for c in (sec, nsec, snap, wire, status, macnet, tci, tpid)
            )
            if offs.size == 0:
                return empty_block()
    starts = offs + (macnet & 0xFFFF)
    ends = starts + snap
    if int(ends.max()) > size:
        raise ValueError("frame data outside the block")
    ts = sec.astype(np.uint64) * np.uint64(1_000_000_000) + nsec
    wire = wire.copy()  # why: a fresh contiguous column, not a strided view of rows
    cap = snap.copy()
    vlan: npt.NDArray[np.bool_] | None = None
    if linktype == LINKTYPE_ETHERNET:
        vlan = (((status & TP_STATUS_VLAN_VALID) != 0) | (tci != 0)) & (snap >= 12)
        if not vlan.any():
            vlan = None
        else:
            wire += vlan.astype(np.uint32) << 2
            cap += vlan.astype(np.uint32) << 2
    if snaplen is not None:
        np.minimum(cap, snaplen, out=cap)
        if vlan is None:
            ends = starts + cap
    if vlan is None:
        data = gather(mv, starts, ends)
    else:
        data = _gather_vlan(mv, starts, ends, cap, vlan, status, tci, tpid)
    lt = np.full(offs.size, linktype, np.uint16)
    return Block(ts, wire, lt, cap, data)


def _gather_vlan(
    mv: memoryview,
    starts_a: npt.NDArray[np.intp],
    ends_a: npt.NDArray[np.intp],
    cap: npt.NDArray[np.uint32],
    vlan: npt.NDArray[np.bool_],
    status: npt.NDArray[np.uint32],
    tci: npt.NDArray[np.uint32],
    tpid: npt.NDArray[np.uint32],
) -> bytes:
    """Gather like :func:`gather`, re-inserting the stripped tag of each ``vlan`` frame.

    ``ends`` are the ends of the stored (untagged) bytes; non-VLAN frames are then cut to
    ``cap`` here. Slow path, one Python step per tagged frame (rare on real links).
    """
    starts = starts_a.tolist()
    ends = ends_a.tolist()
    pieces: list[memoryview | bytes] = [mv[s:e] for s, e in zip(starts, ends, strict=True)]
    for i in np.flatnonzero(vlan).tolist():
        t = int(tpid[i]) & 0xFFFF
        if not t and not status[i] & TP_STATUS_VLAN_TPID_VALID:
            t = ETH_P_8021Q  # why: old kernels leave tpid 0 and mean 802.1Q
        s = starts[i]
        tagged = b"".join(
            (mv[s : s + 12], struct.pack(">HH", t, int(tci[i]) & 0xFFFF), mv[s + 12 : ends[i]])
        )
        pieces[i] = tagged[: int(cap[i])]
    short = np.flatnonzero(~vlan & (cap < ends_a - starts_a)).tolist()
    for i in short:  # snaplen cut on an untagged frame
        pieces[i] = pieces[i][: int(cap[i])]
    return b"".join(pieces)


# --- BPF --------------------------------------------------------------------------------------

_BPF_RET_K = 0x06  # BPF_RET | BPF_K
_SOCK_FILTER = struct.Struct("<HBBI")  # struct sock_filter {code, jt, jf, k}


def compile_bpf(
    expr: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = MAXIMUM_SNAPLEN
) -> bytes:
    """Compile a pcap filter expression into raw ``struct sock_filter[]`` bytes.

    Uses scapy's libpcap binding (needs libpcap installed). Accepting returns are rewritten to
    ``snaplen`` (scapy compiles with 65535, which would cut 64 KiB GRO frames). The filter is
    compiled for a dead handle, so "vlan" primitives test inline tags only, not the tag the
    driver stripped. Raises ValueError on a bad expression, RingError without libpcap.
    """
    try:
        from scapy.arch.common import compile_filter, free_filter
        from scapy.error import Scapy_Exception
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RingError(errno.ENOSYS, f"scapy is needed to compile BPF filters: {e}") from None
    try:
        prog = compile_filter(expr, linktype=linktype)
    except ImportError as e:  # pragma: no cover - libpcap missing
        raise RingError(errno.ENOSYS, f"cannot compile BPF filter: {e}") from None
    except (Scapy_Exception, OSError) as e:
        raise ValueError(f"bad filter {expr!r}: {e}") from None
    try:
        n = prog.bf_len
        raw = ctypes.string_at(prog.bf_insns, n * _SOCK_FILTER.size)
    finally:
        free_filter(prog)
    return _set_bpf_snaplen(raw, snaplen)


def _set_bpf_snaplen(prog: bytes, snaplen: int) -> bytes:
    """Rewrite every non-zero ``ret #k`` of a classic BPF program to ``snaplen``."""
    out = bytearray(prog)
    for off in range(0, len(out), _SOCK_FILTER.size):
        code, jt, jf, k = _SOCK_FILTER.unpack_from(out, off)
        if code == _BPF_RET_K and k != 0:
            _SOCK_FILTER.pack_into(out, off, code, jt, jf, snaplen)
    return bytes(out)


def _cap_bpf_snaplen(prog: bytes, snaplen: int) -> bytes:
    """Lower every ``ret #k`` above ``snaplen`` to it (kernel-side truncation saves ring)."""
    out = bytearray(prog)
    for off in range(0, len(out), _SOCK_FILTER.size):
        code, jt, jf, k = _SOCK_FILTER.unpack_from(out, off)
        if code == _BPF_RET_K and k > snaplen:
            _SOCK_FILTER.pack_into(out, off, code, jt, jf, snaplen)
    return bytes(out)


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
                    _cap_bpf_snaplen(prog, self.snaplen)
                    if prog is not None
                    else _SOCK_FILTER.pack(_BPF_RET_K, 0, 0, self.snaplen)
                )
            if prog is not None:
                step = "attach BPF filter"
                _attach_filter(sock, prog)
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
        return bool(self._status[(self._cur * self.block_size + _BLK_STATUS) >> 2] & TP_STATUS_USER)

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
            self._status[(off + _BLK_STATUS) >> 2] = TP_STATUS_KERNEL
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
            _attach_filter(self._sock, _SOCK_FILTER.pack(_BPF_RET_K, 0, 0, 0))
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


def _attach_filter(sock: socket.socket, prog: bytes) -> None:
    """Attach raw ``struct sock_filter[]`` bytes with SO_ATTACH_FILTER."""
    n, rem = divmod(len(prog), _SOCK_FILTER.size)
    if rem or not 0 < n <= 4096:
        raise OSError(
            errno.EINVAL, f"BPF program must be 1..4096 instructions, got {len(prog)} bytes"
        )
    insns = ctypes.create_string_buffer(prog, len(prog))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}, native layout
    fprog = struct.pack("@HP", n, ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


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
        return _ARPHRD_TO_LINKTYPE[hatype]
    except KeyError:
        raise RingError(
            errno.EPROTONOSUPPORT, f"{iface!r}: unsupported ARPHRD type {hatype}"
        ) from None
