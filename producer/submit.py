"""``producer submit``: stream traces into batches, enqueue one job per batch, with backpressure.

The producer never dissects: it forwards raw records. At most ``max_in_flight`` batches are
enqueued but not yet merged, so Redis memory stays bounded whatever the size of the trace.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from redis import Redis
from rq import Queue

from deploy.queueing import enqueue_batch, enqueue_report
from models.batch import BatchBuilder
from models.capture import BatchRef, CaptureInfo
from models.errors import CaptureError, CaptureStateError, TruncatedCaptureError
from models.keys import CAPTURES, NAME_RE, RunKeys
from models.settings import Settings
from producer.capture import open_capture
from reporter.store import failed_batches

log = logging.getLogger(__name__)
_CLOSE = resources.files(__package__).joinpath("close.lua").read_text()


@dataclass
class Progress:
    """What a progress display needs; updated in place and passed to the callback."""

    source: str = ""
    position: int = 0
    size: int = 0
    packets: int = 0
    bytes: int = 0
    batches: int = 0
    in_flight: int = 0
    waiting: bool = False
    warnings: list[str] = field(default_factory=list)


ProgressFn = Callable[[Progress], None]


def default_name(sources: Sequence[str]) -> str:
    """The capture name for ``sources``: the first file's stem without compression suffixes."""
    name = Path(sources[0]).name
    for suffix in (".gz", ".bz2", ".xz", ".pcapng", ".pcap", ".cap", ".dmp"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip("._-")
    return name[:100] or "capture"


def delete_run(conn: Redis, keys: RunKeys) -> None:
    """Remove every key of a run. Queued jobs of the run then find it gone and do nothing."""
    conn.delete(*keys.all_fixed())
    batch = list(conn.scan_iter(keys.batch_pattern(), count=1000))
    for i in range(0, len(batch), 1000):
        conn.delete(*batch[i : i + 1000])


def register(
    conn: Redis, name: str, sources: Sequence[str], settings: Settings, replace: bool
) -> RunKeys:
    """Create a new run for ``name``; refuse an existing name unless ``replace``."""
    if not NAME_RE.match(name):
        raise CaptureStateError(
            f"invalid capture name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)"
        )
    keys = RunKeys(secrets.token_hex(8))
    info = CaptureInfo(
        name=name,
        run=keys.run,
        sources=[str(s) for s in sources],
        created_ns=time.time_ns(),
        batch_packets=settings.packets_per_batch,
        queue=settings.queue,
        engine=settings.engine,
    )
    with conn.pipeline() as p:
        p.set(keys.info, info.model_dump_json())
        p.hset(keys.meta, mapping={"state": "submitting", "enqueued": 0})
        p.execute()
    if conn.hsetnx(CAPTURES, name, keys.run):
        return keys
    if not replace:
        conn.delete(keys.info, keys.meta)
        raise CaptureStateError(
            f"a capture named {name!r} already exists: pass --replace to overwrite it, "
            "or --name to choose another name"
        )
    old = conn.hget(CAPTURES, name)
    conn.hset(CAPTURES, name, keys.run)
    if old is not None:
        delete_run(conn, RunKeys(old.decode() if isinstance(old, bytes) else old))
    return keys


def close_run(conn: Redis, keys: RunKeys, total_batches: int) -> int:
    """Record that all ``total_batches`` are enqueued. Returns 1 when the caller must enqueue the
    report (every batch was already merged), 0 otherwise, -1 if the run no longer exists."""
    script = conn.register_script(_CLOSE)
    return int(script(keys=[keys.done, keys.meta, keys.finalized], args=[total_batches]))


class _Backpressure:
    """Blocks until fewer than ``limit`` batches of the run are enqueued but not merged."""

    def __init__(self, conn: Redis, keys: RunKeys, queue: str, limit: int) -> None:
        self.conn, self.keys, self.queue, self.limit = conn, keys, queue, limit
        self.failed = 0
        self._failed_checked = 0.0

    def in_flight(self, enqueued: int) -> int:
        now = time.monotonic()
        if now - self._failed_checked > 2.0:
            self.failed = len(failed_batches(self.conn, self.queue, self.keys.run, limit=10**6))
            self._failed_checked = now
        return enqueued - int(self.conn.scard(self.keys.done)) - self.failed

    def wait(self, enqueued: int, prog: Progress, on_progress: ProgressFn | None) -> None:
        delay = 0.005
        prog.in_flight = self.in_flight(enqueued)
        while prog.in_flight >= self.limit:
            prog.waiting = True
            if on_progress:
                on_progress(prog)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            prog.in_flight = self.in_flight(enqueued)
        prog.waiting = False


def submit(
    conn: Redis,
    queue: Queue,
    sources: Sequence[str],
    name: str,
    settings: Settings,
    replace: bool = False,
    on_progress: ProgressFn | None = None,
) -> tuple[RunKeys, Progress]:
    """Read ``sources`` in order into one capture ``name``; return its keys and final progress.

    Every source is opened (header checked) before anything is created in Redis, so a bad path
    fails without leaving a capture behind. A truncated file contributes its complete records
    and a warning. Any other read error, or an interrupt, marks the run aborted and re-raises.
    """
    for src in sources:
        with open_capture(src):
            pass
    keys = register(conn, name, sources, settings, replace)
    prog = Progress()
    bp = _Backpressure(conn, keys, settings.queue, settings.max_in_flight)
    builder = BatchBuilder()
    seq = 0
    per_batch = settings.packets_per_batch

    def flush() -> None:
        nonlocal builder, seq
        if builder.count == 0:
            return
        bp.wait(seq, prog, on_progress)
        ref = BatchRef(run=keys.run, seq=seq, packets=builder.count, engine=settings.engine)
        with conn.pipeline() as p:
            p.set(keys.batch(seq), builder.payload(settings.compress))
            p.hincrby(keys.meta, "enqueued", 1)
            p.execute()
        enqueue_batch(queue, ref, settings.job_timeout, settings.retries)
        seq += 1
        prog.batches = seq
        builder = BatchBuilder()

    try:
        for src in sources:
            prog.source = str(src)
            try:
                with open_capture(src) as cap:
                    prog.size = cap.size
                    for n, rec in enumerate(cap, 1):
                        builder.add(rec)
                        if builder.count >= per_batch or builder.size >= settings.batch_bytes:
                            prog.packets += builder.count
                            prog.bytes += builder.wire_bytes
                            flush()
                        if not n & 0x3FF:
                            prog.position = cap.position
                            if on_progress:
                                on_progress(prog)
                    prog.position = cap.position
            except TruncatedCaptureError as exc:
                prog.warnings.append(str(exc))
                conn.rpush(keys.warnings, str(exc))
            prog.packets += builder.count
            prog.bytes += builder.wire_bytes
            flush()
    except (CaptureError, KeyboardInterrupt) as exc:
        msg = str(exc) if isinstance(exc, CaptureError) else "interrupted"
        conn.hset(keys.meta, mapping={"state": "aborted", "error": f"submit aborted: {msg}"})
        raise
    if close_run(conn, keys, seq) == 1:
        enqueue_report(queue, keys.run)
    if on_progress:
        on_progress(prog)
    return keys, prog
