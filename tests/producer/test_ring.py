"""The TPACKET_V3 ring reader (flowherd.producer.live.ring): parse_block on synthetic kernel-layout blocks, then real sockets (root).

The live tests create a veth pair with unique names (removed by a fixture), send frames
with a raw AF_PACKET socket on one end and read them with Ring on the other.
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from flowherd.lab.ringsynth import Expected, KFrame, build_block, concat, kernel_frame, mac_offset
from flowherd.producer.live import bpf, ring, tpacket
from flowherd.producer.live.ring import Ring
from flowherd.producer.live.tpacket import Block, RingError, parse_block

T0 = 1_700_000_000_123_456_789


def eth(
    size: int, rng: random.Random, *, vlan: tuple[int, int] | None = None, ethertype: int = 0x88B5
) -> bytes:
    """An Ethernet frame of exactly ``size`` bytes (with an inline tag when ``vlan``)."""
    head = bytes.fromhex("02aabbccddee") + bytes.fromhex("02112233445" + f"{rng.randrange(16):x}")
    if vlan is not None:
        head += struct.pack(">HH", *vlan)
    head += struct.pack(">H", ethertype)
    assert size >= len(head)
    return head + rng.randbytes(size - len(head))


def check(
    blk: Block, expected: list[Expected], ts: list[int] | None = None, linktype: int = 1
) -> None:
    wire, cap, data = concat(expected)
    assert blk.wire.dtype == np.uint32 and blk.cap.dtype == np.uint32
    assert blk.ts.dtype == np.uint64 and blk.linktype.dtype == np.uint16
    assert isinstance(blk.data, bytes)
    assert blk.wire.tolist() == wire
    assert blk.cap.tolist() == cap
    assert blk.linktype.tolist() == [linktype] * len(expected)
    assert len(blk.data) == int(blk.cap.sum())
    starts = np.concatenate(([0], np.cumsum(blk.cap, dtype=np.int64)[:-1])).tolist()
    for i, e in enumerate(expected):
        assert blk.data[starts[i] : starts[i] + cap[i]] == e.data, f"frame {i}"
    assert blk.data == data
    if ts is not None:
        assert blk.ts.tolist() == ts


# --- parse_block on synthetic blocks -----------------------------------------------------------


def test_mac_offset_matches_kernel() -> None:
    # values observed on a live V3 ring (tp_mac 82, tp_net 96 for Ethernet)
    assert mac_offset(14) == 82
    assert mac_offset(0) == 96


def test_zero_frames() -> None:
    blk = parse_block(build_block([]))
    check(blk, [])
    assert blk.ts.shape == (0,)


def test_one_frame() -> None:
    rng = random.Random(1)
    kf, ex = kernel_frame(eth(60, rng), T0)
    blk = parse_block(build_block([kf]))
    check(blk, [ex], [T0])


def test_one_frame_exact_fit() -> None:
    # the kernel needs off + ALIGN8(tp_mac + len) < block_size (strictly)
    size = 4096 - 48 - 82 - 8
    kf, ex = kernel_frame(eth(size, random.Random(2)), T0)
    buf = build_block([kf], block_size=4096)
    check(parse_block(buf), [ex])
    with pytest.raises(ValueError):
        build_block([kernel_frame(eth(size + 8, random.Random(2)), T0)[0]], block_size=4096)


@pytest.mark.parametrize("seed", range(6))
def test_random_frames(seed: int) -> None:
    """Random sizes 14..9000, some VLAN-stripped, some cut by the kernel, random user snap."""
    rng = random.Random(seed)
    usnap = rng.choice([None, None, 64, 1500, 13])
    frames, expected, ts = [], [], []
    t = T0
    used = 48
    while True:
        size = rng.randint(14, 9000) if rng.random() < 0.5 else rng.choice([14, 60, 1514])
        vlan = rng.random() < 0.2 and size >= 18
        ksnap = rng.choice([None, None, None, rng.randint(0, size)])
        t += rng.randint(0, 5000)
        frame = (
            eth(size, rng, vlan=(rng.choice([0x8100, 0x88A8]), rng.randrange(1 << 16)))
            if vlan
            else eth(size, rng)
        )
        kf, ex = kernel_frame(
            frame, t, ksnap=ksnap, strip_vlan=vlan, tpid_valid=rng.random() < 0.7, usnap=usnap
        )
        total = (82 + len(kf.data) + 7) & ~7
        if used + total >= 1 << 20:
            break
        used += total
        frames.append(kf)
        expected.append(ex)
        ts.append(t)
    assert len(frames) > 100
    blk = parse_block(build_block(frames, garbage=seed), snaplen=usnap)
    check(blk, expected, ts)


def test_snaplen_truncated_frames() -> None:
    rng = random.Random(3)
    pairs = [
        kernel_frame(eth(n, rng), T0 + n, ksnap=k)
        for n, k in [(1514, 96), (60, 60), (9000, 128), (200, 0), (100, 13)]
    ]
    blk = parse_block(build_block([p[0] for p in pairs]))
    check(blk, [p[1] for p in pairs])
    assert blk.wire.tolist() == [1514, 60, 9000, 200, 100]
    assert blk.cap.tolist() == [96, 60, 128, 0, 13]


def test_user_snaplen() -> None:
    rng = random.Random(4)
    pairs = [kernel_frame(eth(n, rng), T0, usnap=64) for n in (14, 60, 64, 65, 1514)]
    blk = parse_block(build_block([p[0] for p in pairs]), snaplen=64)
    check(blk, [p[1] for p in pairs])
    assert blk.cap.tolist() == [14, 60, 64, 64, 64]
    assert blk.wire.tolist() == [14, 60, 64, 65, 1514]


def test_vlan_reinsert() -> None:
    rng = random.Random(5)
    f1 = eth(100, rng, vlan=(0x8100, 0x2005))
    f2 = eth(100, rng, vlan=(0x88A8, 0x0007))
    f3 = eth(64, rng, vlan=(0x8100, 0x0000))  # priority tag, VLAN 0
    f4 = eth(64, rng, vlan=(0x9100, 0x0123))
    cases = [
        kernel_frame(f1, T0, strip_vlan=True),
        kernel_frame(f2, T0, strip_vlan=True),
        kernel_frame(f3, T0, strip_vlan=True),  # tci 0 but VLAN_VALID: re-inserted
        kernel_frame(f4, T0, strip_vlan=True, tpid_valid=False),  # old kernel: 0x8100
        kernel_frame(f1, T0, strip_vlan=True, status_flag=False),  # tci != 0 suffices
        kernel_frame(eth(60, rng), T0),
    ]
    blk = parse_block(build_block([c[0] for c in cases]))
    check(blk, [c[1] for c in cases])
    got = split(blk)
    assert got[0] == f1 and got[1] == f2 and got[2] == f3 and got[4] == f1
    assert got[3] == f4[:12] + b"\x81\x00\x01\x23" + f4[16:]
    assert blk.wire.tolist()[:5] == [100, 100, 64, 64, 100]


def test_vlan_lost_without_flag_and_tci() -> None:
    # tci 0 and no VLAN_VALID: nothing says a tag was stripped (libpcap agrees)
    f = eth(64, random.Random(6), vlan=(0x8100, 0))
    kf, ex = kernel_frame(f, T0, strip_vlan=True, status_flag=False)
    blk = parse_block(build_block([kf]))
    check(blk, [ex])
    assert blk.cap.tolist() == [60]


def test_vlan_with_snaplen() -> None:
    rng = random.Random(7)
    f = eth(1000, rng, vlan=(0x8100, 42))
    cases = [
        kernel_frame(f, T0, strip_vlan=True, ksnap=64, usnap=64),  # kernel cut, then +4, cut
        kernel_frame(f, T0, strip_vlan=True, ksnap=11, usnap=64),  # < 12 bytes: no insert
        kernel_frame(f, T0, strip_vlan=True, ksnap=12, usnap=64),  # tag only
        kernel_frame(f, T0, strip_vlan=True, usnap=64),
        kernel_frame(eth(100, rng), T0, usnap=64),
    ]
    blk = parse_block(build_block([c[0] for c in cases]), snaplen=64)
    check(blk, [c[1] for c in cases])
    assert blk.cap.tolist() == [64, 11, 16, 64, 64]
    assert blk.wire.tolist() == [1000, 996, 1000, 1000, 100]


def test_vlan_not_on_raw_linktype() -> None:
    ip = bytes.fromhex("4500001c000000004011") + bytes(18)
    kf = KFrame(ip, len(ip), T0, tpacket.TP_STATUS_USER | tpacket.TP_STATUS_VLAN_VALID, 5, 0x8100)
    blk = parse_block(build_block([kf], maclen=0), tpacket.LINKTYPE_RAW)
    check(blk, [Expected(len(ip), ip)], linktype=tpacket.LINKTYPE_RAW)


def test_drop_outgoing() -> None:
    rng = random.Random(8)
    pairs = [
        kernel_frame(eth(60 + i, rng), T0 + i, pkttype=4 if i % 3 == 0 else 0) for i in range(10)
    ]
    buf = build_block([p[0] for p in pairs])
    check(parse_block(buf), [p[1] for p in pairs])
    keep = [p[1] for i, p in enumerate(pairs) if i % 3]
    check(parse_block(buf, drop_outgoing=True), keep)
    only_out = build_block([pairs[0][0], pairs[3][0]])
    check(parse_block(only_out, drop_outgoing=True), [])


def test_private_area_and_views() -> None:
    rng = random.Random(9)
    pairs = [kernel_frame(eth(n, rng), T0) for n in (60, 1514, 300)]
    buf = build_block([p[0] for p in pairs], sizeof_priv=20)
    assert struct.unpack_from("<I", buf, 16)[0] == 48 + 24
    for b in (buf, bytes(buf), memoryview(buf), memoryview(bytearray(b"x" * 4096) + buf)[4096:]):
        check(parse_block(b), [p[1] for p in pairs])


def test_result_does_not_alias_block() -> None:
    rng = random.Random(10)
    pairs = [kernel_frame(eth(n, rng), T0) for n in (60, 70)]
    buf = build_block([p[0] for p in pairs])
    blk = parse_block(memoryview(buf))
    buf[:] = bytes(len(buf))  # the kernel reuses the block
    check(blk, [p[1] for p in pairs])


def test_malformed_blocks() -> None:
    rng = random.Random(11)
    buf = build_block([kernel_frame(eth(60, rng), T0)[0] for _ in range(3)], block_size=4096)
    with pytest.raises(ValueError):
        parse_block(buf[:40])
    bad = bytearray(buf)
    struct.pack_into("<I", bad, 12, 50)  # num_pkts beyond the chain: runs off the block
    with pytest.raises(ValueError):
        parse_block(bad)
    bad = bytearray(buf)
    struct.pack_into("<I", bad, 48, 0)  # zero hop in the middle
    with pytest.raises(ValueError):
        parse_block(bad)
    bad = bytearray(buf)
    struct.pack_into("<I", bad, 48 + 12, 5000)  # tp_snaplen past the end
    with pytest.raises(ValueError):
        parse_block(bad)


def chain(buf: bytes | bytearray) -> tuple[memoryview, int, int]:
    n, first = struct.unpack_from("<II", buf, 12)
    return memoryview(buf), first, n


def test_walk_scan_exact_without_lookalikes() -> None:
    rng = random.Random(30)
    frames = [kernel_frame(eth(rng.choice([60, 61, 1514]), rng), T0)[0] for _ in range(400)]
    mv, first, n = chain(build_block(frames))
    offs = tpacket.walk_scan(mv, first, n)
    assert offs is not None and offs.tolist() == tpacket.walk_loop(mv, first, n)


def test_walk_scan_ignores_lookalikes_in_payload() -> None:
    """Payloads full of the tp_mac|tp_net word (an attacker can send that) cost time only."""
    rng = random.Random(31)
    key = struct.pack("<HH", 82, 96)
    frames = []
    for i in range(300):
        body = eth(14, rng) + (key + struct.pack("<I", rng.choice([0, 8, 152, 1 << 20]))) * (i % 50)
        frames.append(kernel_frame(body, T0)[0])
    mv, first, n = chain(build_block(frames))
    offs = tpacket.walk_scan(mv, first, n)
    assert offs is not None and offs.tolist() == tpacket.walk_loop(mv, first, n)
    assert tpacket.frame_offsets(mv, first, n).tolist() == tpacket.walk_loop(mv, first, n)


def test_walk_scan_falls_back_when_headers_differ() -> None:
    rng = random.Random(32)
    frames = [kernel_frame(eth(60, rng), T0)[0] for _ in range(20)]
    buf = build_block(frames)
    mv, first, n = chain(buf)
    loop = tpacket.walk_loop(mv, first, n)
    struct.pack_into("<H", buf, loop[7] + 24, 90)  # one frame with another tp_mac
    assert tpacket.walk_scan(mv, first, n) is None
    assert tpacket.frame_offsets(mv, first, n).tolist() == loop
    struct.pack_into("<I", buf, 12, n - 5)  # fewer frames than the chain: first n only
    assert tpacket.frame_offsets(mv, first, n - 5).tolist() == loop[: n - 5]
    fresh = build_block(frames)
    part = tpacket.walk_scan(memoryview(fresh), first, n - 5)  # a prefix, via pointer doubling
    assert part is not None and part.tolist() == loop[: n - 5]
    struct.pack_into("<I", fresh, 12, n + 1)  # num_pkts beyond the chain: unproven
    assert tpacket.walk_scan(*chain(fresh)) is None


@pytest.mark.parametrize("sizes", [[60] * 500, [14, 60, 64, 0, 100] * 100, [1514, 60] * 50])
def test_gathers_agree(sizes: list[int]) -> None:
    rng = random.Random(33)
    pairs = [kernel_frame(eth(max(n, 14), rng), T0, ksnap=n) for n in sizes]
    buf = build_block([p[0] for p in pairs], block_size=4 << 20)
    check(parse_block(buf), [p[1] for p in pairs])
    mv, first, n = chain(buf)
    offs = tpacket.frame_offsets(mv, first, n)
    starts = offs + 82
    ends = starts + np.array([len(p[0].data) for p in pairs])
    ref = b"".join(p[1].data for p in pairs)
    assert tpacket.gather_join(mv, starts, ends) == ref
    assert tpacket.gather_numpy(mv, starts, ends) == ref
    assert tpacket.gather(mv, starts, ends) == ref


def test_set_bpf_snaplen() -> None:
    prog = (
        bpf._SOCK_FILTER.pack(0x28, 0, 0, 12)
        + bpf._SOCK_FILTER.pack(6, 0, 0, 65535)
        + bpf._SOCK_FILTER.pack(6, 0, 0, 0)
    )
    out = bpf._set_bpf_snaplen(prog, 262144)
    assert [bpf._SOCK_FILTER.unpack_from(out, o)[3] for o in (0, 8, 16)] == [12, 262144, 0]
    out = bpf.cap_snaplen(out, 100)
    assert [bpf._SOCK_FILTER.unpack_from(out, o)[3] for o in (0, 8, 16)] == [12, 100, 0]


def test_compile_bpf() -> None:
    try:
        prog = bpf.compile_bpf("udp port 9999")
    except RingError as e:  # pragma: no cover
        pytest.skip(f"no libpcap: {e}")
    assert len(prog) % 8 == 0 and len(prog) > 8
    with pytest.raises(ValueError):
        bpf.compile_bpf("udp prot 9999")


# --- real sockets ------------------------------------------------------------------------------

_root_only = pytest.mark.skipif(
    not hasattr(socket, "AF_PACKET") or os.geteuid() != 0, reason="needs Linux and root"
)


def needs_root(f: Any) -> Any:
    """A live test: the ``root`` marker, skipped without root."""
    return pytest.mark.root(_root_only(f))


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, capture_output=True)


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """A quiet veth pair (IPv6 off: no RS/MLD chatter); yields (tx end, rx end)."""
    tag = uuid.uuid4().hex[:8]
    a, b = f"rgt{tag}", f"rgr{tag}"
    try:
        sh(f"ip link add {a} type veth peer name {b}")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot create veth: {e}")
    try:
        for i in (a, b):
            sh(f"sysctl -qw net.ipv6.conf.{i}.disable_ipv6=1")
            sh(f"ip link set {i} mtu 9000 up")
        time.sleep(0.05)
        yield a, b
    finally:
        subprocess.run(f"ip link del {a}", shell=True, capture_output=True)


@pytest.fixture
def tx(veth: tuple[str, str]) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((veth[0], 0))
    yield s
    s.close()


def collect(r: Ring, n: int, timeout: float = 3.0) -> Block:
    """Read blocks until ``n`` frames arrived (or ``timeout``), merged into one Block."""
    parts: list[Block] = []
    got = 0
    deadline = time.monotonic() + timeout
    while got < n and time.monotonic() < deadline:
        blk = r.next_block(0.2)
        if blk is not None:
            parts.append(blk)
            got += len(blk.ts)
    # a little longer: nothing more may arrive
    while (blk := r.next_block(0.15)) is not None:
        parts.append(blk)
    if not parts:
        return tpacket.empty_block()
    return Block(
        np.concatenate([p.ts for p in parts]),
        np.concatenate([p.wire for p in parts]),
        np.concatenate([p.linktype for p in parts]),
        np.concatenate([p.cap for p in parts]),
        b"".join(p.data for p in parts),
    )


def split(blk: Block) -> list[bytes]:
    ends = np.cumsum(blk.cap, dtype=np.int64).tolist()
    return [blk.data[s:e] for s, e in zip([0, *ends[:-1]], ends, strict=True)]


def open_ring(iface: str, **kw: Any) -> Ring:
    """A small, quick-retiring ring for tests."""
    return Ring(iface, **{"block_size": 1 << 16, "block_nr": 8, "retire_blk_tov": 10, **kw})


@needs_root
def test_live_frames(veth: tuple[str, str], tx: socket.socket) -> None:
    rng = random.Random(20)
    sizes = [14, 60, 61, 64, 128, 1000, 1514, 3000, 9014] + [
        rng.randint(14, 1514) for _ in range(300)
    ]
    frames = [eth(n, rng) for n in sizes]
    with open_ring(veth[1]) as r:
        assert r.linktype == 1
        t0 = time.time_ns()
        for f in frames:
            tx.send(f)
        blk = collect(r, len(frames))
        t1 = time.time_ns()
        packets, drops = r.stats()
    assert split(blk) == frames
    assert blk.wire.tolist() == sizes and blk.cap.tolist() == sizes
    assert (blk.linktype == 1).all()
    assert (np.diff(blk.ts.astype(np.int64)) >= 0).all()
    assert t0 <= int(blk.ts[0]) and int(blk.ts[-1]) <= t1
    assert (packets, drops) == (len(frames), 0)


@needs_root
def test_live_vlan_reinserted(veth: tuple[str, str], tx: socket.socket) -> None:
    """veth RX untags (skb_vlan_untag in __netif_receive_skb_core); Ring puts the tag back."""
    rng = random.Random(21)
    frames = [
        eth(100, rng, vlan=(0x8100, 0x2005)),
        eth(60, rng),
        eth(64, rng, vlan=(0x88A8, 7)),
        eth(1518, rng, vlan=(0x8100, 4095)),
        eth(68, rng, vlan=(0x88A8, 5))[:12] + struct.pack(">HH", 0x8100, 9) + rng.randbytes(52),
    ]
    with open_ring(veth[1]) as r:
        for f in frames:
            tx.send(f)
        blk = collect(r, len(frames))
    assert split(blk) == frames
    assert blk.wire.tolist() == [len(f) for f in frames]


@needs_root
def test_live_block_layout_matches_builder(veth: tuple[str, str], tx: socket.socket) -> None:
    """A real kernel block is byte-identical to ringsynth.build_block on the written bytes."""
    rng = random.Random(24)
    frames = [eth(n, rng) for n in (14, 60, 1514, 333)]
    frames += [eth(100, rng, vlan=(0x8100, 0x2005)), eth(80, rng, vlan=(0x88A8, 9))]
    with open_ring(veth[1]) as r:
        for f in frames:
            tx.send(f)
        deadline = time.monotonic() + 3
        while not r._ready() and time.monotonic() < deadline:
            r._poll.poll(50)
        assert r._mv is not None
        raw = bytes(r._mv[: r.block_size])
        assert r.next_block(0) is not None
    n, first = struct.unpack_from("<II", raw, 12)
    assert n == len(frames)
    kfs, offs, o = [], [], first
    for _ in range(n):
        nxt, sec, nsec, snap, tp_len, status, mac = struct.unpack_from("<6IH", raw, o)
        rxhash, tci, tpid = struct.unpack_from("<IIH", raw, o + 28)
        ifindex, hatype, pkttype = struct.unpack_from("<iHB", raw, o + 52)
        kfs.append(
            KFrame(
                raw[o + mac : o + mac + snap],
                tp_len,
                sec * 10**9 + nsec,
                status,
                tci,
                tpid,
                pkttype,
                hatype,
                rxhash,
                ifindex,
            )
        )
        offs.append(o)
        o += nxt
    synth = build_block(kfs, block_size=r.block_size, garbage=None)
    assert raw[:24] == synth[:24]  # version .. blk_len, block_status USER|BLK_TMO
    for o in offs:
        assert raw[o : o + 48] == synth[o : o + 48]  # tpacket3_hdr
        assert raw[o + 48 : o + 66] == synth[o + 48 : o + 66]  # sockaddr_ll up to 6-byte addr
    for o, kf in zip(offs, kfs, strict=True):
        assert raw[o + 82 : o + 82 + len(kf.data)] == synth[o + 82 : o + 82 + len(kf.data)]
    # USER | VLAN_VALID | TPID_VALID (plus TP_STATUS_TS_SOFTWARE, bit 29, while some socket
    # on the host has enabled skb timestamps)
    assert [k.status & 0xFFFF for k in kfs][-2:] == [0x51, 0x51]
    assert split(parse_block(raw)) == frames


@needs_root
def test_live_snaplen(veth: tuple[str, str], tx: socket.socket) -> None:
    rng = random.Random(22)
    frames = [eth(n, rng) for n in (60, 64, 65, 1514)] + [eth(200, rng, vlan=(0x8100, 3))]
    with open_ring(veth[1], snaplen=64) as r:
        for f in frames:
            tx.send(f)
        blk = collect(r, len(frames))
    assert split(blk) == [f[:64] for f in frames]
    assert blk.wire.tolist() == [len(f) for f in frames]
    assert blk.cap.tolist() == [60, 64, 64, 64, 64]


def ip4(payload: bytes, *, ident: int = 1, offset: int = 0, more: bool = False) -> bytes:
    """Ethernet + IPv4 (10.99.0.1 -> 10.99.0.2, UDP) around ``payload``, valid checksum."""
    frag = (0x2000 if more else 0) | offset // 8
    hdr = bytearray(
        struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            ident,
            frag,
            64,
            17,
            0,
            bytes([10, 99, 0, 1]),
            bytes([10, 99, 0, 2]),
        )
    )
    csum = sum(struct.unpack(">10H", hdr))
    csum = (csum & 0xFFFF) + (csum >> 16)
    struct.pack_into(">H", hdr, 10, ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF)
    return bytes.fromhex("02aabbccddee0211223344550800") + bytes(hdr) + payload


def udp(dport: int, payload: bytes, sport: int = 40000) -> bytes:
    return ip4(struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload)


@needs_root
def test_live_bpf(veth: tuple[str, str], tx: socket.socket) -> None:
    try:
        prog = bpf.compile_bpf("udp port 9999")
    except RingError as e:  # pragma: no cover
        pytest.skip(f"no libpcap: {e}")
    frames = [udp(9999 if i % 3 == 0 else 53, b"p%03d" % i) for i in range(60)]
    frames += [eth(100, random.Random(1))]
    with open_ring(veth[1], bpf=prog) as r:
        for f in frames:
            tx.send(f)
        blk = collect(r, 20)
        packets, drops = r.stats()
    assert split(blk) == [f for i, f in enumerate(frames[:60]) if i % 3 == 0]
    assert (packets, drops) == (20, 0)


@needs_root
def test_live_bpf_with_snaplen(veth: tuple[str, str], tx: socket.socket) -> None:
    prog = bpf.compile_bpf("udp")
    frames = [udp(1, bytes(100)), eth(100, random.Random(2))]
    with open_ring(veth[1], bpf=prog, snaplen=50) as r:
        for f in frames:
            tx.send(f)
        blk = collect(r, 1)
    assert split(blk) == [frames[0][:50]]
    assert blk.wire.tolist() == [len(frames[0])]


@needs_root
def test_live_fanout_lb(veth: tuple[str, str], tx: socket.socket) -> None:
    rng = random.Random(23)
    frames = [eth(60 + i % 200, rng) for i in range(400)]
    group = os.getpid() & 0xFFFF
    with (
        open_ring(veth[1], fanout=(group, "lb")) as r1,
        open_ring(veth[1], fanout=(group, "lb")) as r2,
    ):
        for f in frames:
            tx.send(f)
        b1 = collect(r1, 200)
        b2 = collect(r2, 200)
    s1, s2 = split(b1), split(b2)
    assert s1 and s2
    assert not set(s1) & set(s2)
    assert sorted(s1 + s2) == sorted(frames)
    assert len(s1) == len(s2) == 200  # lb is round-robin


@needs_root
def test_live_fanout_hash_defrag(veth: tuple[str, str], tx: socket.socket) -> None:
    """hash mode keeps each flow on one member; DEFRAG sends a fragmented datagram of a flow
    (reassembled) to the member that gets the flow's unfragmented packets."""
    group = (os.getpid() + 1) & 0xFFFF
    flows = {
        sport: [udp(7777, b"%d-%d" % (sport, i), sport) for i in range(10)]
        for sport in range(41000, 41016)
    }
    dgram = struct.pack(">HHHH", 41000, 7777, 8 + 1200, 0) + random.Random(3).randbytes(1200)
    frags = [ip4(dgram[:600], ident=77, more=True), ip4(dgram[600:], ident=77, offset=600)]
    with (
        open_ring(veth[1], fanout=(group, "hash")) as r1,
        open_ring(veth[1], fanout=(group, "hash")) as r2,
    ):
        for i in range(10):
            for sport, pkts in flows.items():
                tx.send(pkts[i])
                if sport == 41000 and i == 5:
                    for f in frags:
                        tx.send(f)
        s1, s2 = split(collect(r1, 161, timeout=1.0)), split(collect(r2, 161, timeout=1.0))
    assert len(s1) + len(s2) == 161
    assert ip4(dgram, ident=77) in s1 + s2  # exactly the unfragmented datagram
    for pkts in flows.values():
        assert set(pkts) <= set(s1) or set(pkts) <= set(s2)
    home = s1 if flows[41000][0] in s1 else s2
    whole = [f for f in home if len(f) == 14 + 20 + len(dgram)]
    assert len(whole) == 1 and whole[0][34:] == dgram  # reassembled, on the flow's member


