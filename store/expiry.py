"""Records that leave as they expire: what the producer promises and what the exporter keeps
(the I/O around :mod:`flowherd.models.expiry`).

The producer of a run whose records leave as they expire (``producer sniff --records-dir`` or
``--ipfix``):

* declares where they go (:func:`declare`, the meta field ``records_out``) before its first
  batch;
* adds each batch to the run's ``pending`` zset, scored by its oldest packet, before the batch's
  payload is stored (:func:`note_batch`);
* publishes its *frontier* (:func:`publish_frontier`): no batch it sends later holds a packet
  older than it; ``END`` once the run is closed.

The exporter (``reporter records``) keeps, per shard, a checkpoint (hash ``exp``: the batches
absorbed, the watermark, the journal part and its committed length, what has left) and the open
conversations (hash ``open``). One step of a shard (:func:`commit`) writes the changed
conversations, deletes the finished ones and the absorbed batches' segments, and moves the
checkpoint, in one MULTI/EXEC on the shard's slot: a step is all or nothing. A batch job that
runs again after its batch was absorbed writes no segments (``store/records.py`` checks
``upto``).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

from flowherd.models.capture import RecordsLeft
from flowherd.models.expiry import END, Open, RecordsOut
from flowherd.models.keys import RunKeys, ShardKeys
from flowherd.models.records import Entry, decode_chunk
from flowherd.models.state import CaptureMeta, MetaField, StoredState
from flowherd.store.backend import Store

#: open conversations read per HSCAN round trip
_SCAN = 2000
#: batches one step absorbs at most
_STEP_BATCHES = 1024


def declare(store: Store, keys: RunKeys, out: RecordsOut) -> None:
    """Say where the run's records go (before its first batch)."""
    store.kv.hset(keys.meta, MetaField.RECORDS_OUT, out.model_dump_json())


def records_out(meta: CaptureMeta) -> RecordsOut | None:
    """Where the run's records go as they expire; None when they stay in Redis."""
    if not meta.records_out:
        return None
    return RecordsOut.model_validate_json(meta.records_out)


def note_batch(store: Store, keys: RunKeys, seq: int, ts_min: int) -> None:
    """Batch ``seq`` exists, its oldest packet at ``ts_min``: the watermark waits for it."""
    store.kv.zadd(keys.pending, {str(seq): ts_min})


def publish_frontier(store: Store, keys: RunKeys, ns: int) -> None:
    """No batch sent from now on holds a packet older than ``ns`` (the caller keeps it rising)."""
    store.kv.hset(keys.meta, MetaField.FRONTIER_NS, ns)


def add_late(store: Store, keys: RunKeys, n: int) -> None:
    """``n`` packets arrived older than the frontier already published."""
    store.kv.hincrby(keys.meta, MetaField.LATE, n)


@dataclass(slots=True)
class Checkpoint:
    """One shard's exporter state (hash ``exp``)."""

    upto: int = 0  # batches below this are absorbed
    watermark: int = 0  # the highest watermark applied
    part: int = 0  # the journal part being written
    part_len: int = 0  # its committed length
    part_started_ns: int = 0  # wall time of its first record (names the file)
    sent: int = 0  # bytes of the part sent to the IPFIX collector
    ipfix_records: int = 0  # data records sent over IPFIX (the message sequence)
    records: int = 0  # records that have left
    packets: int = 0
    bytes: int = 0
    files: int = 0  # files written

    @classmethod
    def from_hash(cls, raw: dict[builtins.bytes, builtins.bytes]) -> Checkpoint:
        names = {f.name for f in fields(cls)}
        return cls(**{k.decode(): int(v) for k, v in raw.items() if k.decode() in names})

    def to_hash(self) -> dict[str, int]:
        return asdict(self)


def load(store: Store, sk: ShardKeys) -> tuple[Checkpoint, dict[bytes, Open]]:
    """A shard's checkpoint and open conversations, as the last step committed them."""
    cp = Checkpoint.from_hash(store.kv.hgetall(sk.expiry))
    opens: dict[bytes, Open] = {}
    for k, v in store.kv.hscan_iter(sk.open, count=_SCAN):
        opens[bytes(k)] = Open.unpack(bytes(v))
    return cp, opens


class Frontier(NamedTuple):
    """What the exporter may do now."""

    upto: int  # every batch below is merged (and may be absorbed)
    watermark: int  # every packet older than this is in a batch below ``upto``
    closed: bool  # the producer closed the run: ``upto`` is its last batch
    gone: bool  # the producer stopped without closing it (killed, aborted)
    enqueued: int


