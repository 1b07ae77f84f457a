"""End to end with real RQ worker processes: exact numbers, any worker count, no double counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowherd.deploy.queueing import enqueue_batch, make_queue
from flowherd.models.batch import encode_batch
from flowherd.models.capture import BatchRef, CaptureState
from flowherd.models.keys import PayloadKeys, RunKeys
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.table.order import top
from flowherd.reporter.table.views import conv_row, uni_row, uni_rows
from flowherd.store.backend import Store
from flowherd.store.captures import load_report, run_of
from flowherd.store.tables import iter_flows, top_conversations, top_directions, totals
from flowherd.store.tables import table as run_table
from tests.support.helpers import wait_until
from tests.support.pipeline import run_capture, settings_for, table, truth_text, uni_table

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("sample") / "sample.pcap"
    truth = write_sample(path, flows=250, seed=11)
    return path, truth


def _raw_table(store: Store, keys: RunKeys) -> list[tuple[dict, dict]]:
    """Every shard's flows and totals, as stored."""
    return [(store.kv.hgetall(sk.flows), store.kv.hgetall(sk.totals)) for sk in keys.all_shards()]


@pytest.mark.parametrize(("nworkers", "engine"), [(1, "scapy"), (3, "scapy"), (2, "fast")])
def test_tables_equal_ground_truth(
    store: Store, redis_url: str, sample: tuple[Path, dict], nworkers: int, engine: str
) -> None:
    path, truth = sample
    settings = settings_for(redis_url, batch_packets=300, max_in_flight=4, engine=engine)
    with LocalWorkers(redis_url, settings.queue, nworkers) as w:
        st = run_capture(store, settings, [str(path)], "s", w)
    assert st.state is CaptureState.COMPLETE, st
    assert uni_table(store, "s") == truth_text(truth)
    assert st.packets == sum(v[0] for v in truth.values())
    assert st.batches_done == st.total_batches > 1
    report = load_report(store, run_of(store, "s"))
    assert report is not None and report.complete
    assert report.summary.flows_uni == len(truth)
    assert report.top_uni[0].bytes == max(v[1] for v in truth.values())


def test_top_n_from_ranking_equals_full_scan(
    store: Store, redis_url: str, sample: tuple[Path, dict]
) -> None:
    path, _ = sample
    settings = settings_for(redis_url, batch_packets=400, engine="fast")
    with LocalWorkers(redis_url, settings.queue, 1) as w:
        run_capture(store, settings, [str(path)], "rank", w)
    keys = run_of(store, "rank")
    t = run_table(keys)
    flows = list(iter_flows(store, t))
    every_uni = [r for k, s in flows for r in uni_rows(k, s)]
    every_bi = [conv_row(k, s) for k, s in flows]
    report = load_report(store, keys)
    assert report is not None
    assert report.top_uni == top(every_uni, "bytes", 20)
    assert report.top_bi == top(every_bi, "bytes", 20)
    assert report.summary.flows_uni == len(every_uni) and report.summary.flows_bi == len(every_bi)
    for n in (1, 2, 7, 50, 10**6):
        uni = [uni_row(k, s, d) for k, s, d in top_directions(store, t, n)]
        assert top(uni, "bytes", n) == top(every_uni, "bytes", n)
        bi = [conv_row(k, s) for k, s in top_conversations(store, t, n)]
        assert top(bi, "bytes", n) == top(every_bi, "bytes", n)


@pytest.mark.slow
def test_one_and_three_workers_identical(
    store: Store, redis_url: str, sample: tuple[Path, dict]
) -> None:
    path, _ = sample
    tables = []
    for n in (1, 3):
        settings = settings_for(redis_url, batch_packets=200)
        with LocalWorkers(redis_url, settings.queue, n) as w:
            assert (
                run_capture(store, settings, [str(path)], f"w{n}", w).state is CaptureState.COMPLETE
            )
        tables.append(table(store, f"w{n}"))
        assert totals(store, run_table(run_of(store, f"w{n}")))
    assert tables[0] == tables[1]
    t1, t3 = (totals(store, run_table(run_of(store, f"w{n}"))) for n in (1, 3))
    assert t1 == t3


def test_replayed_batch_counts_once(
    store: Store, redis_url: str, sample: tuple[Path, dict]
) -> None:
    """A batch job delivered again, payload and all, after the capture completed changes nothing."""
    path, _ = sample
    settings = settings_for(redis_url, batch_packets=500)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        run_capture(store, settings, [str(path)], "dup", w)
        keys = run_of(store, "dup")
        before = _raw_table(store, keys)
        from flowherd.producer.readers.capture import open_capture

        with open_capture(path) as cap:
            recs = [r for _, r in zip(range(500), cap, strict=False)]
        payload = PayloadKeys(keys.run).batch(0)
        store.queue.set(payload, encode_batch(recs))
        q = make_queue(store.queue, settings.queue)
        job = enqueue_batch(
            q, BatchRef(run=keys.run, seq=0, packets=500, shards=keys.shards), 60, 0
        )

        wait_until(
            lambda: job.get_status(refresh=True) in ("finished", "failed"),
            60,
            "the replayed batch's job to finish or fail",
        )
        assert job.get_status() == "finished"
        assert job.return_value()["status"] == "duplicate"
    assert _raw_table(store, keys) == before
    assert store.queue.get(payload) is None  # the replayed payload is dropped, not leaked
