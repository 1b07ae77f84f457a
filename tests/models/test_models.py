"""Contracts: batch codec round trips and refusals, flow-key symmetry, record packing."""

from __future__ import annotations

import itertools
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flowherd.models.batch import (
    HEADER_SIZE,
    MAGIC,
    RECORD_OVERHEAD,
    TS_LIMIT,
    BatchBuilder,
    Columns,
    RawRecord,
    decode_batch,
    decode_columns,
    encode_batch,
)
from flowherd.models.capture import BatchRef
from flowherd.models.errors import BatchError
from flowherd.models.flows import NO_FIRST, NO_LAST, FlowKey, FlowStats, canonical, ts_text

records = st.lists(
    st.builds(
        RawRecord,
        ts_ns=st.integers(0, TS_LIMIT - 1),  # the store's range (models/batch.py)
        wire_len=st.integers(0, 2**32 - 1),
        linktype=st.integers(0, 2**16 - 1),
        data=st.binary(max_size=300),
    ),
    max_size=50,
)


@given(records, st.booleans())
def test_batch_round_trip(recs: list[RawRecord], compress: bool) -> None:
    assert list(decode_batch(encode_batch(recs, compress))) == recs


@given(st.integers(TS_LIMIT, 2**64 - 1), st.booleans())
def test_batch_timestamp_beyond_the_store_refused(ts: int, compress: bool) -> None:
    """The rest of the u64 range: refused when a batch is built, and when one is read."""
    with pytest.raises(BatchError, match="outside 0 <= ts_ns"):
        encode_batch([RawRecord(ts, 60, 1, b"ab")], compress)
    body = struct.pack("<QIHI", ts, 60, 1, 2) + b"ab"
    assert len(body) == RECORD_OVERHEAD + 2
    payload = MAGIC + struct.pack("<HHII", 1, 0, 1, len(body)) + body
    with pytest.raises(BatchError, match="beyond the store's range"):
        list(decode_batch(payload))
    body2 = struct.pack("<QIHI", ts, 60, 1, 2) + b"ab"  # schema 2: one frame's columns
    payload2 = MAGIC + struct.pack("<HHII", 2, 0, 1, len(body2)) + body2
    with pytest.raises(BatchError, match="beyond the store's range"):
        decode_columns(payload2)


def _v1(recs: list[RawRecord]) -> bytes:
    """A schema 1 payload, as producers before schema 2 wrote them."""
    body = b"".join(struct.pack("<QIHI", *r[:3], len(r.data)) + r.data for r in recs)
    return MAGIC + struct.pack("<HHII", 1, 0, len(recs), len(body)) + body


@given(records)
def test_schema_1_payloads_still_read(recs: list[RawRecord]) -> None:
    assert decode_batch(_v1(recs)) == recs
    assert decode_columns(_v1(recs)) == Columns.from_records(recs)


@given(records, st.lists(st.integers(0, 50), max_size=4), st.booleans())
def test_columns_added_in_blocks_equal_records_added_one_by_one(
    recs: list[RawRecord], cuts: list[int], compress: bool
) -> None:
    """A builder fed blocks of columns (and records between them) writes the same payload as
    one fed every record alone; slices and concatenation keep every frame."""
    cols = Columns.from_records(recs)
    assert cols.records() == recs
    assert [cols.record(i) for i in range(len(recs))] == recs
    one = BatchBuilder()
    for r in recs:
        one.add(r)
    blocks = BatchBuilder()
    bounds = sorted({0, len(recs), *(min(c, len(recs)) for c in cuts)})
    for k, (i, j) in enumerate(itertools.pairwise(bounds)):
        part = cols.slice(i, j)
        assert part.records() == recs[i:j]
        if k % 2:
            for r in part.records():
                blocks.add(r)
        else:
            blocks.add_columns(part)
    assert (blocks.count, blocks.size, blocks.wire_bytes) == (one.count, one.size, one.wire_bytes)
    assert blocks.size == sum(RECORD_OVERHEAD + len(r.data) for r in recs)
    assert blocks.payload(compress) == one.payload(compress)
    assert decode_columns(one.payload(compress)) == cols


