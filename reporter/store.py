"""Reading captures back from Redis: names, status, flows and rankings.

Top-N by bytes reads the ranking sorted sets (no scan); every other question streams the flow
hash with HSCAN, so memory stays proportional to what is kept, not to the table.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator

from redis import Redis
from rq.registry import FailedJobRegistry

from models.capture import BucketCount, CaptureInfo, CaptureState, CaptureStatus
from models.errors import CaptureStateError
from models.flows import NO_FIRST, FlowKey, FlowStats
from models.keys import CAPTURES, RunKeys
from models.report import Report


def _s(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def run_of(conn: Redis, name: str) -> RunKeys:
    """The keys of capture ``name``'s current run; CaptureStateError if there is none."""
    run = _s(conn.hget(CAPTURES, name))
    if run is None:
        raise CaptureStateError(f"no capture named {name!r}; `reporter captures` lists them")
    return RunKeys(run)


def names(conn: Redis) -> list[str]:
    return sorted(filter(None, (_s(k) for k in conn.hkeys(CAPTURES))))


def failed_batches(conn: Redis, queue: str, run: str, limit: int = 20) -> list[str]:
    """'job id: last line of its error' for failed jobs of ``run`` in ``queue``."""
    from deploy.queueing import make_queue  # rq objects only where needed

    q = make_queue(conn, queue)
    reg = FailedJobRegistry(queue=q)
    out = []
    prefix = f"fh-{run}-"
    for jid in reg.get_job_ids():
        if not jid.startswith(prefix):
            continue
        job = q.fetch_job(jid)
        reason = ""
        if job is not None:
            res = job.latest_result()
            exc = (res.exc_string if res is not None else None) or ""
            reason = exc.strip().splitlines()[-1] if exc.strip() else "failed"
        out.append(f"{jid}: {reason}")
        if len(out) >= limit:
            break
    return out


def status(conn: Redis, name: str) -> CaptureStatus:
    keys = run_of(conn, name)
    raw_info = conn.get(keys.info)
    if raw_info is None:
        raise CaptureStateError(f"capture {name!r} has no record (deleted while being read?)")
    info = CaptureInfo.model_validate_json(raw_info)
    with conn.pipeline(transaction=False) as p:
        p.hgetall(keys.meta)
        p.hgetall(keys.totals)
        p.scard(keys.done)
        p.lrange(keys.warnings, 0, 50)
        meta_raw, tot_raw, done, warns = p.execute()
    meta = {k.decode(): v.decode() for k, v in meta_raw.items()}
    tot = {k.decode(): int(v) for k, v in tot_raw.items()}
    failures = failed_batches(conn, info.queue, keys.run)
    buckets: dict[str, BucketCount] = {}
    for k, v in tot.items():
        if k.startswith("nc:") and k.endswith(":packets"):
            b = k[3:-8]
            buckets[b] = BucketCount(packets=v, bytes=tot.get(f"nc:{b}:bytes", 0))
    st = meta.get("state", "submitting")
    if st == "complete":
        state = CaptureState.COMPLETE
    elif st == "aborted":
        state = CaptureState.ABORTED
    elif failures:
        state = CaptureState.FAILED
    elif st == "processing":
        state = CaptureState.PROCESSING
    else:
        state = CaptureState.SUBMITTING
    warnings = [w.decode() for w in warns]
    if meta.get("error"):
        warnings.insert(0, meta["error"])
    total = meta.get("total_batches")
    return CaptureStatus(
        name=name,
        run=keys.run,
        state=state,
        created_ns=info.created_ns,
        sources=info.sources,
        batches_enqueued=int(meta.get("enqueued", 0)),
        batches_done=int(done),
        batches_failed=len(failures),
        total_batches=int(total) if total is not None else None,
        packets=tot.get("packets", 0),
        bytes=tot.get("bytes", 0),
        counted_packets=tot.get("counted_packets", 0),
        counted_bytes=tot.get("counted_bytes", 0),
        flows=tot.get("flows", 0),
        not_counted=buckets,
        first_ns=tot.get("first_ns"),
        last_ns=tot.get("last_ns"),
        warnings=warnings,
        failures=failures,
        elapsed_s=(int(meta.get("completed_ns", time.time_ns())) - info.created_ns) / 1e9,
    )


def iter_flows(
    conn: Redis, keys: RunKeys, count: int = 2000
) -> Iterator[tuple[FlowKey, FlowStats]]:
    """Every conversation of the run (HSCAN: constant memory in Redis and here)."""
    for k, v in conn.hscan_iter(keys.flows, count=count):
        yield FlowKey.unpack(k), FlowStats.unpack(v)


def _ranked(conn: Redis, zkey: str, n: int) -> list[bytes]:
    """Members of the n highest scores, plus every member tied with the n-th."""
    head: list[tuple[bytes, float]] = conn.zrevrange(zkey, n - 1, n - 1, withscores=True)  # type: ignore[assignment]
    if not head:
        return conn.zrevrange(zkey, 0, -1)  # type: ignore[return-value]
    return conn.zrevrangebyscore(zkey, "+inf", head[0][1])  # type: ignore[return-value]


def top_conversations(conn: Redis, keys: RunKeys, n: int) -> list[tuple[FlowKey, FlowStats]]:
    """Candidates for the top ``n`` conversations by bytes (ties at the boundary included)."""
    members = _ranked(conn, keys.rank_bi, n)
    vals = conn.hmget(keys.flows, members) if members else []
    pairs = zip(members, vals, strict=True)
    return [(FlowKey.unpack(m), FlowStats.unpack(v)) for m, v in pairs if isinstance(v, bytes)]


def top_directions(conn: Redis, keys: RunKeys, n: int) -> list[tuple[FlowKey, FlowStats, int]]:
    """Candidates for the top ``n`` unidirectional flows by bytes: (key, stats, direction).

    A direction is never larger than its conversation, so walking the conversation ranking
    from the top can stop at the first conversation smaller than the n-th largest direction
    seen so far: every flow at least that large (ties included) has been collected.
    """
    out: list[tuple[FlowKey, FlowStats, int]] = []
    best: list[int] = []  # min-heap of the n largest direction sizes so far
    page = max(n, 256)
    start = 0
    while True:
        members: list[tuple[bytes, float]] = conn.zrevrange(  # type: ignore[assignment]
            keys.rank_bi, start, start + page - 1, withscores=True
        )
        if not members:
            return out
        vals = conn.hmget(keys.flows, [m for m, _ in members])
        for (m, score), v in zip(members, vals, strict=True):
            if len(best) == n and score < best[0]:
                return out
            if not isinstance(v, bytes):
                continue
            key, st = FlowKey.unpack(m), FlowStats.unpack(v)
            for d, b, p in ((0, st.bytes_ab, st.pkts_ab), (1, st.bytes_ba, st.pkts_ba)):
                if p:
                    out.append((key, st, d))
                    if len(best) < n:
                        heapq.heappush(best, b)
                    elif b > best[0]:
                        heapq.heapreplace(best, b)
        start += page


def load_report(conn: Redis, keys: RunKeys) -> Report | None:
    raw = conn.get(keys.report)
    return Report.model_validate_json(raw) if raw is not None else None


def first_ns_or_none(v: int) -> int | None:
    return None if v == NO_FIRST else v
