"""Build TPACKET_V3 blocks byte-exactly as the kernel lays them out (for tests and benches).

The layout follows net/packet/af_packet.c (tpacket_rcv, prb_open_block, prb_fill_curr_block,
prb_close_block) for a SOCK_RAW socket with tp_reserve 0 and no vnet header:

* block: ``struct tpacket_block_desc`` {version=2, offset_to_priv=48, tpacket_hdr_v1
  {block_status, num_pkts, offset_to_first_pkt = 48 + ALIGN8(sizeof_priv), blk_len (bytes
  used, header included), seq_num, ts_first_pkt (the kernel stores the time the block was
  opened; here: the first frame's), ts_last_pkt}}.
* frame at ``off``: ``struct tpacket3_hdr`` (48 bytes), ``struct sockaddr_ll`` at
  ``off + 48``, frame bytes at ``off + tp_mac`` where
  ``tp_net = TPACKET_ALIGN(68 + max(maclen, 16))`` and ``tp_mac = tp_net - maclen`` (82/96
  for Ethernet); ``tp_next_offset = ALIGN8(tp_mac + tp_snaplen)``, 0 on the last frame.
* a frame is placed only if ``off + ALIGN8(tp_mac + tp_snaplen) < block_size``.

Bytes not written by the "kernel" are filled with garbage, as a reused block would hold.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from flowherd.producer.live.tpacket import (
    BLK_HDR_LEN,
    ETH_P_8021Q,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    TPACKET3_HDR_LEN,
    TPACKET_ALIGNMENT,
    V3_ALIGNMENT,
)

TPACKET3_HDRLEN = 68  # po->tp_hdrlen: TPACKET_ALIGN(sizeof(tpacket3_hdr)) + sockaddr_ll
TP_STATUS_BLK_TMO = 0x20
AF_PACKET = 17


def _align(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def mac_offset(maclen: int = 14) -> int:
    """tp_mac the kernel uses for a SOCK_RAW V3 socket and a link header of ``maclen``."""
    netoff = _align(TPACKET3_HDRLEN + max(maclen, 16), TPACKET_ALIGNMENT)
    return netoff - maclen


@dataclass(frozen=True)
class KFrame:
    """One frame as the kernel stores it: ``data`` is already untagged and cut to snaplen."""

    data: bytes
    tp_len: int
    ts_ns: int
    status: int = TP_STATUS_USER
    vlan_tci: int = 0
    vlan_tpid: int = 0
    pkttype: int = 0  # PACKET_HOST
    hatype: int = 1
    rxhash: int = 0
    ifindex: int = 7


@dataclass(frozen=True)
class Expected:
    """What parse_block must return for one frame (libpcap semantics)."""

    wire: int
    data: bytes


def kernel_frame(
    frame: bytes,
    ts_ns: int,
    *,
    ksnap: int | None = None,
    strip_vlan: bool = False,
    tpid_valid: bool = True,
    status_flag: bool = True,
    pkttype: int = 0,
    usnap: int | None = None,
) -> tuple[KFrame, Expected]:
    """Simulate what the kernel stores for ``frame`` as it came off the wire.

    ``strip_vlan``: the driver moved the 802.1Q/802.1ad tag at bytes 12..16 into metadata
    (tp_status VLAN_VALID unless ``status_flag`` is False, TPID_VALID with the tag's TPID
    when ``tpid_valid``, else tpid 0). ``ksnap``: the kernel cut the stored bytes (filter
    return). ``usnap``: the user snaplen given to parse_block. Returns the ring frame and the
    expected parse result: re-inserted tag when at least 12 bytes were stored, then ``usnap``.
    """
    status = TP_STATUS_USER
    tci = tpid = 0
    body = frame
    if strip_vlan:
        tpid_w, tci = struct.unpack_from(">HH", frame, 12)
        body = frame[:12] + frame[16:]
        if status_flag:
            status |= TP_STATUS_VLAN_VALID
        if tpid_valid:
            status |= TP_STATUS_VLAN_TPID_VALID
            tpid = tpid_w
    stored = body if ksnap is None else body[:ksnap]
    kf = KFrame(stored, len(body), ts_ns, status, tci, tpid, pkttype)
    vlan = strip_vlan and (status_flag or tci != 0) and len(stored) >= 12
    if vlan:
        t = tpid if tpid or tpid_valid else ETH_P_8021Q
        out = stored[:12] + struct.pack(">HH", t, tci) + stored[12:]
        wire = len(body) + 4
    else:
        out, wire = stored, len(body)
    if usnap is not None:
        out = out[:usnap]
    return kf, Expected(wire, out)


def build_block(
    frames: list[KFrame],
    *,
    block_size: int = 1 << 20,
    maclen: int = 14,
    sizeof_priv: int = 0,
    seq: int = 1,
    garbage: int | None = 0,
) -> bytearray:
    """Lay ``frames`` out in one block exactly as the kernel would; raise if they don't fit.

    ``garbage`` seeds the filler of unwritten bytes (None: zeros).
    """
    if garbage is None:
        blk = bytearray(block_size)
    else:
        blk = bytearray(random.Random(garbage).randbytes(block_size))
    first = BLK_HDR_LEN + _align(sizeof_priv, 8)
    off = first
    tp_mac = mac_offset(maclen)
    tp_net = tp_mac + maclen
    prev = -1
    for f in frames:
        total = _align(tp_mac + len(f.data), V3_ALIGNMENT)
        if off + total >= block_size:
            raise ValueError(f"frame of {len(f.data)} bytes does not fit at offset {off}")
        sec, nsec = divmod(f.ts_ns, 1_000_000_000)
        struct.pack_into(
            "<IIIIIIHHIIHH8x",
            blk,
            off,
            total,
            sec,
            nsec,
            len(f.data),
            f.tp_len,
            f.status,
            tp_mac,
            tp_net,
            f.rxhash,
            f.vlan_tci,
            f.vlan_tpid,
            0,
        )
        proto = f.data[12:14] if maclen == 14 and len(f.data) >= 14 else b"\0\0"
        addr = f.data[6:12].ljust(8, b"\0") if maclen == 14 else b"\0" * 8
        struct.pack_into(
            "<H2siHBB8s",
            blk,
            off + TPACKET3_HDR_LEN,
            AF_PACKET,
            proto,
            f.ifindex,
            f.hatype,
            f.pkttype,
            6,
            addr,
        )
        blk[off + tp_mac : off + tp_mac + len(f.data)] = f.data
        prev = off
        off += total
    if prev >= 0:
        struct.pack_into("<I", blk, prev, 0)  # prb_close_block: last tp_next_offset = 0
    ts_first = frames[0].ts_ns if frames else 0
    ts_last = frames[-1].ts_ns if frames else 0
    struct.pack_into(
        "<IIIIIIQIIII",
        blk,
        0,
        2,
        BLK_HDR_LEN,
        TP_STATUS_USER | TP_STATUS_BLK_TMO,
        len(frames),
        first,
        off,
        seq,
        *divmod(ts_first, 1_000_000_000),
        *divmod(ts_last, 1_000_000_000),
    )
    return blk


def concat(expected: list[Expected]) -> tuple[list[int], list[int], bytes]:
    """Expected (wire, cap, data) columns of a list of expected frames."""
    return (
        [e.wire for e in expected],
        [len(e.data) for e in expected],
        b"".join(e.data for e in expected),
    )


def frame_sizes(rng: random.Random) -> Iterator[int]:
    """Frame sizes like real traffic: 40% 60 B, 30% 1514 B, rest uniform 60..1514."""
    while True:
        u = rng.random()
        yield 60 if u < 0.4 else 1514 if u < 0.7 else rng.randint(60, 1514)
