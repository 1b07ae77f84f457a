"""The Redis merge: exactly once, order independent, equal to the pure algebra."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from flowherd.models.flows import FlowKey, FlowStats
from flowherd.models.keys import RunKeys, TableKeys
from flowherd.store.backend import Store
from flowherd.store.captures import (
    batches_done,
    close_run,
    compact_done,
    done_seqs,
    finish_batch,
    is_done,
    parts_done,
)
from flowherd.workers.fold.aggregate import PartialTable, fold, fold_windows
from flowherd.workers.merge import MergeStatus, merge_partial

pytestmark = [pytest.mark.redis]


class P:
    def __init__(self, src: bytes, dst: bytes, proto: int, sport: int, dport: int, fl: int = 0):
        self.src, self.dst, self.proto, self.sport, self.dport, self.tcp_flags = (
            src,
            dst,
            proto,
            sport,
            dport,
            fl,
        )


def _dissect(linktype: int, data: bytes) -> P | str:
    # test double for the dissector: data = 1 byte selector
    if data[0] == 255:
        return "non_ip"
    a = bytes([10, 0, 0, data[0] % 4])
    b = bytes([10, 0, 0, data[0] // 4 % 4])
    return P(a, b, 17 if data[0] % 2 else 6, 1000 + data[0] % 3, 53, data[0] & 0x3F)


def _records(n: int, seed: int) -> list[tuple[int, int, int, bytes]]:
    r = random.Random(seed)
    return [
        (
            1_700_000_000_000_000_000 + r.randrange(10**12),
            r.randrange(60, 1514),
            1,
            bytes([r.choice([*range(16), 255])]),
        )
        for _ in range(n)
    ]


def _read(conn: Redis, part: TableKeys) -> dict[FlowKey, FlowStats]:
    return {FlowKey.unpack(k): FlowStats.unpack(v) for k, v in conn.hgetall(part.flows).items()}


def _start(conn: Redis, run: str = "abcdef12") -> RunKeys:
    """A live run of one shard (as ``flowherd.store.captures.register`` leaves it)."""
    keys = RunKeys(run)
    conn.set(keys.shard(0).live, "1")
    conn.hset(keys.meta, "state", "submitting")
    return keys


def test_same_batch_twice_counts_once(conn: Redis, store: Store) -> None:
    keys = _start(conn)
    sk = keys.shard(0)
    t = fold(_records(500, 1), _dissect)
    assert merge_partial(store, keys, 0, t).status is MergeStatus.MERGED
    before = (
        conn.hgetall(sk.flows),
        conn.hgetall(sk.totals),
        conn.zrange(sk.rank_bi, 0, -1, withscores=True),
    )
    assert merge_partial(store, keys, 0, t).status is MergeStatus.DUPLICATE
    after = (
        conn.hgetall(sk.flows),
        conn.hgetall(sk.totals),
        conn.zrange(sk.rank_bi, 0, -1, withscores=True),
    )
    assert before == after
    assert int(conn.hget(sk.totals, "packets")) == 500


def test_stale_run_changes_nothing(conn: Redis, store: Store) -> None:
    keys = RunKeys("deadbeef")
    t = fold(_records(10, 2), _dissect)
    assert merge_partial(store, keys, 0, t).status is MergeStatus.STALE
    assert conn.keys("*") == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10**6), nbatches=st.integers(1, 6))
def test_merge_equals_pure_fold_in_any_order(
    conn: Redis, store: Store, seed: int, nbatches: int
) -> None:
    conn.flushall()
    keys = _start(conn)
    sk = keys.shard(0)
    recs = _records(300, seed)
    chunks = [recs[i::nbatches] for i in range(nbatches)]
    parts = [fold(c, _dissect) for c in chunks]
    order = list(range(nbatches))
    random.Random(seed).shuffle(order)
    for i in order:
        merge_partial(store, keys, i, parts[i])
    whole = fold(recs, _dissect)
    assert _read(conn, sk) == whole.flows
    tot = {k.decode(): int(v) for k, v in conn.hgetall(sk.totals).items()}
    assert tot["packets"] == whole.packets and tot["bytes"] == whole.bytes
    assert tot["counted_packets"] == whole.counted_packets
    assert tot.get("nc:non_ip:packets", 0) == whole.not_counted.get("non_ip", [0])[0]
    assert tot["first_ns"] == whole.first_ns and tot["last_ns"] == whole.last_ns
    assert tot["flows"] == len(whole.flows)
    ranked = dict(conn.zrange(sk.rank_bi, 0, -1, withscores=True))
    assert {FlowKey.unpack(k): int(s) for k, s in ranked.items()} == {
        k: s.bytes for k, s in whole.flows.items()
    }


def test_last_batch_claims_report_once(conn: Redis, store: Store) -> None:
    keys = _start(conn)
    parts = [fold(_records(50, s), _dissect) for s in range(3)]
    assert merge_partial(store, keys, 0, parts[0]).status is MergeStatus.MERGED
    assert close_run(store, keys, 3) == 0
    assert merge_partial(store, keys, 1, parts[1]).status is MergeStatus.MERGED
    assert merge_partial(store, keys, 2, parts[2]).status is MergeStatus.LAST
    assert merge_partial(store, keys, 2, parts[2]).status is MergeStatus.DUPLICATE
    assert close_run(store, keys, 3) == 0


def test_close_after_all_merged_claims_report(conn: Redis, store: Store) -> None:
    keys = _start(conn)
    merge_partial(store, keys, 0, fold(_records(5, 9), _dissect))
    assert close_run(store, keys, 1) == 1
    assert close_run(store, keys, 1) == 0


def test_partial_table_merge_matches_whole() -> None:
    recs = _records(400, 3)
    a, b = fold(recs[:150], _dissect), fold(recs[150:], _dissect)
    a.merge(b)
    whole = fold(recs, _dissect)
    assert (
        a.flows == whole.flows and a.packets == whole.packets and a.not_counted == whole.not_counted
    )
    assert isinstance(a, PartialTable)


def _window_table(conn: Redis, keys: RunKeys, start: int) -> dict[FlowKey, FlowStats]:
    return _read(conn, keys.shard(0).window(start))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 10**6),
    nbatches=st.integers(1, 5),
    window=st.sampled_from([10**9, 7 * 10**11]),
)
def test_windows_equal_offline_tables_in_any_order(
    conn: Redis, store: Store, seed: int, nbatches: int, window: int
) -> None:
    conn.flushall()
    keys = _start(conn)
    sk = keys.shard(0)
    recs = _records(400, seed)  # timestamps spread over ~1000 s: many window boundaries
    chunks = [recs[i::nbatches] for i in range(nbatches)]  # every batch straddles windows
    order = list(range(nbatches))
    random.Random(seed).shuffle(order)
    for i in order:
        merge_partial(store, keys, i, fold_windows(chunks[i], _dissect, window))
    offline: dict[int, list] = {}
    for r in recs:
        offline.setdefault(r[0] - r[0] % window, []).append(r)
    starts = sorted(int(m) for m in conn.zrange(sk.windows, 0, -1))
    assert starts == sorted(offline)
    total = PartialTable()
    for w in starts:
        expect = fold(offline[w], _dissect)
        assert _window_table(conn, keys, w) == expect.flows
        tot = {k.decode(): int(v) for k, v in conn.hgetall(sk.window(w).totals).items()}
        assert tot["packets"] == expect.packets and tot["bytes"] == expect.bytes
        total.merge(expect)
    assert _read(conn, sk) == total.flows == fold(recs, _dissect).flows


def test_window_retention_keeps_newest(conn: Redis, store: Store) -> None:
    keys = _start(conn)
    sk = keys.shard(0)
    recs = sorted(_records(300, 4))
    for i in range(0, 300, 50):
        merge_partial(
            store, keys, i, fold_windows(recs[i : i + 50], _dissect, 10**11), keep_windows=3
        )
    starts = [int(m) for m in conn.zrange(sk.windows, 0, -1)]
    newest = sorted({r[0] - r[0] % 10**11 for r in recs})[-3:]
    assert starts == newest
    assert len(list(conn.scan_iter(sk.prefix + "w:*"))) == 3 * 3  # flows, rank, totals each


def test_compacted_done_markers_still_count_every_batch_once(conn: Redis, store: Store) -> None:
    """A long live capture forgets the done markers of old batches (all but the newest
    ``keep``): the sets stay small, the counts stay exact, and a batch below the mark merged
    again (a late duplicate job) changes nothing; the last batch still claims the report."""
    keys = RunKeys("c0ffee12", shards=2)
    for sk in keys.all_shards():
        conn.set(sk.live, "1")
    conn.hset(keys.meta, "state", "submitting")
    parts = [fold(_records(40, s), _dissect) for s in range(12)]
    for i in [*range(9), 10]:  # batch 9 is still in flight
        assert merge_partial(store, keys, i, parts[i]).status is MergeStatus.MERGED
    assert compact_done(store, keys, keep=3) == 6  # the prefix 0..8, less the newest 3
    assert conn.scard(keys.done) == 4  # 6, 7, 8 and 10
    assert [conn.scard(sk.done) for sk in keys.all_shards()] == [4, 4]
    assert batches_done(store, keys) == 10 and parts_done(store, keys) == [10, 10]
    assert is_done(store, keys, 0) and not is_done(store, keys, 9)
    assert done_seqs(store, keys) == {*range(9), 10}
    before = [conn.hgetall(sk.totals) for sk in keys.all_shards()]
    assert merge_partial(store, keys, 2, parts[2]).status is MergeStatus.DUPLICATE
    assert [conn.hgetall(sk.totals) for sk in keys.all_shards()] == before
    assert finish_batch(store, keys, 3) == 0
    assert compact_done(store, keys, keep=3) == 6  # nothing new without a gap
    assert merge_partial(store, keys, 9, parts[9]).status is MergeStatus.MERGED
    assert compact_done(store, keys, keep=3) == 8  # the prefix now reaches 10
    assert close_run(store, keys, 12) == 0
    assert merge_partial(store, keys, 11, parts[11]).status is MergeStatus.LAST
    total = sum(int(conn.hget(sk.totals, "packets") or 0) for sk in keys.all_shards())
    assert total == 12 * 40
    assert status_counts(conn, keys) == 12


def status_counts(conn: Redis, keys: RunKeys) -> int:
    return int(conn.scard(keys.done)) + int(conn.hget(keys.meta, "done_below") or 0)
