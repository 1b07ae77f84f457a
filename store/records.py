"""Flow records of a run with timeouts: segments in, records out (the I/O around
:mod:`flowherd.models.records`).

* A run's timeouts live in its ``meta`` hash (``idle_ns``, ``active_ns``), written by the
  producer before its first batch and never changed: :func:`set_timeouts`, :func:`timeouts_of`.
* Each batch stores its segments per shard, before its merge is counted
  (:func:`write_segments`): one hash field per chunk, ``<seq>:<i>``, and ``<seq>`` holding the
  chunk count, all in one atomic step that does nothing once the run is gone. A retried batch
  writes the same bytes again, and only batches in the run's ``done`` set are read, so every
  batch counts exactly once.
* Once the capture is merged, :func:`build_records` merges the blobs of the done batches
  (k-way, by key, one chunk per blob in memory at a time) and writes the records as a table of
  their own (``ShardKeys.records``: field = packed FlowKey + u64 big-endian start ns, value =
  packed FlowStats; a ranking by bytes). The run's ``records`` key then holds the number of
  batches the records were built from; :mod:`flowherd.store.tables` reads the records from then on.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator

from flowherd.models.errors import BackendError
from flowherd.models.flows import FlowStats
from flowherd.models.keys import RunKeys, ShardKeys
from flowherd.models.records import Entry, Timeouts, decode_chunk, merge_blobs
from flowherd.models.state import CaptureMeta, MetaField
from flowherd.store.backend import Store
from flowherd.store.captures import done_seqs, set_meta

log = logging.getLogger(__name__)

#: suffix of a record's field after its packed FlowKey: the record's start
START = struct.Struct(">Q")
#: fields written per round trip when storing records
_WRITE_PAGE = 1000

_WRITE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local upto = redis.call('HGET', KEYS[3], 'upto')
if upto and tonumber(ARGV[1]) < tonumber(upto) then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""

_cache: dict[str, Timeouts] = {}


def set_timeouts(store: Store, keys: RunKeys, t: Timeouts) -> None:
    """Record the run's timeouts (before any batch is enqueued)."""
    set_meta(store, keys, **{MetaField.IDLE_NS: t.idle_ns, MetaField.ACTIVE_NS: t.active_ns})


def timeouts_of(store: Store, keys: RunKeys) -> Timeouts | None:
    """The run's timeouts (both 0 when off); None when the run is gone. Cached per run id:
    they never change once its first batch exists."""
    t = _cache.get(keys.run)
    if t is not None:
        return t
    raw = store.kv.hmget(keys.meta, [MetaField.STATE, MetaField.IDLE_NS, MetaField.ACTIVE_NS])
    if raw[0] is None:
        return None
    t = Timeouts(int(raw[1] or 0), int(raw[2] or 0))
    if len(_cache) > 1024:
        _cache.clear()
    _cache[keys.run] = t
    return t


def write_segments(store: Store, keys: RunKeys, seq: int, per_shard: list[list[bytes]]) -> bool:
    """Store batch ``seq``'s chunks, shard by shard; False when the run is gone. A batch the
    record exporter has absorbed already (a job run again) writes nothing
    (:mod:`flowherd.store.expiry`)."""
    script = store.kv.register_script(_WRITE)
    for s, chunks in enumerate(per_shard):
        sk = keys.shard(s)
        args: list[bytes | str | int] = [str(seq), len(chunks)]
        for i, c in enumerate(chunks):
            args += [f"{seq}:{i}", c]
        if int(script(keys=[sk.live, sk.segments, sk.expiry], args=args)) == -1:
            return False
    return True


def _blob(store: Store, sk: ShardKeys, seq: int, chunks: int) -> Iterator[Entry]:
    """The entries of batch ``seq`` in shard ``sk``, one chunk read at a time."""
    for i in range(chunks):
        raw = store.kv.hget(sk.segments, f"{seq}:{i}")
        if not isinstance(raw, bytes):
            raise ValueError(f"chunk {i} of batch {seq}'s segments is missing")
        yield from decode_chunk(raw)


def _build_shard(store: Store, sk: ShardKeys, seqs: list[int], t: Timeouts) -> int:
    kv = store.kv
    rk = sk.records
    for k in rk.all():
        kv.delete(k)
    counts: list[int] = []
    for i in range(0, len(seqs), _WRITE_PAGE):
        page = seqs[i : i + _WRITE_PAGE]
        for q, c in zip(page, kv.hmget(sk.segments, [str(q) for q in page]), strict=True):
            if c is None:  # written before the merge that counted the batch: never absent
                raise BackendError(
                    f"shard {sk.shard} lacks the segments of merged batch {q} (lost by a "
                    "failover?): `producer submit --resume` sends lost batches again"
                )
            counts.append(int(c))
    blobs = [_blob(store, sk, q, n) for q, n in zip(seqs, counts, strict=True) if n]
    n_records = 0
    pending: list[tuple[bytes, FlowStats]] = []

    def flush() -> None:
        with kv.pipeline(transaction=False) as p:
            p.hset(rk.flows, mapping={f: st.pack() for f, st in pending})
            p.zadd(rk.rank_bi, {f: st.bytes for f, st in pending})
            p.execute()
        pending.clear()

    for key, recs in merge_blobs(t, blobs):
        for st in recs:
            pending.append((key + START.pack(st.first), st))
        n_records += len(recs)
        if len(pending) >= _WRITE_PAGE:
            flush()
    if pending:
        flush()
    kv.hset(rk.totals, "flows", n_records)
    return n_records


def build_records(store: Store, keys: RunKeys) -> int | None:
    """Build the run's flow records from the segments of its done batches (again, when built
    before: a batch merged again after a failover has its segments written again too).
    Returns the number of records, or None for a run without timeouts. Idempotent: a second
    build (a repeated report job) writes the same records. :class:`BackendError` when a done
    batch's segments are missing."""
    meta = CaptureMeta.from_hash(store.kv.hgetall(keys.meta))
    t = Timeouts(meta.idle_ns, meta.active_ns)
    if not t or meta.records_out:  # none, or they leave as they expire (reporter records)
        return None
    seqs = sorted(done_seqs(store, keys))
    store.kv.delete(keys.records)  # readers fall back to the conversations meanwhile
    n = sum(_build_shard(store, sk, seqs, t) for sk in keys.all_shards())
    store.kv.set(keys.records, len(seqs))
    log.info("event=records_built run=%s batches=%d records=%d", keys.run, len(seqs), n)
    return n


def records_built(store: Store, keys: RunKeys) -> int | None:
    """The number of batches the run's records were built from; None when not built."""
    raw = store.kv.get(keys.records)
    return int(raw) if raw is not None else None
