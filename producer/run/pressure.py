"""Backpressure on a run's writer: at most ``max_in_flight`` batches enqueued but not merged
(:class:`Backpressure`), and Redis memory below its fill limit, with refusals for want of memory
waited out (:class:`Memory`, :class:`Stall`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from redis import Redis
from redis.exceptions import OutOfMemoryError, ResponseError

from flowherd.models.errors import BackendError
from flowherd.models.keys import RunKeys
from flowherd.store.backend import Store
from flowherd.store.captures import batches_done, failed_job_ids

if TYPE_CHECKING:  # the writer's progress, only named here: the writer imports this module
    from flowherd.producer.run.writer import Progress, ProgressFn

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Fraction of Redis ``maxmemory`` the producer fills at most, and the batches' worth of memory
#: it leaves free at least: room for the merges (which add flows before they delete their
#: payload), RQ's bookkeeping, and the buffers that carry payloads in and out (the producer's
#: SET, the workers' GETs), which Redis counts as used memory too.
MEMORY_FILL = 0.9
MEMORY_RESERVE_BATCHES = 4
#: Seconds the producer waits for Redis memory while none of its batches is in flight and used
#: memory does not go down, before it gives up: then nothing it waits for can free memory.
MEMORY_STALL_S = 30.0


class Backpressure:
    """Blocks until fewer than ``limit`` batches of the run are enqueued but not merged."""

    def __init__(self, store: Store, keys: RunKeys, queue: str, limit: int) -> None:
        self.store, self.keys, self.queue, self.limit = store, keys, queue, limit
        self.failed = 0
        self._failed_checked = 0.0

    def in_flight(self, enqueued: int) -> int:
        done = batches_done(self.store, self.keys)
        now = time.monotonic()
        # failures are looked up only while the window looks full, and at most every 2 s
        if enqueued - done - self.failed >= self.limit and now - self._failed_checked > 2.0:
            ids = failed_job_ids(self.store.queue, self.queue, self.keys.run, limit=self.limit)
            self.failed = len(ids)
            self._failed_checked = now
        return enqueued - done - self.failed

    def wait(self, enqueued: int, prog: Progress, on_progress: ProgressFn | None) -> None:
        delay = 0.005
        prog.in_flight = self.in_flight(enqueued)
        while prog.in_flight >= self.limit:
            prog.waiting, prog.waiting_for = True, "workers"
            if on_progress:
                on_progress(prog)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            prog.in_flight = self.in_flight(enqueued)
        prog.waiting, prog.waiting_for = False, ""


class Memory:
    """Keeps the producer from overfilling a Redis that has a ``maxmemory`` limit.

    With ``maxmemory-policy noeviction`` Redis refuses writes (OOM) once it is full, and a full
    Redis also refuses the workers' merges. So :meth:`room` waits, before a payload is stored,
    while ``used_memory`` plus the payload would leave less than a reserve free (the larger of
    ``1 - MEMORY_FILL`` of ``maxmemory`` and :data:`MEMORY_RESERVE_BATCHES` payloads; both
    read with ``INFO memory``; a user without the INFO permission skips this check), and
    :meth:`call` runs a write and, when Redis answers OOM anyway (another client filled it),
    backs off and runs it again. Repeating is safe: a command refused inside a MULTI discards
    the whole transaction, and a job enqueued again under its fixed id is the same job.

    Both wait as long as it takes while this run has batches in flight, since their merges free
    memory; they raise :class:`BackendError` when used memory has not gone down for
    :data:`MEMORY_STALL_S` seconds while none is in flight, and at once for a payload that
    cannot fit at all.
    """

    def __init__(self, conn: Redis, in_flight: Callable[[], int]) -> None:
        self.conn, self.in_flight = conn, in_flight
        self.info_ok = True

    def usage(self) -> tuple[int, int] | None:
        """(used_memory, maxmemory) in bytes, or None when INFO is not permitted."""
        if not self.info_ok:
            return None
        try:
            info = self.conn.info("memory")
        except ResponseError:  # NoPermissionError: an ACL user without @dangerous
            self.info_ok = False
            log.info("event=memory_check_disabled reason=info_not_permitted")
            return None
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def room(self, need: int, prog: Progress, on_progress: ProgressFn | None) -> None:
        """Wait until a payload of ``need`` bytes fits below the fill limit."""
        usage = self.usage()
        if usage is None or not usage[1]:
            return
        used, limit = usage

        def short() -> bool:
            reserve = max(limit * (1 - MEMORY_FILL), MEMORY_RESERVE_BATCHES * need)
            if need + reserve > limit:
                raise BackendError(
                    f"a batch of {need} bytes cannot fit in Redis maxmemory ({limit} bytes) "
                    "with room to merge it: raise maxmemory or lower FLOWHERD_BATCH_BYTES"
                )
            return used + need + reserve > limit

        if not short():
            return
        stall = Stall()
        while short():
            self._pause(stall, used, limit, prog, on_progress)
            usage = self.usage()
            if usage is None or not usage[1]:
                break
            used, limit = usage
        prog.waiting, prog.waiting_for = False, ""

    def call(self, fn: Callable[[], T], prog: Progress, on_progress: ProgressFn | None) -> T:
        """``fn()``, repeated after a pause for as long as Redis refuses it with OOM."""
        stall: Stall | None = None
        while True:
            try:
                result = fn()
            except OutOfMemoryError:
                stall = stall or Stall()
                usage = self.usage()
                used, limit = usage if usage is not None else (-1, 0)
                log.info("event=redis_oom used=%d maxmemory=%d", used, limit)
                self._pause(stall, used, limit, prog, on_progress)
                continue
            if stall is not None:
                prog.waiting, prog.waiting_for = False, ""
            return result

    def _pause(
        self, stall: Stall, used: int, limit: int, prog: Progress, on_progress: ProgressFn | None
    ) -> None:
        prog.waiting, prog.waiting_for = True, "Redis memory"
        if on_progress:
            on_progress(prog)
        if stall.stuck(used, self.in_flight()):
            shown = f"{used} of maxmemory {limit} bytes" if used >= 0 else "maxmemory reached"
            raise BackendError(
                f"Redis is out of memory ({shown}) and none of this capture's batches is left "
                f"to merge after {MEMORY_STALL_S:.0f}s: raise maxmemory or free memory "
                "(see docs/operations.md)"
            )
        stall.sleep()


class Stall:
    """Backoff and progress tracking of one wait for memory."""

    def __init__(self) -> None:
        self.delay = 0.05
        self.low: int | None = None
        self.since = time.monotonic()

    def stuck(self, used: int, in_flight: int) -> bool:
        now = time.monotonic()
        if in_flight > 0 or (used >= 0 and (self.low is None or used < self.low)):
            self.since = now
            if used >= 0:
                self.low = used if self.low is None else min(self.low, used)
        return now - self.since > MEMORY_STALL_S

    def sleep(self) -> None:
        time.sleep(self.delay)
        self.delay = min(self.delay * 1.5, 1.0)
