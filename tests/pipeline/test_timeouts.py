"""Flow timeouts, pure: batch segments merged in any order equal one sorted pass (the rule)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowherd.models.batch import RawRecord
from flowherd.models.flows import FlowKey, FlowStats
from flowherd.models.records import (
    Entry,
    Pkt,
    Timeouts,
    decode_chunk,
    merge_blobs,
    reference_records,
    sorted_pass,
)
from flowherd.workers.decode.dissect import PacketInfo
from flowherd.workers.fold.segments import batch_segments

_A = bytes((10, 0, 0, 1))
_B = bytes((10, 0, 0, 2))
#: conversations of the generated packets: two TCP, one UDP, one ICMP (ports 0)
_CONVS = [(6, 1000, 80), (6, 1001, 80), (17, 53, 5353), (1, 0, 0)]


def _dissect(linktype: int, data: bytes) -> PacketInfo | str:
    """A stand-in dissector: ``data`` = (conversation, direction, flags); conversation 9 is
    not counted."""
    c, d, flags = data
    if c == 9:
        return "non_ip"
    proto, pa, pb = _CONVS[c]
    if d == 0:
        return PacketInfo(_A, _B, proto, pa, pb, flags)
    return PacketInfo(_B, _A, proto, pb, pa, flags)


def _key_pkt(rec: RawRecord) -> tuple[FlowKey, Pkt] | None:
    info = _dissect(rec.linktype, rec.data)
    if isinstance(info, str):
        return None
    key = FlowKey(_A, _B, info.proto, *_CONVS[rec.data[0]][1:])
    return key, Pkt(rec.ts_ns, rec.data[1], rec.wire_len, info.tcp_flags)


def _records(
    recs: list[RawRecord], t: Timeouts, nbatches: int, shards: int, rnd: random.Random
) -> dict[FlowKey, list[FlowStats]]:
    """Cut ``recs`` (in capture order) into batches, reduce each to segments, and merge the
    blobs shard by shard in a random batch order."""
    size = max(1, -(-len(recs) // nbatches))
    batches = [recs[i : i + size] for i in range(0, len(recs), size)]
    per_batch = [batch_segments(b, _dissect, t, shards, chunk_bytes=64) for b in batches]
    out: dict[FlowKey, list[FlowStats]] = {}
    for s in range(shards):
        order = list(range(len(per_batch)))
        rnd.shuffle(order)
        blobs: list[list[Entry]] = [
            [e for c in per_batch[i][s] for e in decode_chunk(c)] for i in order
        ]
        for k, rs in merge_blobs(t, blobs):
            assert FlowKey.unpack(k) not in out  # a conversation lives in one shard
            out[FlowKey.unpack(k)] = rs
    return out


_packet = st.tuples(
    st.integers(0, 40),  # time, in units of 0.1 s (ties are frequent)
    st.integers(0, 4),  # conversation (4: replaced by 9, not counted)
    st.integers(0, 1),  # direction
    st.integers(40, 1500),  # wire length
    st.sampled_from([0x02, 0x10, 0x11, 0x18]),
)


@settings(max_examples=300, deadline=None)
@given(
    packets=st.lists(_packet, min_size=0, max_size=60),
    idle=st.one_of(st.just(0), st.integers(1, 12)),
    active=st.one_of(st.just(0), st.integers(1, 25)),  # 0: runs, else packets
    nbatches=st.integers(1, 7),
    shards=st.integers(1, 3),
    seed=st.integers(0, 2**32),
)
def test_segments_merge_to_the_sorted_pass(
    packets: list[tuple[int, int, int, int, int]],
    idle: int,
    active: int,
    nbatches: int,
    shards: int,
    seed: int,
) -> None:
    t = Timeouts(idle * 100_000_000, active * 100_000_000)
    if not t:
        t = Timeouts(idle_ns=1)
    rnd = random.Random(seed)
    recs = [
        RawRecord(
            1_600_000_000_000_000_000 + ts * 100_000_000, wire, 1, bytes((9 if c == 4 else c, d, f))
        )
        for ts, c, d, wire, f in packets
    ]
    rnd.shuffle(recs)  # batches hold packets out of time order
    got = _records(recs, t, nbatches, shards, rnd)
    want = reference_records(t, [kp for r in recs if (kp := _key_pkt(r)) is not None])
    assert got == want
    # every counted packet is in exactly one record
    counted = sum(1 for r in recs if r.data[0] != 9)
    assert sum(s.packets for rs in got.values() for s in rs) == counted


def test_rule_boundaries() -> None:
    """``>=`` on both timeouts, measured from the record's last and first packet."""
    s = 1_000_000_000

    def cut(t: Timeouts, times: list[int]) -> list[int]:
        return [r.packets for r in sorted_pass(t, [Pkt(x, 0, 100, 0) for x in times])]

    assert cut(Timeouts(idle_ns=s), [0, s - 1, 2 * s - 3]) == [3]
    assert cut(Timeouts(idle_ns=s), [0, s, 2 * s - 1]) == [1, 2]
    assert cut(Timeouts(active_ns=2 * s), [0, s, 2 * s - 1, 2 * s]) == [3, 1]
    assert cut(Timeouts(s, 3 * s), [0, s // 2, s, 3 * s // 2, 2 * s, 3 * s, 5 * s]) == [5, 1, 1]
    assert cut(Timeouts(s, 3 * s), [i * s // 2 for i in range(8)]) == [6, 2]
    # ties stay together, whichever direction comes first
    assert cut(Timeouts(active_ns=s), [0, s, s, s]) == [1, 3]


def test_records_keep_directions_apart() -> None:
    s = 1_000_000_000
    t = Timeouts(idle_ns=s)
    pkts = [Pkt(0, 0, 100, 0x02), Pkt(10, 1, 60, 0x12), Pkt(3 * s, 1, 70, 0x10)]
    first, second = sorted_pass(t, pkts)
    assert (first.pkts_ab, first.bytes_ab, first.pkts_ba, first.bytes_ba) == (1, 100, 1, 60)
    assert (first.flags_ab, first.flags_ba, first.first, first.last) == (0x02, 0x12, 0, 10)
    assert (second.pkts_ab, second.pkts_ba, second.first_ba) == (0, 1, 3 * s)


@pytest.mark.parametrize("active", [0, 5])
def test_one_batch_or_many_same_bytes_in_records(active: int) -> None:
    """A batch's segments are a pure function of the batch: the same bytes every time."""
    t = Timeouts(1_000_000_000, active * 1_000_000_000)
    recs = [RawRecord(i * 300_000_000, 100, 1, bytes((i % 3, i % 2, 0))) for i in range(50)]
    a = batch_segments(recs, _dissect, t, 2)
    b = batch_segments(list(reversed(recs)), _dissect, t, 2)
    assert a == b and any(a)
