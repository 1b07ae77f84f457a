"""The local worker pool of the embedded mode (``flowherd.producer.run.follow.LocalWorkers``): its stderr is
drained while it runs, so a chatty pool never blocks on a full pipe (issue 12)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.models.capture import CaptureState
from flowherd.models.errors import BackendError
from flowherd.producer.cli.main import main as producer_main
from flowherd.producer.run import follow as follow_module
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from flowherd.store.captures import status
from tests.support.helpers import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.timeout(120)]

PIPE_BUF = 64 * 1024  # Linux's default pipe capacity


def _until_final(store: Store, name: str, w: LocalWorkers, seconds: float) -> CaptureState:
    def final() -> CaptureState | None:
        w.check()
        state = status(store, name, detail=False).state
        return (
            state
            if state in (CaptureState.COMPLETE, CaptureState.FAILED, CaptureState.ABORTED)
            else None
        )

    return wait_until(final, seconds, f"capture {name!r} to be final (is the pool blocked?)")


def test_pool_writing_more_than_a_pipe_holds_keeps_working(
    conn: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYTHONVERBOSE makes the real ``workers run`` child print every import on stderr: far
    more than the 64 KiB a pipe holds before its writer blocks. The capture still completes,
    and what is kept of that stderr is bounded."""
    monkeypatch.setenv("PYTHONVERBOSE", "1")
    path = tmp_path / "s.pcap"
    write_sample(path, flows=20, seed=5)
    queue = f"t{uuid.uuid4().hex[:8]}"
    with LocalWorkers(redis_url, queue, 1) as w:
        args = ["submit", str(path), "--redis-url", redis_url, "--queue", queue, "--name", "v"]
        res = CliRunner().invoke(producer_main, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert _until_final(Store.single(conn), "v", w, 60) is CaptureState.COMPLETE
        assert w.stderr_bytes > 2 * PIPE_BUF  # the child really wrote that much
        assert len(w.stderr_tail()) <= follow_module.STDERR_TAIL


def _until_exit(w: LocalWorkers, seconds: float) -> BackendError:
    def exited() -> BackendError | None:
        try:
            w.check()
        except BackendError as exc:
            return exc
        return None

    return wait_until(exited, seconds, "the pool to exit (blocked on its stderr?)")


def test_a_pool_that_floods_stderr_then_fails_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    """More than a pipe's worth of stderr, then a failure: the pool exits and is reported
    (undrained, it would block on its stderr forever and never exit)."""
    monkeypatch.setenv("FLOWHERD_CONNECT_TIMEOUT", "0")
    monkeypatch.setenv("PYTHONVERBOSE", "1")
    monkeypatch.setattr(follow_module, "STDERR_TAIL", 4096)
    w = LocalWorkers("redis://127.0.0.1:1/0", "q", 1)  # nothing listens on port 1
    try:
        err = _until_exit(w, 60)
        assert str(err).startswith("local workers exited with code 1: ")
        assert w.stderr_bytes > 2 * PIPE_BUF
        assert 0 < len(w.stderr_tail()) <= 4096
    finally:
        w.stop()


def test_a_failed_pool_is_reported_with_its_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWHERD_CONNECT_TIMEOUT", "0")
    w = LocalWorkers("redis://127.0.0.1:1/0", "q", 1)
    try:
        err = _until_exit(w, 60)
        assert str(err).startswith(
            "local workers exited with code 1: error: cannot reach Redis at redis://127.0.0.1:1/0"
        ), err
    finally:
        w.stop()
