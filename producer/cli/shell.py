"""The shell of a command that writes a capture run (``producer submit``, ``producer sniff``):
the backend opened, local workers started with the embedded Redis, the capture followed to its
end, its outcome shown, and the exit status."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from flowherd.console.cli import open_backend
from flowherd.console.show import err_console, show_outcome
from flowherd.models.capture import CaptureStatus
from flowherd.models.settings import Settings
from flowherd.producer.run.follow import LocalWorkers, follow_with_progress
from flowherd.store.backend import Store

#: compression and capture suffixes a file's name loses in its default capture name
_SUFFIXES = (".gz", ".bz2", ".xz", ".pcapng", ".pcap", ".cap", ".dmp")


def capture_name(text: str) -> str:
    """A capture name made of ``text``: letters, digits and ``._-`` kept, anything else ``_``,
    no leading ``._-``, at most 100 characters, never empty."""
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in text).lstrip("._-")
    return name[:100] or "capture"


def name_of_files(sources: Sequence[str]) -> str:
    """``producer submit``'s default name: the first file's name without its suffixes."""
    name = Path(sources[0]).name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return capture_name(name)


def name_of_interface(iface: str) -> str:
    """``producer sniff``'s default name: ``sniff-IFACE-UTCTIME``."""
    return capture_name(f"sniff-{iface}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")


@dataclass
class Shell:
    """The backend of one command, its local workers (embedded Redis only), whether it waits
    for the capture to complete, and the console for progress."""

    conn: Store
    settings: Settings
    url: str
    embedded: bool
    wait: bool
    workers: LocalWorkers | None
    err: Console

    def check(self) -> None:
        """Raise when a local worker process died (called from progress callbacks)."""
        if self.workers:
            self.workers.check()

    def done(self, summary: str, ok: bool) -> None:
        """Without waiting: print ``summary`` and exit (0 when ``ok``). Waiting: return."""
        if not self.wait:
            click.echo(summary)
            sys.exit(0 if ok else 1)

    def follow(self, name: str) -> CaptureStatus:
        """Follow capture ``name`` to its end, with a progress bar on a terminal."""
        return follow_with_progress(self.conn, name, self.err, self.workers)


@contextmanager
def run_shell(
    settings: Settings,
    wait: bool | None,
    num_workers: int,
    adjust: Callable[[Store, Settings], Settings] | None = None,
) -> Iterator[Shell]:
    """Open the backend of ``settings`` (then ``adjust`` them with it: a resumed capture's own
    settings); with the embedded Redis start ``num_workers`` local workers and wait by default
    (``wait`` None). The workers stop when the block ends."""
    conn, url, embedded = open_backend(settings)
    if adjust is not None:
        settings = adjust(conn, settings)
    workers = (
        LocalWorkers(url, settings.queue, num_workers, settings.store_url) if embedded else None
    )
    try:
        wait = embedded if wait is None else wait
        yield Shell(conn, settings, url, embedded, wait, workers, err_console())
    finally:
        if workers:
            workers.stop()


def exit_with_outcome(shell: Shell, name: str, st: CaptureStatus, top_n: int, ok: bool) -> NoReturn:
    """Show capture ``name``'s outcome (its top ``top_n`` flows when complete) and exit: 1 when
    it did not complete or the run was not ``ok`` (warnings, drops), else 0."""
    if not show_outcome(shell.conn, name, st, top_n):
        sys.exit(1)
    sys.exit(0 if ok else 1)
