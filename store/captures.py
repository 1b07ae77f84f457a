"""The one home of a capture's state: registry, facts, meta, locks, status, lost parts.

Every read or write of ``CAPTURES``, a run's ``info``, ``meta``, ``done``, ``finalized``,
``report`` and ``warnings`` goes through here (the merge of table parts is ``workers/merge.py``;
reading tables back is :mod:`flowherd.store.tables`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis import Redis

from flowherd.models.capture import BucketCount, CaptureInfo, CaptureState, CaptureStatus
from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import CAPTURES, NAME_RE, STORE_ID, PayloadKeys, RunKeys, job_prefix
from flowherd.models.report import Report
from flowherd.models.settings import Settings
from flowherd.models.state import CaptureMeta, MetaField, StoredState
from flowherd.store.backend import Store
from flowherd.store.expiry import left as records_left
from flowherd.store.tables import sum_totals

_CLOSE = resources.files(__package__).joinpath("close.lua").read_text()
_FINISH = resources.files(__package__).joinpath("finish.lua").read_text()
_COMPACT = resources.files(__package__).joinpath("compact.lua").read_text()
#: done markers kept below the newest merged batch: a part of a recent batch lost by a failover
#: is still found by its missing marker (``lost_parts``)
KEEP_DONE_MARKERS = 1024
_FAILED_REGISTRY = "rq:failed:{queue}"  # rq.registry.FailedJobRegistry's key


def _s(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def store_id(store: Store) -> str:
    """This store's id (created by the first caller)."""
    store.kv.set(STORE_ID, secrets.token_hex(8), nx=True)
    return _s(store.kv.get(STORE_ID)) or ""


def names(store: Store) -> list[str]:
    return sorted(filter(None, (_s(k) for k in store.kv.hkeys(CAPTURES))))


def run_id(store: Store, name: str) -> str:
    run = _s(store.kv.hget(CAPTURES, name))
    if run is None:
        raise CaptureStateError(f"no capture named {name!r}; `reporter captures` lists them")
    return run


def load_info(store: Store, keys: RunKeys, name: str = "") -> CaptureInfo:
    raw = store.kv.get(keys.info)
    if raw is None:
        raise CaptureStateError(
            f"capture {name or keys.run!r} has no record (replaced or deleted?)"
        )
    return CaptureInfo.model_validate_json(raw)


def run_of(store: Store, name: str) -> RunKeys:
    """The keys of capture ``name``'s current run; CaptureStateError if there is none."""
    run = run_id(store, name)
    return RunKeys(run, load_info(store, RunKeys(run), name).shards)


def load(store: Store, name: str) -> tuple[RunKeys, CaptureInfo, CaptureMeta]:
    """Keys, facts and state of capture ``name``."""
    run = run_id(store, name)
    info = load_info(store, RunKeys(run), name)
    keys = RunKeys(run, info.shards)
    return keys, info, read_meta(store, keys)


def exists(store: Store, keys: RunKeys) -> bool:
    """The run still exists (not replaced or deleted)."""
    return bool(store.kv.exists(keys.meta))


def read_meta(store: Store, keys: RunKeys) -> CaptureMeta:
    return CaptureMeta.from_hash(store.kv.hgetall(keys.meta))


def set_meta(store: Store, keys: RunKeys, **fields: Any) -> None:
    """Write fields of the run's meta hash (names from :class:`MetaField`); None deletes one."""
    put = {k: (v.value if isinstance(v, StoredState) else v) for k, v in fields.items()}
    drop = [k for k, v in put.items() if v is None]
    with store.kv.pipeline() as p:
        if any(v is not None for v in put.values()):
            p.hset(keys.meta, mapping={k: v for k, v in put.items() if v is not None})
        if drop:
            p.hdel(keys.meta, *drop)
        p.execute()