@needs_root
def test_live_fanout_errors(veth: tuple[str, str]) -> None:
    group = (os.getpid() + 2) & 0xFFFF
    with open_ring(veth[1], fanout=(group, "hash")):
        # members must agree on mode and flags: the kernel refuses a join without DEFRAG
        with pytest.raises(RingError, match="fanout"):
            open_ring(veth[1], fanout=(group, "hash"), fanout_defrag=False)
        with pytest.raises(RingError, match="fanout"):
            open_ring(veth[1], fanout=(group, "lb"))
    with pytest.raises(RingError, match="unknown fanout mode"):
        open_ring(veth[1], fanout=(group, "nope"))
    with pytest.raises(RingError, match=r"0\.\.65535"):
        open_ring(veth[1], fanout=(70000, "lb"))


@needs_root
def test_live_stats_and_drops(veth: tuple[str, str], tx: socket.socket) -> None:
    frames = [eth(1000, random.Random(i)) for i in range(400)]
    # 2 blocks of 16 KiB hold ~30 such frames: the rest must be counted as drops
    with Ring(veth[1], block_size=1 << 14, block_nr=2, retire_blk_tov=5) as r:
        for f in frames:
            tx.send(f)
        time.sleep(0.05)
        p1, d1 = r.stats()
        got = len(collect(r, 400, timeout=0.5).ts)
        p2, d2 = r.stats()
        assert r.stats() == (p2, d2)  # accumulated, not reset
    assert p1 == 400 and d1 > 0 and got + d1 == 400
    assert (p2, d2) == (p1, d1)


