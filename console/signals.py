"""Clean stops on SIGINT and SIGTERM for the commands that run until stopped."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """SIGINT/SIGTERM set ``stop`` (a clean stop); a second one raises KeyboardInterrupt.
    Yields the signals received so far."""
    got: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and got:
            raise KeyboardInterrupt
        got.append(signum)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)