def register(
    store: Store, name: str, sources: Sequence[str], settings: Settings, replace: bool
) -> RunKeys:
    """Create a new run for ``name``; refuse an existing name unless ``replace``."""
    if not NAME_RE.match(name):
        raise CaptureStateError(
            f"invalid capture name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)"
        )
    keys = RunKeys(secrets.token_hex(8), store.default_shards(settings.shards))
    info = CaptureInfo(
        name=name,
        run=keys.run,
        sources=[str(s) for s in sources],
        created_ns=time.time_ns(),
        batch_packets=settings.packets_per_batch,
        queue=settings.queue,
        engine=settings.engine,
        window_ns=settings.window_ns,
        keep_windows=settings.keep_windows or 0,
        shards=keys.shards,
    )
    kv = store.kv
    with kv.pipeline() as p:
        for sk in keys.all_shards():
            p.set(sk.live, "1")
        p.execute()
    with kv.pipeline() as p:
        p.set(keys.info, info.model_dump_json())
        p.hset(
            keys.meta,
            mapping={MetaField.STATE: StoredState.SUBMITTING.value, MetaField.ENQUEUED: 0},
        )
        p.execute()
    if kv.hsetnx(CAPTURES, name, keys.run):
        return keys
    if not replace:
        delete_run(store, keys)
        raise CaptureStateError(
            f"a capture named {name!r} already exists: pass --replace to overwrite it, "
            "or --name to choose another name"
        )
    old = _s(kv.hget(CAPTURES, name))
    kv.hset(CAPTURES, name, keys.run)
    if old is not None:
        try:
            shards = load_info(store, RunKeys(old)).shards
        except CaptureStateError:
            shards = 1
        delete_run(store, RunKeys(old, shards))
    return keys


def _delete_matching(conn: Any, pattern: str) -> None:
    found = list(conn.scan_iter(pattern, count=1000))
    for key in found:  # one by one: on a cluster the keys of a pattern span slots
        conn.delete(key)


def delete_run(store: Store, keys: RunKeys) -> None:
    """Remove every key of a run (store and queue). Queued jobs then find it gone."""
    kv = store.kv
    kv.delete(*keys.fixed())
    for sk in keys.all_shards():
        kv.delete(*sk.fixed())  # the live marker first: a merge running now does nothing
    for pattern in keys.window_patterns():
        _delete_matching(kv, pattern)
    _delete_matching(store.queue, PayloadKeys(keys.run).pattern())


def close_run(store: Store, keys: RunKeys, total_batches: int) -> int:
    """Record that all ``total_batches`` are enqueued. Returns 1 when the caller must enqueue the
    report (every batch was already merged), 0 otherwise, -1 if the run no longer exists."""
    script = store.kv.register_script(_CLOSE)
    return int(script(keys=[keys.done, keys.meta, keys.finalized], args=[total_batches]))


def finish_batch(store: Store, keys: RunKeys, seq: int) -> int:
    """Count batch ``seq`` as merged (every shard part is): -1 run gone, 0 counted before,
    1 counted now, 2 counted and the capture is complete (the caller enqueues the report)."""
    script = store.kv.register_script(_FINISH)
    return int(script(keys=[keys.done, keys.meta, keys.finalized], args=[seq]))


def done_below(store: Store, keys: RunKeys) -> int:
    """Every batch below this is merged and no longer listed in ``done`` (:func:`compact_done`)."""
    return int(store.kv.hget(keys.meta, MetaField.DONE_BELOW) or 0)


def batches_done(store: Store, keys: RunKeys) -> int:
    with store.kv.pipeline(transaction=False) as p:
        p.scard(keys.done)
        p.hget(keys.meta, MetaField.DONE_BELOW)
        n, below = p.execute()
    return int(n) + int(below or 0)


def done_seqs(store: Store, keys: RunKeys) -> set[int]:
    below = done_below(store, keys)
    return set(range(below)) | {int(m) for m in store.kv.smembers(keys.done)}


def is_done(store: Store, keys: RunKeys, seq: int) -> bool:
    return seq < done_below(store, keys) or bool(store.kv.sismember(keys.done, str(seq)))


