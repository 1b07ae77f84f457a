"""The embedded default: a private redis-server under flowherd's home directory.

Started on demand when no Redis URL is given, listening only on a unix socket, persisting with
an append-only file in the home directory, so a later ``reporter`` finds the results. It keeps
running between commands (``workers local-redis stop`` ends it).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from models.errors import BackendError

log = logging.getLogger(__name__)
_SOCK_MAX = 100  # sun_path is 108 bytes on Linux


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits (PR_SET_PDEATHSIG), so
    local worker processes never outlive the command that started them."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)


def socket_path(home: Path) -> Path:
    p = home / "redis.sock"
    if len(str(p)) <= _SOCK_MAX:
        return p
    digest = hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"flowherd-{digest}.sock"


def local_url(home: Path) -> str:
    return f"unix://{socket_path(home)}"


def _alive(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(Redis(unix_socket_path=str(sock), socket_timeout=2).ping())
    except RedisError:
        return False


def is_running(home: Path) -> bool:
    return _alive(socket_path(home))


def ensure_local_redis(home: Path) -> str:
    """Start the private redis-server unless it already answers; return its URL."""
    sock = socket_path(home)
    if _alive(sock):
        return local_url(home)
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
    if not _alive(sock):
        return False
    with contextlib.suppress(RedisError):  # the server drops the connection as it stops
        Redis(unix_socket_path=str(sock)).shutdown()
    for _ in range(100):
        if not _alive(sock):
            return True
        time.sleep(0.05)
    return not _alive(sock)
