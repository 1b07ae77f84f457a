"""Live capture from one Linux network interface: the packet socket and its reader thread.

scapy's ``L2ListenSocket`` opens the socket (bind, promiscuous mode, the BPF filter compiled by
libpcap); frames are then read with ``recvmsg`` directly, never dissected: the kernel's
``SO_TIMESTAMPNS`` gives integer-ns timestamps and ``PACKET_AUXDATA`` the original length and
any VLAN tag the driver stripped (re-inserted, as libpcap does). Linux only. The reader thread
hands records over in chunks through a bounded queue (see :mod:`flowherd.producer.live.sniff`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import queue
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass

from flowherd.models.batch import RawRecord
from flowherd.models.errors import CaptureError

log = logging.getLogger(__name__)

# Linux ABI (linux/if_packet.h, asm-generic/socket.h)
SOL_PACKET, PACKET_AUXDATA, PACKET_STATISTICS = 263, 8, 6
SO_TIMESTAMPNS, SO_RCVBUFFORCE, SO_ATTACH_FILTER = 35, 33, 26
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
SIOCGIFHWADDR, ARPHRD_LOOPBACK = 0x8927, 772
#: interface hardware type (ARPHRD_*) -> LINKTYPE_* of the frames a SOCK_RAW packet socket reads
LINKTYPE_OF_ARPHRD = {1: 1, 772: 1, 65534: 101, 519: 101}  # ether, loopback, none (tun), rawip
_AUX, _TS, _VLAN = struct.Struct("IIIHHHH"), struct.Struct("qq"), struct.Struct("!HH")
CHUNK = 256  # records per hand-over between the threads


class SniffError(CaptureError):
    """Live capture cannot start: no such interface, no privilege, a bad filter, not Linux."""


@dataclass(frozen=True)
class Limits:
    """When to stop (whichever comes first) and how often to flush a partial batch."""

    count: int | None = None
    duration: float | None = None
    flush_interval: float = 1.0
    queue_packets: int = 262_144  # the producer's own buffer, in records (about)


@dataclass
class Counters:
    """What the sniffer saw. ``kernel_*`` stay ``None`` where the kernel gives no counters.

    ``kernel_packets - kernel_drops == captured + beyond_count + duplicates`` after a clean stop;
    the run holds ``captured - producer_drops`` records."""

    captured: int = 0
    producer_drops: int = 0
    beyond_count: int = 0  # read after --count was reached: not forwarded
    duplicates: int = 0  # loopback frames seen again as outgoing (libpcap skips them too)
    kernel_packets: int | None = None
    kernel_drops: int | None = None
    error: str | None = None
    #: (kernel packets, kernel drops) of each sniffer process of a fanout group
    per_member: list[tuple[int, int]] | None = None
    #: CPU seconds the reading took (the sniffer thread, or the fanout processes together)
    cpu_s: float | None = None

    def summary(self) -> str:
        if self.kernel_packets is None:
            text = "kernel drop counters unavailable"
        else:
            text = f"kernel dropped {self.kernel_drops or 0:,} of {self.kernel_packets:,} packets"
            if self.per_member:
                each = ", ".join(
                    f"{i}: {d:,} of {p:,}" for i, (p, d) in enumerate(self.per_member, 1)
                )
                text += f" (by sniffer process {each})"
        text += f"; producer dropped {self.producer_drops:,}"
        if self.beyond_count:
            text += f"; {self.beyond_count:,} read after --count was reached were not forwarded"
        return text

    @property
    def complete(self) -> bool:
        """No drops and no capture error: the run holds every frame the filter matched."""
        return not (self.kernel_drops or self.producer_drops or self.error) and (
            self.kernel_packets is not None
        )


def _problem(exc: BaseException) -> str:
    m = re.search(r"\(([^()]*)\)\s*$", str(exc))  # libpcap's reason, inside scapy's message
    return m[1] if m else str(exc)


class LiveSocket:
    """An open packet socket on ``iface`` with its LINKTYPE; ``close()`` it (context manager).

    Raises :class:`SniffError` (nothing else) for a missing interface, an unsupported link type,
    a filter libpcap does not compile (checked before any privilege is needed), missing root or
    CAP_NET_RAW, or a platform other than Linux.
    """

    def __init__(
        self,
        iface: str,
        bpf: str | None = None,
        promisc: bool = True,
        snaplen: int = 262_144,
        kernel_buffer: int = 32 << 20,
    ) -> None:
        if not sys.platform.startswith("linux"):
            raise SniffError(iface, "live capture needs Linux (AF_PACKET sockets)")
        try:
            socket.if_nametoindex(iface)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                req = struct.pack("16s16x", iface.encode())
                hatype = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFHWADDR, req), 16)[0]
        except (OSError, ValueError, struct.error):
            raise SniffError(iface, "no such network interface (see `ip link`)") from None
        if hatype not in LINKTYPE_OF_ARPHRD:
            raise SniffError(iface, f"unsupported link type (ARPHRD {hatype})")
        self.iface, self.snaplen, self.linktype = iface, snaplen, LINKTYPE_OF_ARPHRD[hatype]
        self.loopback = hatype == ARPHRD_LOOPBACK
        from scapy.arch.linux import L2ListenSocket
        from scapy.error import Scapy_Exception

        if bpf:
            self._check_filter(bpf)
        scapy_log = logging.getLogger("scapy.runtime")
        level = scapy_log.level
        scapy_log.setLevel(logging.ERROR)  # scapy warns it cannot guess a layer: none is needed
        try:
            self._l2 = L2ListenSocket(iface=iface, promisc=promisc, filter=bpf or None)
        except PermissionError:
            raise SniffError(
                iface, "capturing needs root or the CAP_NET_RAW capability (try sudo)"
            ) from None
        except (OSError, Scapy_Exception) as exc:
            raise SniffError(iface, f"cannot capture: {_problem(exc)}") from None
        finally:
            scapy_log.setLevel(level)
        self.sock: socket.socket = self._l2.ins
        try:
            self._configure(kernel_buffer)
        except OSError as exc:
            self.close()
            raise SniffError(iface, f"cannot capture: {exc.strerror or exc}") from None

    def _configure(self, kernel_buffer: int) -> None:
        s = self.sock
        try:  # as root, beyond net.core.rmem_max
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, kernel_buffer)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, kernel_buffer)
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # a blocking recvmsg returns EAGAIN after 0.1 s: the reader checks for a stop that often
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100_000))

    def _check_filter(self, bpf: str) -> None:
        from scapy.arch.common import compile_filter, free_filter
        from scapy.error import Scapy_Exception

        try:
            free_filter(compile_filter(bpf, linktype=self.linktype))
        except ImportError:
            raise SniffError(
                self.iface, "capture filters need libpcap: apt-get install libpcap0.8"
            ) from None
        except Scapy_Exception as exc:
            raise SniffError(self.iface, f"invalid filter {bpf!r}: {_problem(exc)}") from None

    def describe(self) -> str:
        """How frames are read, for the command's output."""
        return "recvmsg, one frame per call"

    def reader(self, limits: Limits, stop: threading.Event) -> Reader:
        """The sniffer thread's reader of this socket."""
        return Reader(self, limits, stop)

    def plug(self) -> None:
        """Attach a drop-all filter: nothing more is queued; what is queued can be drained."""
        insn = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # ret #0
        prog = struct.pack("HP", 1, ctypes.addressof(insn))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)

    def stats(self) -> tuple[int, int] | None:
        """(packets, drops) since the last call (the kernel resets them), or None."""
        try:
            p, d = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return None
        return p, d  # packets includes drops

    def close(self) -> None:
        self._l2.close()

    def __enter__(self) -> LiveSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reader:
    """The sniffer thread: reads frames into chunks, hands them over, stops cleanly."""

    def __init__(self, live: LiveSocket, limits: Limits, stop: threading.Event) -> None:
        self.live, self.stop, self.c = live, stop, Counters()
        self.limit = limits.count or sys.maxsize
        self.out: queue.Queue[list[RawRecord] | None] = queue.Queue(
            max(1, limits.queue_packets // CHUNK)
        )
        self.abandoned = False  # the main thread gave up: never block on the queue

    def _kernel(self) -> None:
        st = self.live.stats()
        if st is not None:
            self.c.kernel_packets = (self.c.kernel_packets or 0) + st[0]
            self.c.kernel_drops = (self.c.kernel_drops or 0) + st[1]

    def _hand(self, chunk: list[RawRecord] | None, block: bool) -> None:
        if not block:
            try:
                self.out.put_nowait(chunk)
            except queue.Full:
                self.c.producer_drops += len(chunk or ())
            return
        while not self.abandoned:
            with contextlib.suppress(queue.Full):
                return self.out.put(chunk, timeout=0.2)

    def run(self) -> None:
        live, c, limit = self.live, self.c, self.limit
        recvmsg, lt, snap, loop = live.sock.recvmsg, live.linktype, live.snaplen, live.loopback
        aux, tsp, vlan, ns = _AUX.unpack, _TS.unpack, _VLAN.pack, 1_000_000_000
        chunk: list[RawRecord] = []
        flags, last, next_stats = 0, time.monotonic(), time.monotonic() + 1.0
        cpu0 = time.thread_time()
        try:
            while True:
                try:
                    data, anc, _, addr = recvmsg(snap, 128, flags)
                except BlockingIOError:
                    if flags:
                        break  # drained after the stop
                    data = b""
                if data:
                    if loop and addr[2] == socket.PACKET_OUTGOING:
                        c.duplicates += 1
                        continue
                    ts, wire = 0, len(data)
                    for level, kind, blob in anc:
                        if (
                            kind == SO_TIMESTAMPNS
                            and level == socket.SOL_SOCKET
                            and len(blob) == 16
                        ):
                            sec, nsec = tsp(blob)
                            ts = sec * ns + nsec
                        elif kind == PACKET_AUXDATA and level == SOL_PACKET:
                            status, wire, _, _, _, tci, tpid = aux(blob)
                            if lt == 1 and (tci or status & TP_STATUS_VLAN_VALID):
                                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                                data = data[:12] + vlan(tpid, tci) + data[12:]
                                wire += 4
                    if c.captured >= limit:
                        c.beyond_count += 1
                        continue
                    chunk.append(RawRecord(ts or time.time_ns(), wire, lt, data))
                    c.captured += 1
                    if c.captured == limit:
                        self.stop.set()
                now = time.monotonic()
                if chunk and (not data or len(chunk) >= CHUNK or now - last >= 0.05):
                    self._hand(chunk, block=bool(flags))
                    chunk, last = [], now
                if now >= next_stats:
                    self._kernel()
                    next_stats = now + 1.0
                if not flags and self.stop.is_set():
                    live.plug()
                    flags = socket.MSG_DONTWAIT
        except OSError as exc:  # e.g. the interface went away
            c.error = exc.strerror or str(exc)
        finally:
            if chunk:
                self._hand(chunk, block=True)
            self._kernel()
            c.cpu_s = time.thread_time() - cpu0
            self._hand(None, block=True)