@pytest.mark.parametrize(
    ("cut", "message"),
    [(-1, "ends inside a record"), (1, "trailing bytes"), (-40, "ends inside its columns")],
)
def test_schema_2_body_lengths_checked(cut: int, message: str) -> None:
    good = encode_batch([RawRecord(1, 60, 1, b"ab"), RawRecord(2, 60, 1, b"cd")])
    body = good[HEADER_SIZE:]
    body = body[:cut] if cut < 0 else body + b"x" * cut
    bad = good[:12] + struct.pack("<I", len(body)) + body
    with pytest.raises(BatchError, match=message):
        decode_columns(bad)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: b"XXXX" + p[4:], "not a flowherd batch"),
        (lambda p: p[:4] + struct.pack("<H", 3) + p[6:], "schema version 3 is not supported"),
        (lambda p: p[:6] + struct.pack("<H", 8) + p[8:], "unknown batch flags"),
        (lambda p: p[:-1], "does not match payload size"),
        (lambda p: p[:3], "too short"),
    ],
)
def test_batch_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    payload = encode_batch([RawRecord(1, 60, 1, b"\x00" * 60)])
    with pytest.raises(BatchError, match=message):
        list(decode_batch(mutate(payload)))


def test_batch_count_must_match_body() -> None:
    good = encode_batch([RawRecord(1, 60, 1, b"ab"), RawRecord(2, 60, 1, b"cd")])
    liar = good[:8] + struct.pack("<I", 3) + good[12:]
    with pytest.raises(BatchError, match="ends inside"):
        list(decode_batch(liar))


def test_compressed_bomb_refused() -> None:
    body = zlib.compress(b"\0" * (1 << 20), 9)
    payload = MAGIC + struct.pack("<HHII", 2, 1, 1, len(body)) + body
    assert len(payload) > HEADER_SIZE
    with pytest.raises(BatchError, match="exceeds"):
        list(decode_batch(payload, max_body=1 << 16))


addr4 = st.binary(min_size=4, max_size=4)
addr16 = st.binary(min_size=16, max_size=16)
port = st.integers(0, 65535)


@given(
    st.one_of(st.tuples(addr4, addr4), st.tuples(addr16, addr16)), st.integers(0, 255), port, port
)
def test_flow_key_symmetry(addrs: tuple[bytes, bytes], proto: int, sp: int, dp: int) -> None:
    src, dst = addrs
    k1, d1 = canonical(src, dst, proto, sp, dp)
    k2, d2 = canonical(dst, src, proto, dp, sp)
    assert k1 == k2
    assert (d1 != d2) or (src, sp) == (dst, dp)
    assert FlowKey.unpack(k1.pack()) == k1


stats = st.builds(
    FlowStats,
    pkts_ab=st.integers(0, 2**40),
    bytes_ab=st.integers(0, 2**52),
    pkts_ba=st.integers(0, 2**40),
    bytes_ba=st.integers(0, 2**52),
    first_ab=st.integers(0, NO_FIRST),
    last_ab=st.integers(NO_LAST, 10**19 - 1),
    first_ba=st.integers(0, NO_FIRST),
    last_ba=st.integers(NO_LAST, 10**19 - 1),
    flags_ab=st.integers(0, 255),
    flags_ba=st.integers(0, 255),
)


@given(stats)
def test_stats_pack_round_trip(s: FlowStats) -> None:
    assert FlowStats.unpack(s.pack()) == s


@given(stats, stats, stats)
def test_stats_merge_commutative_associative(a: FlowStats, b: FlowStats, c: FlowStats) -> None:
    def m(x: FlowStats, y: FlowStats) -> FlowStats:
        r = FlowStats.unpack(x.pack())
        r.merge(y)
        return r

    assert m(a, b) == m(b, a)
    assert m(m(a, b), c) == m(a, m(b, c))


def test_ts_text_exact() -> None:
    assert ts_text(1_704_067_200_000_000_001) == "1704067200.000000001"
    assert ts_text(0) == "0.000000000"


@pytest.mark.parametrize(
    "bad",
    [
        '{"v": 2, "run": "abcdef12", "seq": 0, "packets": 1}',
        '{"v": 1, "run": "../../etc", "seq": 0, "packets": 1}',
        '{"v": 1, "run": "abcdef12", "seq": -1, "packets": 1}',
        '{"v": 1, "run": "abcdef12", "seq": 0, "packets": 1, "extra": 1}',
    ],
)
def test_batch_ref_validation(bad: str) -> None:
    with pytest.raises(ValidationError):
        BatchRef.model_validate_json(bad)
