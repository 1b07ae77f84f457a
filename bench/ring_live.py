"""The TPACKET_V3 ring live on a veth pair (needs root): a second process blasts frames through
a PACKET_TX_RING (many frames per syscall) while a :class:`Ring` reads the other end; prints
frames/s, drops and the reader's CPU per frame. With ``--baseline`` also one ``recv`` per frame,
in the same run. The parse cost alone, per alternative: ``bench/ring.py``.

    sudo .venv/bin/python bench/ring_live.py [--baseline] [--seconds S]
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import multiprocessing as mp
import os
import random
import resource
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable

import numpy as np

from flowherd.lab.ringsynth import frame_sizes
from flowherd.producer.live import ring
from flowherd.producer.live.ring import Ring

PACKET_TX_RING = 13
PACKET_QDISC_BYPASS = 20
TPACKET_V2 = 1


def blast(
    iface: str, seconds: float, cpu: int | None, small: bool, result: mp.Queue[tuple[int, float]]
) -> None:
    """Send the traffic mix (or 60-byte frames) as fast as possible through a TX ring."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(ring.SOL_PACKET, ring.PACKET_VERSION, TPACKET_V2)
    with contextlib.suppress(OSError):
        s.setsockopt(ring.SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    fsize, nframes = 2048, 1024
    s.setsockopt(
        ring.SOL_PACKET,
        PACKET_TX_RING,
        struct.pack("4I", fsize * 256, nframes // 256, fsize, nframes),
    )
    mm = mmap.mmap(s.fileno(), fsize * nframes)
    s.bind((iface, 0))
    rng = random.Random(1)
    sizes = frame_sizes(rng)
    for i in range(nframes):
        n = 60 if small else next(sizes)
        frame = bytes.fromhex("02aabbccddee021122334455") + b"\x88\xb5" + rng.randbytes(n - 14)
        # struct tpacket2_hdr: status, len, snaplen, mac, net ...; data at TPACKET2_HDRLEN-20
        struct.pack_into("<III", mm, i * fsize, 0, n, n)
        mm[i * fsize + 32 : i * fsize + 32 + n] = frame
    status = np.frombuffer(mm, np.uint32).reshape(nframes, fsize // 4)[:, 0]
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        status[:] = 1  # TP_STATUS_SEND_REQUEST
        s.send(b"")  # blocking: returns when all frames went out
        sent += nframes
    dt = time.monotonic() - t0
    del status
    mm.close()
    s.close()
    result.put((sent, dt))


def live(seconds: float, baseline: bool) -> None:
    tag = uuid.uuid4().hex[:6]
    a, b = f"rbt{tag}", f"rbr{tag}"
    subprocess.run(f"ip link add {a} type veth peer name {b}", shell=True, check=True)
    try:
        for i in (a, b):
            subprocess.run(
                f"sysctl -qw net.ipv6.conf.{i}.disable_ipv6=1; ip link set {i} up",
                shell=True,
                check=True,
            )
        time.sleep(0.1)
        ncpu = os.cpu_count() or 1
        rx_cpu, tx_cpu = (0, 1) if ncpu > 1 else (None, None)
        print(
            f"live over veth, {seconds:.0f} s per run, sender (TX ring) pinned to CPU {tx_cpu},"
            f" reader to CPU {rx_cpu}; reader CPU = user+sys of the reading process:"
        )
        for small in (False, True):
            traffic = "60 B " if small else "mix  "
            run_live(
                a,
                seconds,
                rx_cpu,
                tx_cpu,
                small,
                "ring " + traffic,
                lambda start: ring_reader(b, start),
            )
            if baseline:
                run_live(
                    a,
                    seconds,
                    rx_cpu,
                    tx_cpu,
                    small,
                    "recv " + traffic,
                    lambda start: recv_reader(b, start),
                )
    finally:
        subprocess.run(f"ip link del {a}", shell=True)


Reader = Callable[[Callable[[], None]], tuple[int, int, int, float, float]]


def run_live(
    a: str,
    seconds: float,
    rx_cpu: int | None,
    tx_cpu: int | None,
    small: bool,
    name: str,
    reader: Reader,
) -> None:
    """Run ``reader`` (which opens its socket, then calls the sender start-up it is given)."""
    if rx_cpu is not None:
        os.sched_setaffinity(0, {rx_cpu})
    ctx = mp.get_context("fork")
    q: mp.Queue[tuple[int, float]] = ctx.Queue()
    p = ctx.Process(target=blast, args=(a, seconds, tx_cpu, small, q))
    got, packets, drops, cpu, wall = reader(p.start)
    sent, dt = q.get(timeout=seconds + 10)
    p.join()
    print(
        f"  {name}: sent {sent / dt / 1e3:5.0f} kframes/s, {sent} frames | received {got} frames"
        f" | kernel packets {packets}, drops {drops} ({100 * drops / max(packets, 1):.1f}%)"
        f" | reader CPU {cpu / max(got, 1) * 1e6:.2f} us/frame, {100 * cpu / wall:.0f}% of a core"
    )


def _cpu() -> float:
    """User + system CPU seconds of this process (page faults and syscalls included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def ring_reader(iface: str, start: Callable[[], None]) -> tuple[int, int, int, float, float]:
    """Read with Ring until 1 s without a block; (frames, packets, drops, cpu s, wall s)."""
    with Ring(iface) as r:
        got = 0
        start()
        c0, t0 = _cpu(), time.monotonic()
        for blk in r.blocks(timeout=1.0):
            got += len(blk.ts)
        cpu, wall = _cpu() - c0, time.monotonic() - t0 - 1.0
        packets, drops = r.stats()
    return got, packets, drops, cpu, wall


def recv_reader(iface: str, start: Callable[[], None]) -> tuple[int, int, int, float, float]:
    """Today's way: one recv per frame (no per-frame parsing at all, so a lower bound)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ring.ETH_P_ALL))
    # SO_RCVBUFFORCE (root): past net.core.rmem_max, so bursts are not what drops frames
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
    s.bind((iface, ring.ETH_P_ALL))
    s.settimeout(1.0)
    buf = bytearray(65536)
    got = 0
    start()
    c0, t0 = _cpu(), time.monotonic()
    with contextlib.suppress(TimeoutError):
        while True:
            s.recv_into(buf)
            got += 1
    cpu, wall = _cpu() - c0, time.monotonic() - t0 - 1.0
    packets, drops = struct.unpack("II", s.getsockopt(ring.SOL_PACKET, ring.PACKET_STATISTICS, 8))
    s.close()
    return got, packets, drops, cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", action="store_true", help="also one recv per frame")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds of traffic")
    args = ap.parse_args()
    live(args.seconds, args.baseline)


if __name__ == "__main__":
    main()
