"""Helpers shared by the test modules (no test module imports another one).

* waits: :func:`wait_until` polls a condition (tests synchronise on conditions, never on sleeps),
  :func:`wait_for_idle_workers` and :func:`wait_for_queue_drained` on RQ's worker registry;
* processes: :func:`free_port`, :class:`RedisServer` (a private redis-server a test may kill
  and restart), :func:`let_lease_run_out`, :func:`invoke` (``producer`` through click);
* hand-packed capture files: :func:`pcap_bytes` and the pcapng blocks (:func:`shb`,
  :func:`idb`, :func:`epb`, ...).

The pipeline's own helpers (settings, submit, follow, exact tables) are in tests/support/pipeline.py.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
from click.testing import CliRunner, Result
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.worker import BaseWorker

from flowherd.deploy.queueing import make_queue
from flowherd.models.keys import RunKeys

if TYPE_CHECKING:
    from flowherd.producer.run.follow import LocalWorkers

T = TypeVar("T")

# --- waits ----------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    poll: float = 0.01,
    max_poll: float = 0.25,
) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    Polls with a short backoff (``poll`` growing by half each time up to ``max_poll``; equal
    values poll at a fixed rate, to catch a short-lived state); raises AssertionError naming
    ``what`` once ``timeout`` seconds have passed. ``timeout`` is a deadline for a stuck
    condition, not a performance bound: give it generously (CI has two loaded cores).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)
        poll = min(poll * 1.5, max_poll)


def _workers_on(conn: Redis, queue: str) -> list[BaseWorker]:
    return [w for w in Worker.all(connection=conn) if w.queue_names() == [queue]]


def wait_for_idle_workers(
    conn: Redis, queue: str, n: int, pool: LocalWorkers | None = None, timeout: float = 120
) -> None:
    """Until ``n`` RQ workers of ``queue`` are registered and idle (listening for a job);
    ``pool.check()`` on every poll, so a pool that died fails at once."""

    def ready() -> bool:
        if pool is not None:
            pool.check()
        return sum(w.get_state() == "idle" for w in _workers_on(conn, queue)) >= n

    wait_until(ready, timeout, f"{n} idle workers on queue {queue!r}")


def wait_for_queue_drained(
    conn: Redis, queue: str, n: int, pool: LocalWorkers | None = None, timeout: float = 120
) -> None:
    """Until ``queue`` holds no job and its ``n`` workers are all idle again: whatever the
    workers would do with what they were given is done."""

    def drained() -> bool:
        if pool is not None:
            pool.check()
        ws = _workers_on(conn, queue)
        return (
            make_queue(conn, queue).count == 0
            and sum(w.get_state() == "idle" for w in ws) == len(ws) >= n
        )

    wait_until(drained, timeout, f"queue {queue!r} drained and its {n} workers idle")


# --- processes and servers --------------------------------------------------------------------


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port from 23000-29999: below the kernel's ephemeral range (32768 up),
    so no outgoing connection takes it before (or while a test restarts) the server binding it,
    and apart from the local cluster's ports (20000-22767, buses 30000-32767)."""
    rng = random.Random()
    for _ in range(10_000):
        port = rng.randint(23000, 29999)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise AssertionError("no free port in 23000-29999")


class RedisServer:
    """A private redis-server on a fixed port and data directory, for one test.

    Persistence is that of ``deploy/redis.conf`` (append-only file, fsync every second, no
    snapshots); AOF rewrites are off so the incremental file holds every write in order.
    ``kill`` is SIGKILL (what the OS keeps of the AOF survives), ``start`` brings it back on
    the same port with the same data. ``url`` carries ``password`` (and ``user``) when given;
    ``tls`` holds ``(cert, key, ca)`` paths for a TLS-only server.
    """

    def __init__(
        self,
        home: Path,
        *extra: str,
        password: str | None = None,
        user: str = "",
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.dir = home
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra = list(extra)
        self.password, self.user, self.tls = password, user, tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f"{self.user}:{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[2]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def admin_url(self) -> str:
        """The URL of the default user (the ACL tests disable it after setup)."""
        if self.user:
            return self.url.replace(f"{self.user}:{self.password}@", "")
        return self.url

    def start(self, timeout: float = 30) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed")
        args = [exe, "--bind", "127.0.0.1", "--dir", str(self.dir), "--loglevel", "warning"]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        args += ["--auto-aof-rewrite-percentage", "0", "--maxmemory-policy", "noeviction"]
        if self.tls:
            cert, key, ca = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
            args += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
            args += ["--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password and not self.user:
            args += ["--requirepass", self.password]
        args += self.extra
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir
        )
        self.proc = proc

        def up() -> bool:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"redis-server exited: {err.strip()[-500:]}")
            with contextlib.suppress(RedisError, OSError):
                c = Redis.from_url(self.admin_url, socket_timeout=1)
                try:
                    return bool(c.ping())
                finally:
                    c.close()
            return False

        try:
            wait_until(up, timeout, f"redis-server on port {self.port} to answer PING")
        except AssertionError:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def incr_aof(self) -> Path:
        files = sorted((self.dir / "appendonlydir").glob("*.incr.aof"))
        assert files, "no incremental AOF file"
        return files[-1]


