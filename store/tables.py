"""Reading flow tables back: a run's (or one window's) table is the sum of its shards' parts.

Flows are partitioned by key, so every conversation lives in exactly one shard: a scan of the
table is the concatenation of the shards' scans, and the top N of the table is the top N of
the union of each shard's top N (ties at the boundary included). Every reader streams:
HSCAN cursors and ranked ranges, never the whole table in one reply.

A run with flow timeouts has, once its records are built (:mod:`flowherd.store.records`), a second
table of the same layout whose fields are a packed FlowKey followed by the record's start (8 bytes):
every reader of the run's whole table then reads the records instead, and hands out the packed
FlowKey alone, so a conversation may come several times, once per record. Windows and the totals are
the conversations' as before.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from flowherd.models.flows import FlowKey, FlowStats, shard_of
from flowherd.models.keys import RunKeys, TableKeys
from flowherd.store.backend import Store


@dataclass(frozen=True)
class Table:
    """The parts of one flow table, one per shard (index = shard number)."""

    parts: tuple[TableKeys, ...]
    #: the run's ``records`` key and its records table (whole-run tables of runs that may have
    #: flow timeouts): read instead of ``parts`` while that key exists
    records_key: str | None = None
    records: tuple[TableKeys, ...] = ()

    def part_of(self, packed_key: bytes) -> TableKeys:
        return self.parts[shard_of(packed_key, len(self.parts))]


def table(keys: RunKeys, window: int | None = None) -> Table:
    """The run's whole table, or the table of the window starting at ``window`` (ns)."""
    if window is None:
        shards = keys.all_shards()
        return Table(tuple(shards), keys.records, tuple(sk.records for sk in shards))
    return Table(tuple(sk.window(window) for sk in keys.all_shards()))


#: bytes after the packed FlowKey in a record table's fields (the record's start)
RECORD_SUFFIX = 8


def resolve(store: Store, t: Table) -> tuple[tuple[TableKeys, ...], int]:
    """The parts to read and the bytes to strip from their fields: the records when built."""
    if t.records_key and store.kv.exists(t.records_key):
        return t.records, RECORD_SUFFIX
    return t.parts, 0


def has_records(store: Store, t: Table) -> bool:
    """Whether readers of ``t`` read flow records (a run with timeouts, records built)."""
    return resolve(store, t)[1] > 0


def iter_raw(store: Store, t: Table, count: int = 5000) -> Iterator[tuple[bytes, bytes]]:
    """Every conversation (or flow record) as stored: ``(packed FlowKey, packed FlowStats)``,
    shard after shard (HSCAN: bounded memory here and in Redis; order unspecified)."""
    parts, cut = resolve(store, t)
    for part in parts:
        if cut:
            for k, v in store.kv.hscan_iter(part.flows, count=count):
                yield k[:-cut], v
        else:
            yield from store.kv.hscan_iter(part.flows, count=count)


def iter_flows(store: Store, t: Table, count: int = 5000) -> Iterator[tuple[FlowKey, FlowStats]]:
    """Every conversation of the table, unpacked."""
    for k, v in iter_raw(store, t, count):
        yield FlowKey.unpack(k), FlowStats.unpack(v)


def get_flows(store: Store, t: Table, keys: Sequence[FlowKey]) -> list[FlowStats | None]:
    """The stats of ``keys`` (None where the table lacks one), each read from its shard."""
    packed = [k.pack() for k in keys]
    with store.kv.pipeline(transaction=False) as p:
        for pk in packed:
            p.hget(t.part_of(pk).flows, pk)
        vals = p.execute() if packed else []
    return [FlowStats.unpack(v) if isinstance(v, bytes) else None for v in vals]


def totals(store: Store, t: Table) -> dict[str, int]:
    """The table's totals: counters summed over shards, ``first_ns`` min, ``last_ns`` max."""
    with store.kv.pipeline(transaction=False) as p:
        for part in t.parts:
            p.hgetall(part.totals)
        return sum_totals(p.execute())