def frontier(store: Store, keys: RunKeys, upto: int) -> Frontier | None:
    """The batches merged from ``upto`` on without a gap, and the watermark behind them; None
    when the run is gone. Read in this order: the producer's frontier, then the pending
    batches (a batch the frontier already covers is in the zset by then)."""
    kv = store.kv
    raw = kv.hgetall(keys.meta)
    if not raw:
        return None
    meta = CaptureMeta.from_hash(raw)
    alive = bool(kv.exists(keys.lock))
    pending = {int(s): int(ts) for s, ts in kv.zrange(keys.pending, 0, -1, withscores=True)}
    end = meta.upto
    new = max(upto, min(meta.done_below, end))  # every batch below done_below is merged
    if end > new:
        seqs = range(new, min(end, new + _STEP_BATCHES))
        for seq, done in zip(seqs, kv.smismember(keys.done, [str(q) for q in seqs]), strict=True):
            if not done:
                break
            new = seq + 1
    closed = meta.closed
    gone = not closed and (meta.state is StoredState.ABORTED or not alive)
    if (closed or gone) and new >= end:
        return Frontier(new, END, closed, gone, meta.enqueued)
    mark = END if closed else (meta.frontier_ns or 0)
    waiting = [ts for seq, ts in pending.items() if seq >= new]
    if waiting:
        mark = min(mark, min(waiting))
    return Frontier(new, min(mark, END - 1), closed, gone, meta.enqueued)


def absorbed(store: Store, sk: ShardKeys, seqs: range) -> tuple[Iterator[Entry], list[str]]:
    """The segments batches ``seqs`` left in shard ``sk``, and the hash fields holding them."""
    kv = store.kv
    counts = kv.hmget(sk.segments, [str(q) for q in seqs]) if len(seqs) else []
    names: list[str] = []
    for q, c in zip(seqs, counts, strict=True):
        names.append(str(q))
        names += [f"{q}:{i}" for i in range(int(c or 0))]

    def entries() -> Iterator[Entry]:
        chunk_names = [n for n in names if ":" in n]
        for i in range(0, len(chunk_names), 64):
            for raw in kv.hmget(sk.segments, chunk_names[i : i + 64]):
                if isinstance(raw, bytes):
                    yield from decode_chunk(raw)

    return entries(), names


def commit(
    store: Store,
    sk: ShardKeys,
    cp: Checkpoint,
    changed: dict[bytes, bytes],
    finished: list[bytes],
    segment_fields: list[str],
) -> bool:
    """One step of shard ``sk``, atomically; False when the run is gone."""
    with store.kv.pipeline(transaction=True) as p:
        p.exists(sk.live)
        if changed:
            p.hset(sk.open, mapping=changed)
        if finished:
            p.hdel(sk.open, *finished)
        if segment_fields:
            p.hdel(sk.segments, *segment_fields)
        p.hset(sk.expiry, mapping=cp.to_hash())
        res = p.execute()
    if not res[0]:  # the run was deleted meanwhile: drop what this step wrote
        store.kv.delete(sk.open, sk.expiry, sk.segments)
        return False
    return True


def save_checkpoint(store: Store, sk: ShardKeys, cp: Checkpoint) -> None:
    """Store ``cp`` alone (a rotation, an IPFIX send)."""
    store.kv.hset(sk.expiry, mapping=cp.to_hash())


def trim_pending(store: Store, keys: RunKeys, below: int) -> None:
    """Forget the pending batches every shard has absorbed."""
    old = [m for m in store.kv.zrange(keys.pending, 0, -1) if int(m) < below]
    if old:
        store.kv.zrem(keys.pending, *old)


def left(store: Store, keys: RunKeys, meta: CaptureMeta) -> RecordsLeft | None:
    """The run's records that have left and are open; None when they stay in Redis."""
    out = records_out(meta)
    if out is None:
        return None
    sks = keys.all_shards()
    with store.kv.pipeline(transaction=False) as p:
        for sk in sks:
            p.hgetall(sk.expiry)
            p.hlen(sk.open)
        res = p.execute()
    cps = [Checkpoint.from_hash(res[2 * i]) for i in range(len(sks))]
    return RecordsLeft(
        to=out.where,
        records=sum(c.records for c in cps),
        packets=sum(c.packets for c in cps),
        bytes=sum(c.bytes for c in cps),
        files=sum(c.files for c in cps),
        open=sum(int(res[2 * i + 1]) for i in range(len(sks))),
        watermark_ns=min((c.watermark for c in cps), default=0),
        late_packets=meta.late_packets,
    )
