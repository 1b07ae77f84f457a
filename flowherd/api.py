"""The Python API's entry points: :func:`analyse`, :func:`open` and :func:`captures`.

:func:`analyse` is ``producer submit --wait``: the sources (files, directories, glob patterns,
URLs: :mod:`flowherd.producer.readers.sources`) read into batches, the private Redis and local
workers started when no ``redis_url`` is given, the capture followed to its end with a progress
bar (a terminal's, or an HTML one in Jupyter). Errors are flowherd's, with the CLI's messages.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from flowherd import frames
from flowherd.capture import Capture
from flowherd.console.cli import open_backend
from flowherd.deploy.connect import redact
from flowherd.deploy.queueing import make_queue
from flowherd.models.capture import CaptureState
from flowherd.models.errors import BackendError, CaptureStateError
from flowherd.models.settings import Settings
from flowherd.producer.cli.options import parse_duration, timeouts_of
from flowherd.producer.cli.shell import name_of_files
from flowherd.producer.readers.sources import expand, is_pattern
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.producer.run.submit import submit
from flowherd.progress import Bars
from flowherd.store.backend import Store
from flowherd.store.captures import names, status

Source = str | os.PathLike[str]
Duration = str | float | int | None


def seconds(value: Duration, what: str) -> float | None:
    """A duration as the CLI takes it (``"500ms"``, ``"30s"``, ``"10m"``, ``"2h"``) or in
    seconds, as seconds; None stays None. ValueError unless positive."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    if not value > 0:
        raise ValueError(f"{what}: {value!r} is not a positive number of seconds")
    return float(value)


def _settings(redis_url: str | None, store_url: str | None, **more: Any) -> Settings:
    """Settings from the environment (``FLOWHERD_*``) and the arguments that were given."""
    given = {"redis_url": redis_url, "store_url": store_url, **more}
    return Settings(**{k: v for k, v in given.items() if v is not None})


def _backend(settings: Settings) -> tuple[Store, str, bool]:
    try:
        return open_backend(settings)
    except RedisError as exc:
        raise BackendError(f"Redis: {redact(str(exc))}") from None


def analyse(
    sources: Source | Sequence[Source],
    *,
    name: str | None = None,
    workers: int | None = None,
    engine: str = "fast",
    window: Duration = None,
    idle_timeout: Duration = None,
    active_timeout: Duration = None,
    redis_url: str | None = None,
    store_url: str | None = None,
    progress: bool = True,
    recursive: bool = False,
    replace: bool = False,
) -> Capture:
    """Analyse ``sources`` as one capture and return it once it is complete.

    ``sources``: a capture file (pcap, pcapng; gzip, bzip2 or xz), a directory (its captures,
    by first timestamp; ``recursive`` to descend), a glob pattern or an ``http(s)://`` URL, or
    a list of them. ``name``: the capture's name (default: the first source's name without its
    suffixes); ``replace`` overwrites a capture of that name. ``workers``: local worker
    processes (default: the CPU count with the private Redis; none with a ``redis_url``, where
    workers run elsewhere). ``engine``: ``"fast"`` or ``"scapy"`` (same results). ``window``:
    also a flow table per tumbling window; ``idle_timeout``/``active_timeout`` cut
    conversations into flow records; durations as in the CLI (``"30s"``) or seconds.
    ``redis_url``/``store_url``: a shared Redis (default: ``FLOWHERD_REDIS_URL``, else a
    private one). Files of a directory or pattern that are not captures are skipped with a
    warning (:class:`UserWarning`), as are truncated files (their complete records counted).

    Raises :class:`~flowherd.models.errors.CaptureError` for a source that cannot be read,
    :class:`~flowherd.models.errors.CaptureStateError` for a name taken (without
    ``replace``) or a capture that failed, :class:`~flowherd.models.errors.BackendError` when
    Redis or the local workers fail; ValueError for bad arguments.
    """
    args = [
        os.fspath(s) for s in ([sources] if isinstance(sources, str | os.PathLike) else sources)
    ]
    if not args:
        raise ValueError("analyse needs at least one source")
    settings = _settings(
        redis_url, store_url, engine=engine, window=seconds(window, "window")
    )  # fmt: skip
    timeouts = timeouts_of(
        seconds(idle_timeout, "idle_timeout"), seconds(active_timeout, "active_timeout")
    )
    found = expand(args, recursive)
    for w in found.warnings():
        warnings.warn(w, UserWarning, stacklevel=2)
    cap_name = name or name_of_files(found.sources if is_pattern(args[0]) else args)
    store, url, embedded = _backend(settings)
    n = workers if workers is not None else ((os.cpu_count() or 1) if embedded else 0)
    local = LocalWorkers(url, settings.queue, n, settings.store_url) if n else None
    try:
        with Bars(progress, cap_name) as bars:
            check = local.check if local else None
            _, prog = submit(
                store,
                make_queue(store.queue, settings.queue),
                found.sources,
                cap_name,
                settings,
                replace,
                bars.reading(check),
                timeouts,
                checked=found.checked,
            )
            st = follow(store, cap_name, on_update=bars.merging, check=check)
    except RedisError as exc:
        raise BackendError(f"Redis: {redact(str(exc))}") from None
    finally:
        if local:
            local.stop()
    for w in prog.warnings:
        warnings.warn(w, UserWarning, stacklevel=2)
    if st.state is not CaptureState.COMPLETE:
        raise CaptureStateError(
            f"capture {cap_name!r} is {st.state.value}: see `producer status {cap_name}`"
        )
    return Capture(cap_name, store)


def open(name: str, *, redis_url: str | None = None, store_url: str | None = None) -> Capture:
    """The capture ``name`` of a store (default: ``FLOWHERD_REDIS_URL``, else the private
    Redis). Raises :class:`~flowherd.models.errors.CaptureStateError` when there is none of
    that name, :class:`~flowherd.models.errors.BackendError` when Redis cannot be reached."""
    store, _, _ = _backend(_settings(redis_url, store_url))
    try:
        return Capture(name, store)
    except RedisError as exc:
        raise BackendError(f"Redis: {redact(str(exc))}") from None


def captures(*, redis_url: str | None = None, store_url: str | None = None) -> Any:
    """The captures of a store with state and totals (``reporter captures --json``) as a
    DataFrame: ``name, state, batches_done, total_batches, packets, bytes, flows, first_ts,
    last_ts``."""
    pd = frames.pandas()
    store, _, _ = _backend(_settings(redis_url, store_url))
    sts = [status(store, n) for n in names(store)]
    return pd.DataFrame(
        {
            "name": pd.array([s.name for s in sts], dtype="str"),
            "state": pd.array([s.state.value for s in sts], dtype="str"),
            "batches_done": pd.array([s.batches_done for s in sts], dtype="int64"),
            "total_batches": pd.array([s.total_batches for s in sts], dtype="Int64"),
            "packets": pd.array([s.packets for s in sts], dtype="int64"),
            "bytes": pd.array([s.bytes for s in sts], dtype="int64"),
            "flows": pd.array([s.flows for s in sts], dtype="int64"),
            "first_ts": pd.to_datetime([s.first_ns for s in sts], utc=True),
            "last_ts": pd.to_datetime([s.last_ns for s in sts], utc=True),
        }
    )
