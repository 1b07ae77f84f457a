"""A synthetic but realistic sample trace: heavy-tailed flow sizes, TCP and UDP, IPv4 and IPv6.

``write_sample`` builds Ethernet frames with plain ``struct`` (the producer never dissects) and
writes a classic microsecond pcap, frames cut to ``snaplen`` captured bytes like header-only
backbone traces, wire lengths kept. It returns the exact per-flow ground truth, so tests can
check flowherd's tables against it. Deterministic for a given seed.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_ETH_V4 = b"\x00\x1b\x21\x00\x00\x02\x00\x1b\x21\x00\x00\x01\x08\x00"
_ETH_V6 = b"\x00\x1b\x21\x00\x00\x02\x00\x1b\x21\x00\x00\x01\x86\xdd"
BASE_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z

Truth = dict[
    tuple[bytes, bytes, int, int, int], list[int]
]  # (src,dst,proto,sport,dport) -> [pkts, bytes]


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)


def _frame(
    src: bytes, dst: bytes, proto: int, sport: int, dport: int, flags: int, payload: int
) -> bytes:
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0)
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + payload, 0)
    body = l4 + bytes(payload)
    if len(src) == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, 64, proto, 0, src, dst
        )
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        return _ETH_V4 + ip + body
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), proto, 64, src, dst)
    return _ETH_V6 + ip6 + body


def _flow(rng: random.Random, i: int, start_us: int) -> Iterator[tuple[int, bytes]]:
    """(timestamp µs, frame) of one conversation, client first."""
    v6 = rng.random() < 0.1
    if v6:
        cli = b"\x20\x01\x0d\xb8\x00\x0c" + bytes(8) + struct.pack("!H", i % 65536)
        srv = b"\x20\x01\x0d\xb8\x00\x05" + bytes(9) + bytes([rng.randrange(1, 200)])
    else:
        cli = bytes([10, (i >> 16) & 0x7F, (i >> 8) & 0xFF, i & 0xFF])
        srv = bytes([198, 18, rng.randrange(0, 4), rng.randrange(1, 255)])
    cport = 1024 + (i * 7919) % 60000
    udp = rng.random() < 0.35
    t = start_us
    if udp:  # DNS-like request/response pairs
        for _ in range(1 + int(rng.paretovariate(2.0)) // 2):
            yield t, _frame(cli, srv, 17, cport, 53, 0, rng.randrange(30, 60))
            t += rng.randrange(200, 40_000)
            yield t, _frame(srv, cli, 17, 53, cport, 0, rng.randrange(60, 400))
            t += rng.randrange(1_000, 200_000)
        return
    sport = rng.choice((443, 443, 443, 80, 22, 8080))
    data = min(int(rng.paretovariate(1.1)) * 3, 20_000)  # heavy-tailed segments server->client
    yield t, _frame(cli, srv, 6, cport, sport, 0x02, 0)
    t += 500
    yield t, _frame(srv, cli, 6, sport, cport, 0x12, 0)
    t += 500
    yield t, _frame(cli, srv, 6, cport, sport, 0x10, 0)
    t += 200
    yield t, _frame(cli, srv, 6, cport, sport, 0x18, rng.randrange(100, 600))
    for k in range(data):
        t += rng.randrange(20, 400)
        yield (
            t,
            _frame(
                srv, cli, 6, sport, cport, 0x10, 1448 if k < data - 1 else rng.randrange(1, 1449)
            ),
        )
        if k % 2:
            yield t + 30, _frame(cli, srv, 6, cport, sport, 0x10, 0)
    t += 1000
    yield t, _frame(cli, srv, 6, cport, sport, 0x11, 0)
    yield t + 300, _frame(srv, cli, 6, sport, cport, 0x11, 0)


def write_sample(
    path: str | Path | BinaryIO,
    flows: int = 3000,
    seed: int = 7,
    snaplen: int = 128,
    duration_s: int = 60,
) -> Truth:
    """Write the sample trace to ``path`` (a file name, or a binary file open for writing);
    return its unidirectional ground truth."""
    rng = random.Random(seed)
    starts = sorted(rng.randrange(duration_s * 1_000_000) for _ in range(flows))
    streams = [_flow(random.Random(seed * 1_000_003 + i), i, s) for i, s in enumerate(starts)]
    truth: Truth = {}
    opened = open(path, "wb") if isinstance(path, str | Path) else contextlib.nullcontext(path)  # noqa: SIM115
    with opened as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen or 262144, 1))
        for t, frame in heapq.merge(*streams, key=lambda x: x[0]):
            cap = frame[:snaplen] if snaplen else frame
            sec, usec = divmod(t, 1_000_000)
            fh.write(struct.pack("<IIII", BASE_EPOCH + sec, usec, len(cap), len(frame)))
            fh.write(cap)
            off = 14
            if frame[12:14] == b"\x08\x00":
                src, dst, proto = (
                    frame[off + 12 : off + 16],
                    frame[off + 16 : off + 20],
                    frame[off + 9],
                )
                l4 = off + 20
            else:
                src, dst, proto = (
                    frame[off + 8 : off + 24],
                    frame[off + 24 : off + 40],
                    frame[off + 6],
                )
                l4 = off + 40
            sp, dp = struct.unpack_from("!HH", frame, l4)
            e = truth.setdefault((src, dst, proto, sp, dp), [0, 0])
            e[0] += 1
            e[1] += len(frame)
    return truth
