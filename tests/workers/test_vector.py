"""Differential tests of the fast engine's batch fold against the per-frame fold.

The rule under test: ``fold_vector(records, dissect_fast)`` equals ``fold(records,
dissect_fast)`` (and so ``fold(records, dissect)``): the same conversations with the same
counters, the same totals and not-counted buckets, and its packed form holds exactly those
conversations. A frame the array path reads must be one ``decode()`` answers itself. Each suite
also counts the frames read as arrays, so an array path that silently hands everything to the
per-frame decoder fails.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

from flowherd.models.batch import TS_LIMIT, Columns, RawRecord
from flowherd.models.flows import VALUE, FlowKey, FlowStats
from flowherd.models.keys import RunKeys
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from flowherd.workers.decode.dissect import dissect
from flowherd.workers.decode.fastpath import decode, dissect_fast
from flowherd.workers.fold import vecpack
from flowherd.workers.fold.aggregate import PartialTable, fold, fold_windows, pack_flows
from flowherd.workers.fold.vector import fold_vector, fold_windows_vector, read_as_arrays
from flowherd.workers.merge import MergeStatus, merge_partial, split
from tests.workers.test_fastpath import (
    BIG,
    CASES,
    LINKTYPES,
    MAC,
    TRUNCATION_BASES,
    VALID,
    _records,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PCAPS = SHARED / "pcaps"
CAPTURES = sorted(p.name for p in PCAPS.glob("*.pcap*")) if PCAPS.is_dir() else []
T0 = 1_700_000_000_000_000_000


def records_of(frames: list[tuple[int, bytes]], seed: int = 0) -> list[RawRecord]:
    """Frames as records, with shuffled timestamps and wire lengths of at least the data."""
    r = random.Random(seed)
    return [
        RawRecord(T0 + r.randrange(10**9), len(d) + r.randrange(100), lt, d) for lt, d in frames
    ]


def unpacked(blob: bytes) -> dict[FlowKey, FlowStats]:
    """The merge form back into conversations; a key twice fails."""
    out: dict[FlowKey, FlowStats] = {}
    pos = 0
    while pos < len(blob):
        klen = blob[pos]
        key = FlowKey.unpack(blob[pos + 1 : pos + 1 + klen])
        assert key not in out, key
        out[key] = FlowStats.unpack(blob[pos + 1 + klen : pos + 1 + klen + VALUE.size])
        pos += 1 + klen + VALUE.size
    assert pos == len(blob)
    return out


def same(records: list[RawRecord]) -> int:
    """Assert the contract on one batch; return how many frames were read as arrays."""
    ref, got = fold(records, dissect_fast), fold_vector(records, dissect_fast)
    assert got.flows == ref.flows
    assert got.not_counted == ref.not_counted
    assert (got.packets, got.bytes, got.first_ns, got.last_ns) == (
        ref.packets,
        ref.bytes,
        ref.first_ns,
        ref.last_ns,
    )
    assert got.packed is not None and unpacked(got.packed) == ref.flows
    assert len(got.packed) == len(pack_flows(ref.flows))
    arrays = read_as_arrays(records)
    for rec, read in zip(records, arrays, strict=True):
        if read:  # the array path answers only where decode() answers itself
            assert decode(rec.linktype, rec.data) is not None, rec.data.hex()
    return sum(arrays)


# --- the shared corpus -------------------------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.skipif(not CAPTURES, reason=f"shared corpus not found at {PCAPS}")
@pytest.mark.parametrize("name", CAPTURES)
def test_corpus_capture(name: str) -> None:
    frames = list(_records(PCAPS / name))
    records = records_of(frames)
    read = same(records)
    assert records
    plain = sum(
        1
        for lt, d in frames
        if lt == 1
        and (
            d[12:15] == b"\x08\x00\x45"
            or (d[12:14] == b"\x86\xdd" and d[20:21] in (b"\x06", b"\x11"))
        )
        and decode(lt, d) is not None
    )
    if plain:  # untagged IPv4 (no options) or IPv6 TCP/UDP that decode() answers: arrays
        assert read > 0, f"{name}: no frame read as arrays"
    # in batches of 7 as well: tables split anywhere still agree
    for i in range(0, min(len(records), 700), 7):
        same(records[i : i + 7])


# --- generated edge cases ----------------------------------------------------------------------

V4: dict[str, str] = {"src": "192.0.2.1", "dst": "198.51.100.7"}
ARRAY_CASES = {"eth-v4-tcp", "eth-v4-udp", "eth-v6-tcp", "eth-v6-udp", "vlan", "qinq-88a8"}


@pytest.mark.parametrize(("linktype", "data"), [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_generated_case(linktype: int, data: bytes) -> None:
    same(records_of([(linktype, data)]))


def test_plain_cases_are_read_as_arrays() -> None:
    cases = [c for c in CASES if c[0] in ARRAY_CASES]
    assert len(cases) == len(ARRAY_CASES)
    assert same(records_of([(c[1], c[2]) for c in cases])) == len(cases)


def test_all_cases_in_one_batch() -> None:
    records = records_of([(c[1], c[2]) for c in CASES] * 3, seed=3)
    assert same(records) >= 3 * len(ARRAY_CASES)


PLAIN_BASES = [
    ("eth-v4-tcp", bytes(Ether(**MAC) / IP(**V4) / TCP(sport=1234, dport=80, flags="SA"))),
    ("eth-v4-udp", bytes(Ether(**MAC) / IP(**V4) / UDP(sport=53, dport=5353) / b"abcd")),
    ("eth-v4-icmp", bytes(Ether(**MAC) / IP(**V4, proto=1) / (b"\x08\x00" + bytes(30)))),
    (
        "qinq-v6-tcp",
        bytes(
            Ether(**MAC)
            / Dot1AD(vlan=3)
            / Dot1Q(vlan=4)
            / IPv6(src="2001:db8::1", dst="2001:db8::2")
            / TCP(sport=9, dport=8, flags="F")
        ),
    ),
    ("v6-udp", bytes(Ether(**MAC) / IPv6(src="::1", dst="::2") / UDP(sport=7, dport=7))),
]


@pytest.mark.parametrize(
    ("data", "plain"),
    [(b[1], True) for b in PLAIN_BASES] + [(b[2], False) for b in TRUNCATION_BASES if b[1] == 1],
    ids=[b[0] for b in PLAIN_BASES] + [f"trunc-{b[0]}" for b in TRUNCATION_BASES if b[1] == 1],
)
def test_truncated_at_every_offset(data: bytes, plain: bool) -> None:
    cuts = [(1, data[:k]) for k in range(len(data) + 1)]
    records = records_of(cuts, seed=len(data))
    read = same(records)
    if plain:  # every cut decode() finds a flow key in is read as arrays
        assert read == sum(isinstance(decode(lt, d), tuple) for lt, d in cuts) > 0


def test_plain_frames_whole_are_read_as_arrays() -> None:
    frames = [(1, b[1]) for b in PLAIN_BASES]
    assert all(read_as_arrays(records_of(frames)))


def test_directions_ties_and_families() -> None:
    """Both directions of a conversation, equal addresses told apart by port, an IPv4 address
    and the IPv6 address with the same low bits, extreme timestamps and wire lengths."""
    v4 = Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.1")
    v6 = Ether(**MAC) / IPv6(src="::a00:1", dst="::a00:2")
    back6 = Ether(**MAC) / IPv6(src="::a00:2", dst="::a00:1")
    frames = [
        bytes(v4 / TCP(sport=80, dport=1000, flags="S")),
        bytes(v4 / TCP(sport=1000, dport=80, flags="A")),
        bytes(v4 / UDP(sport=5, dport=5)),
        bytes(v6 / UDP(sport=1, dport=2)),
        bytes(back6 / UDP(sport=2, dport=1)),
        bytes(Ether(**MAC) / IP(src="0.0.10.0", dst="0.0.10.0") / UDP(sport=1, dport=2)),
    ]
    records = [
        RawRecord(ts, wire, 1, d)
        for d, ts, wire in zip(
            frames * 2,
            [0, TS_LIMIT - 1, 5, 6, 7, 8, TS_LIMIT - 2, 1, 2, 3, 4, 9],
            [2**32 - 1, 60, 61, 62, 2**32 - 2, 64, 65, 66, 67, 68, 69, 70],
            strict=True,
        )
    ]
    assert same(records) == len(records)
    t = fold_vector(records, dissect_fast)
    key = FlowKey(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 1]), 6, 80, 1000)
    assert t.flows[key] == FlowStats(
        2, 2**32 - 1 + 65, 2, 60 + 66, 0, TS_LIMIT - 2, 1, TS_LIMIT - 1, 2, 0x10
    )
    assert len(t.flows) == 4


def test_array_and_per_frame_frames_of_one_flow_join() -> None:
    """Frames of one conversation split between the two paths (IPv4 options go to the
    per-frame decoder) fold into one record."""
    plain = bytes(Ether(**MAC) / IP(**V4) / TCP(sport=1, dport=2, flags="S"))
    opts = bytes(Ether(**MAC) / IP(**V4, options=[IPOption_NOP()] * 4) / TCP(sport=1, dport=2))
    reply = bytes(Ether(**MAC) / IP(src=V4["dst"], dst=V4["src"]) / TCP(sport=2, dport=1))
    records = records_of([(1, plain), (1, opts), (1, reply), (1, opts)], seed=5)
    assert read_as_arrays(records) == [True, False, True, False]
    same(records)
    (st_,) = fold_vector(records, dissect_fast).flows.values()
    assert (st_.pkts_ab, st_.pkts_ba) == (3, 1)


def test_empty_batch() -> None:
    assert fold_vector([], dissect_fast) == PartialTable()
    assert read_as_arrays([]) == []


def test_windows_equal() -> None:
    frames = [(c[1], c[2]) for c in CASES] * 4
    records = records_of(frames, seed=9)
    w = 200_000_000
    ref = fold_windows(records, dissect_fast, w)
    got = fold_windows_vector(Columns.from_records(records), dissect_fast, w)
    assert got.flows == ref.flows and got.not_counted == ref.not_counted
    assert sorted(got.windows) == sorted(ref.windows) and len(got.windows) >= 3
    for start, part in ref.windows.items():
        assert got.windows[start].flows == part.flows
        assert got.windows[start].packed is not None
    assert got.packed is None  # a merged table is packed at the merge


# --- property tests ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(
        st.tuples(st.sampled_from(LINKTYPES), st.binary(max_size=90)), min_size=1, max_size=12
    )
)
def test_random_bytes(frames: list[tuple[int, bytes]]) -> None:
    same(records_of(frames))


@st.composite
def mutated_batch(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Valid frames with a few bytes changed (the header fields the array path reads above
    all) and some cut."""
    out = []
    for _ in range(draw(st.integers(1, 10))):
        linktype, frame = draw(st.sampled_from(VALID))
        buf = bytearray(frame)
        for _ in range(draw(st.integers(0, 3))):
            pos = draw(st.integers(0, min(len(buf) - 1, 80)))
            buf[pos] = draw(st.sampled_from([0, 1, 6, 17, 0x45, 0x60, 0x81, 0x86, 0xDD, 255]))
        if draw(st.booleans()):
            buf = buf[: draw(st.integers(0, len(buf)))]
        out.append((linktype, bytes(buf)))
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=mutated_batch())
def test_mutated_batches(frames: list[tuple[int, bytes]]) -> None:
    same(records_of(frames))


