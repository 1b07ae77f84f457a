"""The lock of the one producer writing a run (submit, sniff, ``--resume``, ``retry``)."""

from __future__ import annotations

import secrets
import time

from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import RunKeys
from flowherd.store.backend import Store


def _s(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


#: seconds a writer's lock outlives its last renewal (a writer renews it every third of that)
LOCK_TTL_S = 15.0


class RunLock:
    """The one producer writing a run: ``submit``/``sniff`` while they run, ``--resume`` and
    ``retry``. A lease renewed by :meth:`renew`; a killed holder's lease lapses ``ttl`` seconds
    after its last renewal. Raises :class:`CaptureStateError` when another process holds it."""

    #: who holds the lock, for the message of a second taker
    holder = "another producer (submit, sniff, --resume or retry)"
    doing = "written"

    def __init__(self, store: Store, keys: RunKeys, name: str, ttl: float = LOCK_TTL_S) -> None:
        self.store, self.keys, self.name, self.ttl = store, keys, name, ttl
        self.token = secrets.token_hex(8)
        self._renewed = 0.0
        self.key = keys.lock

    def acquire(self) -> RunLock:
        if not self.store.kv.set(self.key, self.token, nx=True, px=int(self.ttl * 1000)):
            left = max(int(self.store.kv.pttl(self.key)), 0) / 1000
            raise CaptureStateError(
                f"capture {self.name!r} is being {self.doing} by {self.holder}: wait for it to "
                f"end; if it was killed, its lock lapses in {left:.0f}s"
            )
        self._renewed = time.monotonic()
        return self

    def renew(self) -> None:
        """Extend the lease (cheap to call often: it writes at most every ttl / 3)."""
        now = time.monotonic()
        if now - self._renewed < self.ttl / 3:
            return
        self._renewed = now
        if _s(self.store.kv.get(self.key)) == self.token:
            self.store.kv.pexpire(self.key, int(self.ttl * 1000))

    def release(self) -> None:
        if _s(self.store.kv.get(self.key)) == self.token:
            self.store.kv.delete(self.key)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class ExportLock(RunLock):
    """The one record exporter of a run (``reporter records``)."""

    holder = "another record exporter (reporter records)"
    doing = "exported"

    def __init__(self, store: Store, keys: RunKeys, name: str, ttl: float = LOCK_TTL_S) -> None:
        super().__init__(store, keys, name, ttl)
        self.key = keys.export_lock
