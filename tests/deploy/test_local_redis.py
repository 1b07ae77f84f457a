"""The private redis-server of the embedded mode (``flowherd.deploy.local``): started once however many
commands ask at the same time, on a socket in a directory only this user can write (issue 12)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from flowherd.deploy.local import (
    ensure_local_redis,
    is_running,
    local_url,
    socket_path,
    stop_local_redis,
)
from flowherd.models.errors import BackendError
from tests.support.helpers import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
# HOME GO READY: says it is ready (a file in READY), then starts the server once GO exists;
# its fine-grained poll is what lines the three processes up, not a synchronisation
_START = """
import os, sys, time
from pathlib import Path
from flowherd.deploy.local import ensure_local_redis
go = Path(sys.argv[2])
Path(sys.argv[3], str(os.getpid())).touch()
while not go.exists():
    time.sleep(0.001)
print(ensure_local_redis(Path(sys.argv[1])))
"""


def _servers_on(sock: Path) -> list[int]:
    """Pids of the redis-server processes listening on ``sock`` (their title, which redis-server
    sets, names the socket: ``redis-server unixsocket:PATH``)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if not d.name.isdigit() or (d / "comm").read_text().strip() != "redis-server":
                continue
            title = (d / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(sock).encode() in title:
            pids.append(int(d.name))
    return pids


def _kill_servers_on(sock: Path) -> None:
    for pid in _servers_on(sock):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A world-writable sticky temp folder, like /tmp, with a short name (sockets: 108 bytes):
    a direct child of pytest's base folder, made the process's temp folder."""
    d = tmp_path_factory.mktemp("fh")
    d.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


@pytest.fixture
def long_home(tmp_path: Path, short_tmp: Path) -> Iterator[Path]:
    """A home whose socket path would not fit in sun_path: the socket goes to the temp folder."""
    home = tmp_path / ("h" * 60) / ("o" * 60)
    yield home
    stop_local_redis(home)
    _kill_servers_on(socket_path(home))


def test_two_commands_at_once_start_one_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sock = socket_path(home)
    go, ready = tmp_path / "go", tmp_path / "ready"
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _START, str(home), str(go), str(ready)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:

        def waiting() -> bool:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            return len(list(ready.iterdir())) == 3

        wait_until(waiting, 60, "all three to wait for the go file")
        go.touch()
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outs
        assert {out.strip() for out, _ in outs} == {local_url(home)}
        # no grace needed: `redis-server --daemonize yes` forks the server before it returns,
        # so a second server started by any of the three (all exited) is listed already
        assert len(_servers_on(sock)) == 1
        assert Redis.from_url(local_url(home)).ping()
    finally:
        for p in procs:
            p.kill()
        stop_local_redis(home)
        _kill_servers_on(sock)


def test_fallback_socket_is_in_a_private_directory(long_home: Path, short_tmp: Path) -> None:
    sock = socket_path(long_home)
    assert len(str(sock)) <= 100 and sock.parent != short_tmp
    assert sock == socket_path(long_home)  # the next command finds the same server
    url = ensure_local_redis(long_home)
    assert url == f"unix://{sock}" and Redis.from_url(url).ping()
    st = sock.parent.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert is_running(long_home)


def test_fallback_directory_not_private_is_refused(long_home: Path, short_tmp: Path) -> None:
    """Someone else made the directory (here: open to all): the server is neither started
    there nor trusted there."""
    sock = socket_path(long_home)
    sock.parent.mkdir(mode=0o777)
    sock.parent.chmod(0o777)
    with pytest.raises(BackendError) as info:
        ensure_local_redis(long_home)
    assert str(info.value) == (
        f"{sock.parent} is not a private directory (it must be owned by uid {os.geteuid()} "
        "and closed to others: mode 0700): remove it, or set FLOWHERD_HOME to a shorter path"
    )
    assert _servers_on(sock) == [] and not is_running(long_home)


def test_fallback_directory_that_is_a_symlink_is_refused(long_home: Path, short_tmp: Path) -> None:
    sock = socket_path(long_home)
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    sock.parent.symlink_to(elsewhere)
    with pytest.raises(BackendError, match="is not a private directory"):
        ensure_local_redis(long_home)
    assert _servers_on(sock) == []