# --- whole traces ------------------------------------------------------------------------------


def test_sample_trace(tmp_path: Path) -> None:
    path = tmp_path / "sample.pcap"
    write_sample(path, flows=400)
    with open_capture(str(path)) as cap:
        records = list(cap)
    assert same(records) == len(records) > 1000  # plain Ethernet IPv4/IPv6 TCP/UDP
    for i in range(0, len(records), 997):
        assert same(records[i : i + 997]) == len(records[i : i + 997])
    assert fold_vector(records, dissect_fast).flows == fold(records, dissect).flows


@pytest.mark.skipif(not BIG.is_file(), reason=f"benchmark trace {BIG} not built")
def test_benchmark_slice() -> None:
    with open_capture(str(BIG)) as cap:
        records = list(itertools.islice(cap, 16_000))
    assert same(records) == len(records) == 16_000


# --- the merge ---------------------------------------------------------------------------------


def _split_records(parts: list) -> list[set[bytes]]:
    return [set(_records_of_blob(b"".join(p.flows))) for p in parts]


def _records_of_blob(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        end = pos + 1 + blob[pos] + VALUE.size
        out.append(blob[pos:end])
        pos = end
    return out


@pytest.mark.parametrize("shards", [1, 3])
def test_split_of_packed_equals_split_of_flows(tmp_path: Path, shards: int) -> None:
    path = tmp_path / "s.pcap"
    write_sample(path, flows=150, seed=4)
    with open_capture(str(path)) as cap:
        records = list(cap)
    t = fold_vector(records, dissect_fast)
    assert t.packed
    from_packed = split(t, shards, 1 % shards)
    t.packed = None
    from_flows = split(t, shards, 1 % shards)
    assert _split_records(from_packed) == _split_records(from_flows)
    assert [p.totals is t for p in from_packed] == [p.totals is t for p in from_flows]


@pytest.mark.redis
def test_merge_of_vector_tables_equals_whole_fold(
    conn: Redis, store: Store, tmp_path: Path
) -> None:
    """Batches of over 1,000 flows (several chunks of the merge script), merged out of order,
    one twice: the stored table equals the whole trace's fold, rank scores its bytes."""
    path = tmp_path / "m.pcap"
    write_sample(path, flows=3000, seed=8)
    with open_capture(str(path)) as cap:
        records = list(cap)
    keys = RunKeys("vec12345")
    for s in range(1):
        conn.set(keys.shard(s).live, "1")
    conn.hset(keys.meta, "state", "submitting")
    size = len(records) // 2 + 1
    tables = [
        fold_vector(records[i : i + size], dissect_fast) for i in range(0, len(records), size)
    ]
    assert max(len(t.flows) for t in tables) > 1000
    order = [1, 0, 1]
    statuses = [merge_partial(store, keys, seq, tables[seq]).status for seq in order]
    assert statuses[-1] is MergeStatus.DUPLICATE
    whole = fold(records, dissect)
    stored: dict[FlowKey, FlowStats] = {}
    ranked: dict[FlowKey, float] = {}
    for s in range(1):
        sk = keys.shard(s)
        stored.update(
            {FlowKey.unpack(k): FlowStats.unpack(v) for k, v in conn.hgetall(sk.flows).items()}
        )
        ranked.update(
            {FlowKey.unpack(k): sc for k, sc in conn.zrange(sk.rank_bi, 0, -1, withscores=True)}
        )
    assert stored == whole.flows
    assert ranked == {k: float(st_.bytes) for k, st_ in whole.flows.items()}
    flows = int(conn.hget(keys.shard(0).totals, "flows") or 0)
    assert flows == len(whole.flows)


# --- grouping ----------------------------------------------------------------------------------


def _check_groups(keys: list[np.ndarray]) -> None:
    order, heads = vecpack.groups([k.astype(np.uint64) for k in keys])
    assert sorted(order.tolist()) == list(range(len(keys[0])))
    rows = [tuple(int(k[i]) for k in keys) for i in order.tolist()]
    bounds = [*heads.tolist(), len(rows)]
    groups = [rows[a:b] for a, b in itertools.pairwise(bounds)]
    assert all(len(set(g)) == 1 for g in groups)  # each group one key
    assert len({g[0] for g in groups}) == len(groups)  # each key one group


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2**64 - 1), st.integers(0, 2)), min_size=1
    )
)
def test_groups_put_equal_keys_together(rows: list[tuple[int, int, int]]) -> None:
    cols = [np.array(c, np.uint64) for c in zip(*rows, strict=True)]
    _check_groups(cols)


