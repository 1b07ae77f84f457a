"""``producer submit``: stream trace files into a capture run.

The producer never dissects: it forwards raw records (see :mod:`producer.run` for batching and
backpressure).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from redis import Redis
from rq import Queue

from models.errors import CaptureError, TruncatedCaptureError
from models.keys import RunKeys
from models.settings import Settings
from producer.capture import open_capture
from producer.run import Progress, ProgressFn, RunWriter, register


def default_name(sources: Sequence[str]) -> str:
    """The capture name for ``sources``: the first file's stem without compression suffixes."""
    name = Path(sources[0]).name
    for suffix in (".gz", ".bz2", ".xz", ".pcapng", ".pcap", ".cap", ".dmp"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip("._-")
    return name[:100] or "capture"


def submit(
    conn: Redis,
    queue: Queue,
    sources: Sequence[str],
    name: str,
    settings: Settings,
    replace: bool = False,
    on_progress: ProgressFn | None = None,
) -> tuple[RunKeys, Progress]:
    """Read ``sources`` in order into one capture ``name``; return its keys and final progress.

    Every source is opened (header checked) before anything is created in Redis, so a bad path
    fails without leaving a capture behind. A truncated file contributes its complete records
    and a warning. Any other read error, or an interrupt, marks the run aborted and re-raises.
    """
    for src in sources:
        with open_capture(src):
            pass
    keys = register(conn, name, sources, settings, replace)
    w = RunWriter(conn, queue, keys, settings, on_progress)
    prog = w.progress
    add = w.add
    try:
        for src in sources:
            prog.source = str(src)
            try:
                with open_capture(src) as cap:
                    prog.size = cap.size
                    for n, rec in enumerate(cap, 1):
                        add(rec)
                        if not n & 0x3FF:
                            prog.position = cap.position
                            if on_progress:
                                on_progress(prog)
                    prog.position = cap.position
            except TruncatedCaptureError as exc:
                w.warn(str(exc))
        w.close()
    except (CaptureError, KeyboardInterrupt) as exc:
        msg = str(exc) if isinstance(exc, CaptureError) else "interrupted"
        w.abort(f"submit aborted: {msg}")
        raise
    return keys, prog
