"""``producer submit``: stream trace files into a capture run.

The producer never dissects: it forwards raw records (see :mod:`flowherd.producer.run.writer` for
batching and backpressure, :mod:`flowherd.producer.run.resume` for continuing a submission that
stopped).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rq import Queue

from flowherd.models.errors import CaptureError
from flowherd.models.keys import RunKeys
from flowherd.models.records import Timeouts
from flowherd.models.settings import Settings
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.feed import feed
from flowherd.producer.run.gaps import record_batching
from flowherd.producer.run.resume import resend
from flowherd.producer.run.writer import Progress, ProgressFn, RunWriter
from flowherd.store.backend import Store
from flowherd.store.captures import register
from flowherd.store.lock import RunLock


def submit(
    store: Store,
    queue: Queue,
    sources: Sequence[str],
    name: str,
    settings: Settings,
    replace: bool = False,
    on_progress: ProgressFn | None = None,
    timeouts: Timeouts | None = None,
    *,
    checked: Collection[str] = (),
) -> tuple[RunKeys, Progress]:
    """Read ``sources`` in order into one capture ``name``; return its keys and final progress.

    Every source is opened (header checked) before anything is created in Redis, so a bad path
    fails without leaving a capture behind; those in ``checked`` were just opened by the caller
    (:func:`flowherd.producer.readers.sources.expand`) and are not opened again. A truncated
    file contributes its complete records and a warning. Before the run is closed, any batch
    that Redis lost meanwhile (a restart that lost its last writes) is rebuilt from the files
    and sent again (see :mod:`flowherd.producer.run.resume`), so a closed run holds every batch
    once. While Redis is out of memory the producer waits (see
    :class:`flowherd.producer.run.writer.RunWriter`). Any other read error, or an interrupt,
    marks the run aborted and re-raises; ``producer submit --resume`` continues an aborted or
    killed submission.
    """
    for src in sources:
        if src not in checked:
            with open_capture(src):
                pass
    keys = register(store, name, sources, settings, replace)
    with RunLock(store, keys, name) as lock:
        record_batching(store, keys, sources, settings)
        w = RunWriter(store, queue, keys, settings, on_progress, lock, timeouts)
        try:
            feed(w, sources, on_progress, ())
            resend(store, queue, keys, sources, settings, w.seq, on_progress, w.progress.warnings)
            w.close()
        except (CaptureError, KeyboardInterrupt) as exc:
            msg = str(exc) if isinstance(exc, CaptureError) else "interrupted"
            w.abort(f"submit aborted: {msg}")
            raise
    return keys, w.progress