def parts_done(store: Store, keys: RunKeys) -> list[int]:
    """Batches whose part is merged, per shard."""
    with store.kv.pipeline(transaction=False) as p:
        for sk in keys.all_shards():
            p.scard(sk.done)
            p.get(sk.done_below)
        res = p.execute()
    return [int(res[i]) + int(res[i + 1] or 0) for i in range(0, len(res), 2)]


def compact_done(store: Store, keys: RunKeys, keep: int = KEEP_DONE_MARKERS) -> int:
    """Forget the done markers of all but the newest ``keep`` batches merged without a gap: a
    live capture that runs for weeks then holds a bounded number of them. Counting, the merge
    and the exactly-once checks treat every batch below the mark as merged. Returns the mark."""
    script = store.kv.register_script(_COMPACT)
    below = int(script(keys=[keys.done, keys.meta], args=["run", keep]))
    if below > 0:
        for sk in keys.all_shards():
            script(keys=[sk.done, sk.done_below, sk.live], args=["shard", below])
    return below


def lost_parts(store: Store, keys: RunKeys, done: int | None = None) -> dict[int, list[int]]:
    """``{seq: [shard, ...]}``: parts of batches the run counts as merged that their shard no
    longer has. A failover loses the writes a master acknowledged but had not yet shipped to
    the replica that took over; the done-markers say which parts those were."""
    n = batches_done(store, keys) if done is None else done
    counts = parts_done(store, keys)
    short = [s for s, c in enumerate(counts) if c < n]
    if not short:
        return {}
    all_done = done_seqs(store, keys)
    out: dict[int, list[int]] = {}
    for s in short:
        sk = keys.shard(s)
        have = {int(m) for m in store.kv.smembers(sk.done)}
        have |= set(range(int(store.kv.get(sk.done_below) or 0)))
        for seq in all_done - have:
            out.setdefault(seq, []).append(s)
    return out


def reopen(store: Store, keys: RunKeys, seqs: Sequence[int]) -> None:
    """Uncount ``seqs`` (their parts are to be merged again) and let the report be redone."""
    if not seqs:
        return
    kv = store.kv
    with kv.pipeline() as p:
        p.srem(keys.done, *[str(s) for s in seqs])
        p.delete(keys.finalized)  # one key per DEL: a cluster pipeline takes no more
        p.delete(keys.report)
        p.hset(keys.meta, MetaField.STATE, StoredState.PROCESSING.value)
        p.hdel(keys.meta, MetaField.COMPLETED_NS)
        p.execute()


def add_warning(store: Store, keys: RunKeys, message: str) -> None:
    store.kv.rpush(keys.warnings, message)


def warnings(store: Store, keys: RunKeys, limit: int = -1) -> list[str]:
    return [_s(w) or "" for w in store.kv.lrange(keys.warnings, 0, limit)]


def store_report(store: Store, keys: RunKeys, report: Report) -> None:
    with store.kv.pipeline() as p:
        p.set(keys.report, report.model_dump_json())
        if report.complete:
            p.hset(
                keys.meta,
                mapping={
                    MetaField.STATE: StoredState.COMPLETE.value,
                    MetaField.COMPLETED_NS: time.time_ns(),
                },
            )
        p.execute()


def load_report(store: Store, keys: RunKeys) -> Report | None:
    raw = store.kv.get(keys.report)
    return Report.model_validate_json(raw) if raw is not None else None


def name_of_run(store: Store, run: str) -> str | None:
    """The capture name whose current run is ``run`` (HSCAN: the registry may be long)."""
    for k, v in store.kv.hscan_iter(CAPTURES, count=1000):
        if _s(v) == run:
            return _s(k)
    return None


def failed_job_ids(queue: Redis, queue_name: str, run: str, limit: int = 20) -> list[str]:
    """Ids of the run's jobs in RQ's failed registry of ``queue_name``, at most ``limit``.

    The registry is filtered by the run's job-id prefix on the server (ZSCAN MATCH), so the
    client reads only the run's own failures, however many other captures have."""
    out: list[str] = []
    key = _FAILED_REGISTRY.format(queue=queue_name)
    for member, _ in queue.zscan_iter(key, match=f"{job_prefix(run)}*", count=1000):
        out.append(_s(member) or "")
        if len(out) >= limit:
            break
    return out


