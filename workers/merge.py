"""Store side of a batch: split the partial table by shard, merge each part once, count it.

Each shard part is merged by one atomic script (``merge.lua``) with the shard's own
done-marker, so exactly-once holds per (batch, shard): a worker killed between two parts leaves
the merged ones marked, and the batch's next run merges only the others. When every part is
merged, :func:`flowherd.store.captures.finish_batch` counts the batch (and says when the capture is
complete); only then is the payload deleted from the queue Redis.

The script reads a part's flows with one ``HMGET`` and writes them with one ``HSET`` and one
``ZADD`` per thousand flows (rank scores are set to each merged flow's bytes, which equals
incrementing them). A table the fast engine folded arrives packed already
(:attr:`~flowherd.workers.fold.aggregate.PartialTable.packed`): one shard takes it as it is, several
split it record by record without unpacking.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from importlib import resources
from zlib import crc32

from flowherd.models.errors import BackendError
from flowherd.models.flows import NO_FIRST, NO_LAST, VALUE
from flowherd.models.keys import RunKeys, ShardKeys
from flowherd.store.backend import Store
from flowherd.store.captures import finish_batch
from flowherd.workers.fold.aggregate import PartialTable

_MERGE = resources.files("flowherd.store").joinpath("merge.lua").read_text()
#: times a part is merged again when retention must drop windows it did not declare
_RETENTION_TRIES = 8


class MergeStatus(enum.IntEnum):
    STALE = -1  # the run was replaced or deleted: nothing written
    DUPLICATE = 0  # this batch was merged before: nothing written
    MERGED = 1
    LAST = 2  # merged, and it completed the capture: the caller enqueues the report


@dataclass(frozen=True, slots=True)
class MergeResult:
    status: MergeStatus
    new_flows: int


@dataclass(slots=True)
class Part:
    """One shard's share of a partial table: packed flows and, for one shard, the totals."""

    flows: list[bytes] = field(default_factory=list)
    totals: PartialTable | None = None


def _ts19(ns: int) -> bytes:
    return b"%019d" % ns


def split(table: PartialTable, shards: int, owner: int) -> list[Part]:
    """``table``'s flows packed and partitioned by shard; shard ``owner`` carries the totals
    (packets, bytes, not-counted buckets, first and last timestamps)."""
    parts = [Part() for _ in range(shards)]
    parts[owner].totals = table
    packed = table.packed
    if packed is not None and shards == 1:
        parts[0].flows.append(packed)
        return parts
    if packed is not None:
        pos, end = 0, len(packed)
        while pos < end:
            klen = packed[pos]
            rec = packed[pos : pos + 1 + klen + VALUE.size]
            parts[crc32(rec[1 : 1 + klen]) % shards].flows.append(rec)
            pos += len(rec)
        return parts
    for k, st in table.flows.items():
        kb = k.pack()
        parts[crc32(kb) % shards if shards > 1 else 0].flows.append(
            bytes((len(kb),)) + kb + st.pack()
        )
    return parts


def _table_args(start: str, part: Part) -> list[bytes | int | str]:
    t = part.totals
    pairs: list[bytes | int | str] = []
    first, last = NO_FIRST, NO_LAST
    if t is not None:
        pairs = [
            "packets",
            t.packets,
            "bytes",
            t.bytes,
            "counted_packets",
            t.counted_packets,
            "counted_bytes",
            t.counted_bytes,
        ]
        for bucket, (p, b) in sorted(t.not_counted.items()):
            pairs += [f"nc:{bucket}:packets", p, f"nc:{bucket}:bytes", b]
        first, last = t.first_ns, t.last_ns
    return [start, b"".join(part.flows), _ts19(first), _ts19(last), len(pairs) // 2, *pairs]


def merge_part(
    store: Store,
    sk: ShardKeys,
    seq: int,
    whole: Part,
    windows: dict[int, Part],
    keep_windows: int,
) -> tuple[int, int]:
    """Merge one shard's part of batch ``seq``: (status -1/0/1 as in merge.lua, new flows)."""
    script = store.kv.register_script(_MERGE)
    starts = sorted(windows)
    drop: list[str] = []
    if keep_windows and starts:  # predict what retention drops; the script checks it
        have = {int(m) for m in store.kv.zrange(sk.windows, 0, -1)}
        every = sorted(have | set(starts))
        drop = [str(s) for s in every[: max(0, len(every) - keep_windows)]]
    tables = _table_args("", whole)
    for s in starts:
        tables += _table_args(str(s), windows[s])
    for _ in range(_RETENTION_TRIES):
        keys = [sk.live, sk.done, sk.flows, sk.rank_bi, sk.totals, sk.windows, sk.done_below]
        for s in starts:
            keys += sk.window(s).all()
        for d in drop:
            keys += sk.window(d).all()
        args = [seq, keep_windows, len(starts), len(drop), *drop, *tables]
        res = script(keys=keys, args=args)
        if int(res[0]) != -2:
            return int(res[0]), int(res[1])
        drop += [m.decode() if isinstance(m, bytes) else str(m) for m in res[2:]]
    raise BackendError(f"batch {seq}: window retention kept changing under the merge")


def _wait(store: Store, keys: list[str], replicas: int, timeout_ms: int = 3000) -> None:
    """Block until ``replicas`` replicas acknowledged this client's writes to the nodes of
    ``keys``; :class:`BackendError` (the job is retried) when they do not in time."""
    if store.cluster:
        nodes = {store.kv.get_node_from_key(k).name: store.kv.get_node_from_key(k) for k in keys}
        acks = [
            int(store.kv.execute_command("WAIT", replicas, timeout_ms, target_nodes=node))
            for node in nodes.values()
        ]
    else:
        acks = [int(store.kv.wait(replicas, timeout_ms))]
    if min(acks) < replicas:
        raise BackendError(
            f"only {min(acks)} of {replicas} replicas acknowledged the merge within "
            f"{timeout_ms} ms (FLOWHERD_WAIT_REPLICAS)"
        )


def merge_partial(
    store: Store,
    keys: RunKeys,
    seq: int,
    table: PartialTable,
    keep_windows: int = 0,
    wait_replicas: int = 0,
) -> MergeResult:
    """Merge ``table`` (and its per-window tables) as batch ``seq`` of the run: every shard part
    exactly once, then the batch itself. ``keep_windows`` > 0 drops the oldest windows beyond
    that many; ``wait_replicas`` > 0 waits for that many replicas to acknowledge the parts
    before the batch is counted."""
    n = keys.shards
    owner = seq % n
    wholes = split(table, n, owner)
    per_window = {w: split(t, n, owner) for w, t in table.windows.items()}
    new_flows = 0
    for s in range(n):
        sk = keys.shard(s)
        status, new = merge_part(
            store, sk, seq, wholes[s], {w: p[s] for w, p in per_window.items()}, keep_windows
        )
        if status == -1:
            return MergeResult(MergeStatus.STALE, 0)
        new_flows += new
    if wait_replicas:
        _wait(store, [keys.shard(s).live for s in range(n)], wait_replicas)
    done = finish_batch(store, keys, seq)
    if done == -1:
        return MergeResult(MergeStatus.STALE, 0)
    if wait_replicas:
        _wait(store, [keys.meta], wait_replicas)
    status = {0: MergeStatus.DUPLICATE, 1: MergeStatus.MERGED, 2: MergeStatus.LAST}[done]
    return MergeResult(status, new_flows)