def test_mix_collisions_fall_back_to_an_exact_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key mixing to the same value (multipliers 0): groups and tables stay exact."""
    monkeypatch.setattr(vecpack, "_MIX", (np.uint64(0),) * 5)
    _check_groups([np.array([3, 1, 3, 2, 1], np.uint64), np.array([0, 0, 0, 1, 1], np.uint64)])
    same(records_of([(c[1], c[2]) for c in CASES], seed=11))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, len(CASES) - 1), min_size=0, max_size=60),
    st.integers(0, 2**32),
    st.sampled_from([1, 7, 50_000_000, 10**9]),
)
def test_windows_of_columns_equal_windows_of_records(
    picks: list[int], seed: int, window_ns: int
) -> None:
    """The worker's fast path with windows (each window's frames taken from the batch's
    columns) equals the per-frame window fold, window by window."""
    records = records_of([(CASES[i][1], CASES[i][2]) for i in picks], seed=seed)
    cols = Columns.from_records(records)
    ref = fold_windows(records, dissect_fast, window_ns)
    got = fold_windows_vector(cols, dissect_fast, window_ns)
    assert got.flows == ref.flows and got.not_counted == ref.not_counted
    assert (got.packets, got.bytes, got.first_ns, got.last_ns) == (
        ref.packets,
        ref.bytes,
        ref.first_ns,
        ref.last_ns,
    )
    assert sorted(got.windows) == sorted(ref.windows)
    for start, part in ref.windows.items():
        assert got.windows[start].flows == part.flows
        assert got.windows[start].not_counted == part.not_counted
        assert got.windows[start].packets == part.packets


@given(st.lists(st.binary(max_size=30), max_size=20), st.data())
def test_columns_take_keeps_the_chosen_frames(datas: list[bytes], data: st.DataObject) -> None:
    """Any frames, in any order (the window fold takes a permutation)."""
    records = [RawRecord(i, len(d), 1, d) for i, d in enumerate(datas)]
    some = data.draw(st.sets(st.sampled_from(range(len(records))))) if records else set()
    chosen = data.draw(st.permutations(sorted(some)))
    got = Columns.from_records(records).take(np.array(chosen, np.int64))
    assert got.records() == [records[i] for i in chosen]