def failed_batches(queue: Redis, queue_name: str, run: str, limit: int = 20) -> list[str]:
    """'job id: last line of its error' for failed jobs of ``run`` in ``queue_name``."""
    from flowherd.deploy.queueing import make_queue  # rq objects only where needed

    q = make_queue(queue, queue_name)
    out = []
    for jid in failed_job_ids(queue, queue_name, run, limit):
        job = q.fetch_job(jid)
        reason = ""
        if job is not None:
            res = job.latest_result()
            exc = (res.exc_string if res is not None else None) or ""
            reason = exc.strip().splitlines()[-1] if exc.strip() else "failed"
        out.append(f"{jid}: {reason}")
    return out


def status(store: Store, name: str, detail: bool = True) -> CaptureStatus:
    """The capture's state and totals. ``detail=False`` (progress polls) skips the failures'
    error texts and the search for lost parts; the counts are always exact."""
    run = run_id(store, name)
    info = load_info(store, RunKeys(run), name)
    keys = RunKeys(run, info.shards)
    with store.kv.pipeline(transaction=False) as p:
        p.hgetall(keys.meta)
        p.scard(keys.done)
        p.lrange(keys.warnings, 0, 50)
        for sk in keys.all_shards():
            p.hgetall(sk.totals)
        meta_raw, done, warns, *shard_totals = p.execute()
    meta = CaptureMeta.from_hash(meta_raw)
    done = int(done) + meta.done_below
    tot = sum_totals(shard_totals)
    if detail:
        failures = failed_batches(store.queue, info.queue, run)
        lost = lost_parts(store, keys, int(done)) if info.shards > 1 or done else {}
    else:
        failures = failed_job_ids(store.queue, info.queue, run)
        lost = {}
    buckets: dict[str, BucketCount] = {}
    for k, v in tot.items():
        if k.startswith("nc:") and k.endswith(":packets"):
            b = k[3:-8]
            buckets[b] = BucketCount(packets=v, bytes=tot.get(f"nc:{b}:bytes", 0))
    if meta.state is StoredState.COMPLETE and not lost:
        state = CaptureState.COMPLETE
    elif meta.state is StoredState.ABORTED:
        state = CaptureState.ABORTED
    elif failures:
        state = CaptureState.FAILED
    elif meta.state in (StoredState.PROCESSING, StoredState.COMPLETE):
        state = CaptureState.PROCESSING
    else:
        state = CaptureState.SUBMITTING
    warns_txt = [_s(w) or "" for w in warns]
    if meta.error:
        warns_txt.insert(0, meta.error)
    return CaptureStatus(
        name=name,
        run=run,
        state=state,
        created_ns=info.created_ns,
        sources=info.sources,
        batches_enqueued=meta.enqueued,
        batches_done=int(done),
        batches_failed=len(failures),
        total_batches=meta.total_batches,
        packets=tot.get("packets", 0),
        bytes=tot.get("bytes", 0),
        counted_packets=tot.get("counted_packets", 0),
        counted_bytes=tot.get("counted_bytes", 0),
        flows=tot.get("flows", 0),
        not_counted=buckets,
        first_ns=tot.get("first_ns"),
        last_ns=tot.get("last_ns"),
        warnings=warns_txt,
        failures=failures,
        parts_done=parts_done(store, keys) if detail and info.shards > 1 else [],
        lost_parts=[f"batch {q} shard {s}" for q, ss in sorted(lost.items()) for s in ss],
        elapsed_s=((meta.completed_ns or time.time_ns()) - info.created_ns) / 1e9,
        kernel_packets=meta.kernel_packets,
        kernel_drops=meta.kernel_drops,
        producer_drops=meta.producer_drops,
        members=meta.members,
        records_left=records_left(store, keys, meta),
    )
