"""Test helpers: run the real pipeline (producer -> RQ worker processes -> Redis) in-process,
and compare what it stored with the ground truth of ``flowherd.producer.traces.sample``."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from flowherd.deploy.queueing import make_queue
from flowherd.models.capture import CaptureState, CaptureStatus
from flowherd.models.flows import FlowKey, FlowStats, addr_text
from flowherd.models.records import Timeouts
from flowherd.models.settings import Settings
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.producer.run.submit import submit
from flowherd.producer.run.writer import Progress
from flowherd.reporter.table.views import uni_rows
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_flows
from flowherd.store.tables import table as run_table

#: A text uni-directional flow key: (src, dst, proto, sport, dport).
UniKey = tuple[str, str, int, int, int]


SHARED_PCAPS = Path(__file__).resolve().parents[3] / "shared" / "pcaps"


def settings_for(redis_url: str, queue: str | None = None, **kw: object) -> Settings:
    """Settings on ``redis_url`` with a queue of its own (a fresh name unless given)."""
    return Settings(redis_url=redis_url, queue=queue or f"t{uuid.uuid4().hex[:8]}", **kw)  # type: ignore[arg-type]


def run_capture(
    store: Store,
    settings: Settings,
    sources: Sequence[str],
    name: str,
    workers: LocalWorkers,
    timeouts: Timeouts | None = None,
) -> CaptureStatus:
    queue = make_queue(store.queue, settings.queue)
    submit(
        store,
        queue,
        list(sources),
        name,
        settings,
        replace=True,
        on_progress=lambda p: workers.check(),
        timeouts=timeouts,
    )
    return follow(store, name, poll=0.05, check=workers.check)


def submit_with(
    store: Store,
    settings: Settings,
    path: Path,
    name: str,
    on_progress: Callable[[Progress], None] | None = None,
) -> None:
    """``producer submit PATH --name NAME --replace`` in this process, on ``settings.queue``."""
    queue = make_queue(store.queue, settings.queue)
    submit(store, queue, [str(path)], name, settings, True, on_progress)


def follow_for(
    store: Store, name: str, seconds: float, workers: LocalWorkers | None = None
) -> CaptureStatus:
    """``follow`` until the capture is final, with a deadline for a stuck one (AssertionError
    when it passes; give it generously: it is not a performance bound)."""
    deadline = time.monotonic() + seconds

    def check() -> None:
        if workers is not None:
            workers.check()
        assert time.monotonic() < deadline, f"capture {name!r} not final after {seconds}s"

    return follow(store, name, poll=0.05, check=check)


def table(store: Store, name: str) -> dict[FlowKey, FlowStats]:
    return dict(iter_flows(store, run_table(run_of(store, name))))


def uni_table(store: Store, name: str) -> dict[UniKey, list[int]]:
    """The capture's unidirectional table: [packets, bytes] per text flow key."""
    out = {}
    for key, st in iter_flows(store, run_table(run_of(store, name))):
        for r in uni_rows(key, st):
            out[(r.src, r.dst, r.proto, r.sport, r.dport)] = [r.packets, r.bytes]
    return out


def truth_text(truth: dict) -> dict[UniKey, list[int]]:  # type: ignore[type-arg]
    """``flowherd.producer.traces.sample``'s ground truth (addresses as bytes) with text addresses."""
    return {(addr_text(s), addr_text(d), p, sp, dp): v for (s, d, p, sp, dp), v in truth.items()}


def assert_exact(store: Store, name: str, st: CaptureStatus, truth: dict) -> None:  # type: ignore[type-arg]
    """The capture is complete, every batch merged once, and its table is the ground truth."""
    assert st.state is CaptureState.COMPLETE, st
    assert st.batches_done == st.total_batches
    assert st.batches_failed == 0
    assert st.packets == sum(v[0] for v in truth.values())
    assert uni_table(store, name) == truth_text(truth)


# --- the shared corpus through the pipeline (tests/pipeline/test_oracle.py, tests/store/test_cluster_oracle.py)

#: every capture of ../shared/pcaps (empty when it is absent)
CORPUS = sorted(p.name for p in (SHARED_PCAPS).glob("*.pcap*")) if SHARED_PCAPS.is_dir() else []
ENGINES = ["scapy", "fast"]


def corpus_name(file: str, engine: str) -> str:
    """The capture name of ``file`` submitted with ``engine``."""
    return f"{engine}-" + file.replace(".", "_")


def merge_corpus(
    store: Store, redis_url: str, store_url: str | None = None
) -> dict[tuple[str, str], CaptureStatus]:
    """Submit every corpus capture once per engine through two real worker processes (writing
    to ``store_url``, or to the queue's Redis); their final status by (file, engine)."""
    out: dict[tuple[str, str], CaptureStatus] = {}
    for engine in ENGINES:
        settings = settings_for(redis_url, batch_packets=500, engine=engine)
        with LocalWorkers(redis_url, settings.queue, 2, store_url) as w:
            for name in CORPUS:
                path = str(SHARED_PCAPS / name)
                out[name, engine] = run_capture(
                    store, settings, [path], corpus_name(name, engine), w
                )
    return out


#: columns that ``reporter flows`` adds to the oracle's (compared by their own tests)
NOT_IN_ORACLE = ("community_id",)


def sorted_rows(text: str) -> list[list[str]]:
    """A CSV's header, then its rows sorted (the oracle compares tables, not row orders), in
    the oracle's columns: those of :data:`NOT_IN_ORACLE` are left out."""
    rows = list(csv.reader(io.StringIO(text)))
    keep = [i for i, name in enumerate(rows[0]) if name not in NOT_IN_ORACLE]
    rows = [[r[i] for i in keep] for r in rows]
    return [rows[0], *sorted(rows[1:])]