@needs_root
def test_live_loopback_ignore_outgoing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each lo frame is seen twice (outgoing + incoming); Ring keeps one copy."""
    marker = uuid.uuid4().bytes

    def send_udp(port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(marker, ("127.0.0.1", port))

    def count(r: Ring) -> int:
        blk = collect(r, 10, timeout=0.4)
        return sum(marker in f for f in split(blk))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        prog = bpf.compile_bpf(f"udp port {port}")
        with open_ring("lo", bpf=prog) as r:
            send_udp(port)
            assert count(r) == 1
        with open_ring("lo", bpf=prog, ignore_outgoing=False) as r:
            send_udp(port)
            assert count(r) == 2
        # a kernel without PACKET_IGNORE_OUTGOING: the sll_pkttype fallback in parse_block
        monkeypatch.setattr(ring, "PACKET_IGNORE_OUTGOING", 0x7FFF)
        with open_ring("lo", bpf=prog) as r:
            assert r._drop_outgoing
            send_udp(port)
            assert count(r) == 1


@needs_root
def test_live_timeout_and_close(veth: tuple[str, str]) -> None:
    r = open_ring(veth[1])
    t = time.monotonic()
    assert r.next_block(0.1) is None
    assert list(r.blocks(0.05)) == []
    assert 0.1 <= time.monotonic() - t < 1.0
    r.close()
    r.close()
    assert r.stats() == (0, 0)
    with pytest.raises(RingError):
        r.next_block(0)


@needs_root
def test_live_interface_down_raises(veth: tuple[str, str]) -> None:
    with open_ring(veth[1]) as r:
        sh(f"ip link set {veth[1]} down")
        with pytest.raises(RingError) as ei:
            r.next_block(1.0)
        assert ei.value.errno == 100  # ENETDOWN


@needs_root
def test_promisc(veth: tuple[str, str]) -> None:
    def flags() -> int:
        with open(f"/sys/class/net/{veth[1]}/flags") as f:
            return int(f.read(), 16)

    with open_ring(veth[1], promisc=True):
        assert flags() & 0x100  # IFF_PROMISC
    assert not flags() & 0x100


def test_tune_malloc() -> None:
    import platform

    ok = ring.tune_malloc()
    assert ok == ring.tune_malloc()  # idempotent
    if platform.libc_ver()[0] == "glibc":
        assert ok


def test_setup_errors() -> None:
    with pytest.raises(RingError, match="no such interface"):
        Ring("nonexistent0")
    with pytest.raises(RingError):
        Ring("lo", block_size=1000)
    assert issubclass(RingError, OSError)


@needs_root
def test_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(*a: object, **k: object) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(socket, "socket", deny)
    with pytest.raises(RingError, match="CAP_NET_RAW") as ei:
        Ring("lo")
    assert ei.value.errno == 1


@needs_root
def test_poll_fd_usable(veth: tuple[str, str], tx: socket.socket) -> None:
    with open_ring(veth[1]) as r:
        p = select.poll()
        p.register(r.fileno(), select.POLLIN)
        tx.send(eth(60, random.Random(5)))
        assert p.poll(2000)
        assert r.next_block(1.0) is not None