def sum_totals(raws: list[dict[bytes, bytes]]) -> dict[str, int]:
    """Shards' totals hashes added up; ``first_ns`` is the minimum and ``last_ns`` the maximum."""
    tot: dict[str, int] = {}
    for raw in raws:
        for k, v in raw.items():
            f, n = k.decode(), int(v)
            if f == "first_ns":
                tot[f] = min(tot.get(f, n), n)
            elif f == "last_ns":
                tot[f] = max(tot.get(f, n), n)
            else:
                tot[f] = tot.get(f, 0) + n
    return tot


def window_starts(store: Store, keys: RunKeys) -> list[int]:
    """Start (ns) of every window kept, oldest first (the union of the shards' windows)."""
    with store.kv.pipeline(transaction=False) as p:
        for sk in keys.all_shards():
            p.zrange(sk.windows, 0, -1)
        found = p.execute()
    return sorted({int(m) for members in found for m in members})


def _ranked(store: Store, zkey: str, n: int) -> list[bytes]:
    """Members of the n highest scores, plus every member tied with the n-th."""
    kv = store.kv
    head: list[tuple[bytes, float]] = kv.zrevrange(zkey, n - 1, n - 1, withscores=True)
    if not head:
        return list(kv.zrevrange(zkey, 0, -1))
    return list(kv.zrevrangebyscore(zkey, "+inf", head[0][1]))


def top_conversations(store: Store, t: Table, n: int) -> list[tuple[FlowKey, FlowStats]]:
    """Candidates for the top ``n`` conversations by bytes (ties at the boundary included):
    the union of each shard's candidates, which holds the table's top ``n``."""
    out: list[tuple[FlowKey, FlowStats]] = []
    if n <= 0:
        return out
    parts, cut = resolve(store, t)
    for part in parts:
        members = _ranked(store, part.rank_bi, n)
        vals = store.kv.hmget(part.flows, members) if members else []
        out += [
            (FlowKey.unpack(m[: len(m) - cut]), FlowStats.unpack(v))
            for m, v in zip(members, vals, strict=True)
            if isinstance(v, bytes)
        ]
    return out


def _top_directions_part(
    store: Store, part: TableKeys, n: int, cut: int = 0
) -> list[tuple[FlowKey, FlowStats, int]]:
    """One shard's candidates for the top ``n`` directions (see :func:`top_directions`)."""
    out: list[tuple[FlowKey, FlowStats, int]] = []
    best: list[int] = []  # min-heap of the n largest direction sizes so far
    page = max(n, 256)
    start = 0
    while True:
        members: list[tuple[bytes, float]] = store.kv.zrevrange(
            part.rank_bi, start, start + page - 1, withscores=True
        )
        if not members:
            return out
        vals = store.kv.hmget(part.flows, [m for m, _ in members])
        for (m, score), v in zip(members, vals, strict=True):
            if len(best) == n and score < best[0]:
                return out
            if not isinstance(v, bytes):
                continue
            key, st = FlowKey.unpack(m[: len(m) - cut]), FlowStats.unpack(v)
            for d, b, p in ((0, st.bytes_ab, st.pkts_ab), (1, st.bytes_ba, st.pkts_ba)):
                if p:
                    out.append((key, st, d))
                    if len(best) < n:
                        heapq.heappush(best, b)
                    elif b > best[0]:
                        heapq.heapreplace(best, b)
        start += page


def top_directions(store: Store, t: Table, n: int) -> list[tuple[FlowKey, FlowStats, int]]:
    """Candidates for the top ``n`` unidirectional flows by bytes: (key, stats, direction).

    A direction is never larger than its conversation, so walking a shard's conversation
    ranking from the top can stop at the first conversation smaller than the n-th largest
    direction seen so far in that shard: every flow of the shard at least that large (ties
    included) has been collected. The union over shards holds the table's top ``n``.
    """
    if n <= 0:
        return []
    parts, cut = resolve(store, t)
    return [c for part in parts for c in _top_directions_part(store, part, n, cut)]
