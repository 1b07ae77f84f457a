"""The embedded default: a private redis-server under flowherd's home directory.

Started on demand when no Redis URL is given, listening only on a unix socket, persisting with
an append-only file in the home directory, so a later ``reporter`` finds the results. It keeps
running between commands (``workers local-redis stop`` ends it).

Commands started at the same time start one server: the check and the start happen under an
exclusive lock on ``HOME/redis.lock``. The socket is ``HOME/redis.sock``; when that path is too
long for a unix socket it is ``TMPDIR/flowherd-UID/<hash of HOME>.sock``, in a directory that
must be owned by this user and closed to others (mode 0700, not a symlink), so that nobody else
can put a server of theirs where flowherd looks for its own. A directory that is not private is
refused with a :class:`~flowherd.models.errors.BackendError`, never used.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from flowherd.models.errors import BackendError

log = logging.getLogger(__name__)
_SOCK_MAX = 100  # sun_path is 108 bytes on Linux
_LOCK_WAIT_S = 60.0  # longer than one start takes (15 s at most)


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits (PR_SET_PDEATHSIG), so
    local worker processes never outlive the command that started them."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)


def socket_path(home: Path) -> Path:
    """Where the private server of ``home`` listens (see the module docstring); creates nothing."""
    p = home / "redis.sock"
    if len(str(p)) <= _SOCK_MAX:
        return p
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"flowherd-{os.geteuid()}" / f"{digest}.sock"


def local_url(home: Path) -> str:
    return f"unix://{socket_path(home)}"


def _is_private(d: Path) -> bool:
    """``d`` is a real directory (not a symlink), owned by us, closed to group and others."""
    try:
        st = d.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _private_dir(d: Path) -> None:
    """Create the fallback socket directory ``d`` (mode 0700), or check that it is private."""
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    if not _is_private(d):
        raise BackendError(
            f"{d} is not a private directory (it must be owned by uid {os.geteuid()} and closed "
            "to others: mode 0700): remove it, or set FLOWHERD_HOME to a shorter path"
        )


def _trusted(home: Path, sock: Path) -> bool:
    """A socket outside ``home`` is trusted only in a private directory."""
    return sock.parent == home or _is_private(sock.parent)


def _alive(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(Redis(unix_socket_path=str(sock), socket_timeout=2).ping())
    except RedisError:
        return False


def is_running(home: Path) -> bool:
    sock = socket_path(home)
    return _trusted(home, sock) and _alive(sock)


@contextlib.contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``HOME/redis.lock``, held while the server is checked and started
    (released by the kernel if the holder dies)."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "redis.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"another command has been starting the private redis-server for "
                        f"{_LOCK_WAIT_S:.0f}s (lock {home / 'redis.lock'}); try again"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_local_redis(home: Path) -> str:
    """Start the private redis-server unless it already answers; return its URL.

    Safe to call from several processes at once: one of them starts the server, the others
    wait for it (see the module docstring). Raises :class:`BackendError` when redis-server is
    missing or does not come up, and when the fallback socket directory is not private.
    """
    try:
        sock = socket_path(home)
        if sock.parent != home:
            _private_dir(sock.parent)
        if _alive(sock):
            return local_url(home)
        with _start_lock(home):
            if _alive(sock):  # started by another command while we waited for the lock
                return local_url(home)
            return _start(home, sock)
    except OSError as exc:  # FLOWHERD_HOME is a file, under one, or not writable
        raise BackendError(
            f"FLOWHERD_HOME={home}: cannot keep the private Redis there: "
            f"{exc.strerror or exc} (set FLOWHERD_HOME to a directory, or give --redis-url)"
        ) from None


def _start(home: Path, sock: Path) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise BackendError(
            "redis-server is not installed and no --redis-url was given: "
            "install it (apt-get install redis-server, or scripts/install.sh) or point "
            "FLOWHERD_REDIS_URL at a Redis server"
        )
    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    cmd = [
        exe,
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data),
        "--daemonize",
        "yes",
        "--pidfile",
        str(home / "redis.pid"),
        "--logfile",
        str(home / "redis.log"),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BackendError(
            f"could not start redis-server: {res.stderr.strip() or res.stdout.strip()}"
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _alive(sock):
            log.info("event=local_redis_started socket=%s", sock)
            return local_url(home)
        time.sleep(0.05)
    raise BackendError(f"redis-server did not come up; see {home / 'redis.log'}")


def stop_local_redis(home: Path) -> bool:
    """Shut the private server down (its append-only file keeps the data). False if not running."""
    sock = socket_path(home)
    if not _trusted(home, sock) or not _alive(sock):
        return False
    with contextlib.suppress(RedisError):  # the server drops the connection as it stops
        Redis(unix_socket_path=str(sock)).shutdown()
    for _ in range(100):
        if not _alive(sock):
            return True
        time.sleep(0.05)
    return not _alive(sock)