def let_lease_run_out(conn: Redis, keys: RunKeys) -> None:
    """A producer that died (or whose lock release a crash lost) still holds the run's lock
    (``flowherd.store.captures.RunLock``): a lease that frees itself within its TTL. Check that it is
    such a lease, then let it run out now instead of waiting for it."""
    ttl = int(conn.pttl(keys.lock))
    assert 0 < ttl <= 30_000, ttl
    conn.pexpire(keys.lock, 1)
    wait_until(lambda: not conn.exists(keys.lock), 10, "the run lock to expire")


def invoke(args: Sequence[str]) -> Result:
    """``producer ARGS`` in this process (click's runner), exceptions propagated."""
    from flowherd.producer.cli.main import (
        main as producer_main,  # here: the file builders need no CLI
    )

    return CliRunner().invoke(producer_main, list(args), catch_exceptions=False)


# --- hand-packed capture files ----------------------------------------------------------------


def pcap_bytes(
    records: list[tuple[int, int, int, bytes]],
    endian: str = "<",
    nano: bool = False,
    network: int = 1,
    snaplen: int = 65535,
) -> bytes:
    """A classic pcap: ``records`` are (sec, frac, wire_len, data)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, network)
    for sec, frac, wire, data in records:
        out += struct.pack(endian + "IIII", sec, frac, len(data), wire) + data
    return out


def block(endian: str, btype: int, body: bytes) -> bytes:
    """A pcapng block of type ``btype`` (body padded to 32 bits, both lengths)."""
    body += b"\0" * (-len(body) % 4)
    length = struct.pack(endian + "I", 12 + len(body))
    return struct.pack(endian + "I", btype) + length + body + length


def option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(endian: str = "<", major: int = 1) -> bytes:
    """Section header block (section length unknown)."""
    return block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, major, 0, -1))


def idb(
    endian: str = "<", linktype: int = 1, snaplen: int = 0, tsresol: int | None = None,
    tsoffset: int | None = None,
) -> bytes:  # fmt: skip
    """Interface description block, with if_tsresol / if_tsoffset when given."""
    opts = option(endian, 2, b"eth0")  # an option the reader ignores, before the ones it reads
    if tsresol is not None:
        opts += option(endian, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(endian, 14, struct.pack(endian + "q", tsoffset))
    opts += struct.pack(endian + "HH", 0, 0)
    return block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts)


def epb(endian: str, iid: int, units: int, data: bytes, wire: int | None = None) -> bytes:
    """Enhanced packet block on interface ``iid``, ``units`` of its timestamp resolution."""
    wire = len(data) if wire is None else wire
    head = struct.pack(endian + "IIIII", iid, units >> 32, units & 0xFFFFFFFF, len(data), wire)
    return block(endian, 6, head + data + b"\0" * (-len(data) % 4) + option(endian, 1, b"hi"))


def spb(endian: str, wire: int, data: bytes) -> bytes:
    """Simple packet block (interface 0, no timestamp)."""
    return block(endian, 3, struct.pack(endian + "I", wire) + data)


def old_pb(endian: str, iid: int, units: int, data: bytes) -> bytes:
    """The obsolete packet block (type 2)."""
    head = struct.pack(endian + "HHIIII", iid, 0, units >> 32, units & 0xFFFFFFFF, len(data), 99)
    return block(endian, 2, head + data)
