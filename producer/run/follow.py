"""Following a capture to the end, and the local worker processes of the embedded mode."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from flowherd.deploy.local import die_with_parent
from flowherd.models.capture import CaptureState, CaptureStatus
from flowherd.models.errors import BackendError
from flowherd.store.backend import Store
from flowherd.store.captures import status

FINAL = (CaptureState.COMPLETE, CaptureState.FAILED, CaptureState.ABORTED)
#: Bytes of the local workers' stderr kept, for the message when they exit; the rest is read
#: and dropped as it comes, so the pool never blocks on a full pipe.
STDERR_TAIL = 64 * 1024


class _Drain(threading.Thread):
    """Reads a pipe to its end in the background, keeping only its last ``keep`` bytes."""

    def __init__(self, pipe: IO[bytes], keep: int) -> None:
        super().__init__(name="local-workers-stderr", daemon=True)
        self._pipe = pipe
        self._keep = keep
        self._tail = bytearray()
        self._lock = threading.Lock()
        self.total = 0  # bytes read so far
        self.start()

    def run(self) -> None:
        read = getattr(self._pipe, "read1", self._pipe.read)
        with self._pipe:
            while chunk := read(65536):
                with self._lock:
                    self.total += len(chunk)
                    self._tail += chunk
                    if len(self._tail) > self._keep:
                        del self._tail[: len(self._tail) - self._keep]

    def tail(self) -> bytes:
        with self._lock:
            return bytes(self._tail)


class LocalWorkers:
    """``workers run -n N`` as a child process (started by command, not imported).

    Its stderr is read continuously by a background thread, which keeps the last
    :data:`STDERR_TAIL` bytes (:meth:`stderr_tail`) for the message of :meth:`check`: however
    much the pool writes, it never blocks on the pipe, and memory stays bounded.
    """

    def __init__(self, url: str, queue: str, num: int, store_url: str | None = None) -> None:
        env = {**os.environ, "FLOWHERD_REDIS_URL": url}
        if store_url:
            env["FLOWHERD_STORE_URL"] = store_url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowherd.workers", "run", "-n", str(num), "--queue", queue],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # its own session: a terminal's Ctrl-C reaches only us, and we stop the workers
            # cleanly after the last batch; they still end with us if we are killed
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stderr is not None
        self._stderr = _Drain(self.proc.stderr, STDERR_TAIL)

    @property
    def stderr_bytes(self) -> int:
        """Bytes the pool has written to its stderr so far."""
        return self._stderr.total

    def stderr_tail(self) -> str:
        """The last (at most :data:`STDERR_TAIL`) bytes of the pool's stderr."""
        return self._stderr.tail().decode(errors="replace")

    def check(self) -> None:
        """Raise :class:`BackendError` with the last line of its stderr if the pool exited."""
        code = self.proc.poll()
        if code is not None:
            self._stderr.join(2)  # the rest of what it wrote, up to its end
            err = self.stderr_tail().strip()
            last = err.splitlines()[-1] if err else ""
            raise BackendError(f"local workers exited with code {code}: {last}")

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGINT: each worker finishes its batch); after ``timeout`` seconds,
        or if anything of the pool's process group is left, SIGKILL the whole group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only the pool's processes
        self.proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the killed ones are reaped
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.02)
        self._stderr.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> LocalWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def follow(
    conn: Store,
    name: str,
    on_update: Callable[[CaptureStatus], None] | None = None,
    poll: float = 0.2,
    check: Callable[[], None] | None = None,
) -> CaptureStatus:
    """Poll ``name`` until it is complete, failed or aborted; return the final status."""
    while True:
        st = status(conn, name, detail=False)
        if on_update:
            on_update(st)
        if st.state in FINAL:
            return status(conn, name)  # with the failures' reasons and any lost parts
        if check:
            check()
        time.sleep(poll)


def follow_with_progress(
    conn: Store, name: str, err: Console, workers: LocalWorkers | None
) -> CaptureStatus:
    """:func:`follow` with a "merging" progress bar on ``err`` (when it is a terminal), checking
    the local workers (if any) are still alive."""
    with Progress(
        TextColumn("[bold]merging[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("", total=None)
        return follow(
            conn,
            name,
            on_update=lambda st: bar.update(
                task, completed=st.batches_done, total=st.total_batches
            ),
            check=workers.check if workers else None,
        )
