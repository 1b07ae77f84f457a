"""Shared fixtures: a real redis-server per test session, flushed around each test."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from flowherd.store.backend import Store
from tests.support.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run scripts/install.sh (or `make install`)")
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(d),
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except Exception:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def conn(redis_url: str) -> Iterator[Redis]:
    c = Redis.from_url(redis_url)
    c.flushall()
    yield c
    c.flushall()
    c.close()


@pytest.fixture
def store(conn: Redis) -> Store:
    """The test Redis as both queue and store (``Store.single``)."""
    return Store.single(conn)


@pytest.fixture
def shared() -> Path:
    if not (SHARED / "pcaps").is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWHERD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLOWHERD_REDIS_URL", raising=False)
    os.environ.setdefault("MPLBACKEND", "Agg")


pytest_plugins = ["tests.support.cluster"]
