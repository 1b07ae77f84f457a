"""End to end with real RQ worker processes: exact numbers, any worker count, no double counts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis

from deploy.queueing import enqueue_batch, make_queue
from models.batch import encode_batch
from models.capture import BatchRef, CaptureState
from producer.follow import LocalWorkers
from producer.sample import write_sample
from reporter.rank import top
from reporter.store import iter_flows, load_report, run_of, top_conversations, top_directions
from reporter.views import conv_row, uni_row, uni_rows
from tests.pipeline import run_capture, settings_for, table

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("sample") / "sample.pcap"
    truth = write_sample(path, flows=250, seed=11)
    return path, truth


def _uni(conn: Redis, name: str) -> dict:
    out = {}
    for key, st in table(conn, name).items():
        for r in uni_rows(key, st):
            out[(r.src, r.dst, r.proto, r.sport, r.dport)] = [r.packets, r.bytes]
    return out


def _truth_text(truth: dict) -> dict:
    from models.flows import addr_text

    return {(addr_text(s), addr_text(d), p, sp, dp): v for (s, d, p, sp, dp), v in truth.items()}


@pytest.mark.parametrize(("nworkers", "engine"), [(1, "scapy"), (3, "scapy"), (2, "fast")])
def test_tables_equal_ground_truth(
    conn: Redis, redis_url: str, sample: tuple[Path, dict], nworkers: int, engine: str
) -> None:
    path, truth = sample
    settings = settings_for(redis_url, batch_packets=300, max_in_flight=4, engine=engine)
    with LocalWorkers(redis_url, settings.queue, nworkers) as w:
        st = run_capture(conn, settings, [str(path)], "s", w)
    assert st.state is CaptureState.COMPLETE, st
    assert _uni(conn, "s") == _truth_text(truth)
    assert st.packets == sum(v[0] for v in truth.values())
    assert st.batches_done == st.total_batches > 1
    report = load_report(conn, run_of(conn, "s"))
    assert report is not None and report.complete
    assert report.summary.flows_uni == len(truth)
    assert report.top_uni[0].bytes == max(v[1] for v in truth.values())


def test_top_n_from_ranking_equals_full_scan(
    conn: Redis, redis_url: str, sample: tuple[Path, dict]
) -> None:
    path, _ = sample
    settings = settings_for(redis_url, batch_packets=400, engine="fast")
    with LocalWorkers(redis_url, settings.queue, 1) as w:
        run_capture(conn, settings, [str(path)], "rank", w)
    keys = run_of(conn, "rank")
    flows = list(iter_flows(conn, keys))
    every_uni = [r for k, s in flows for r in uni_rows(k, s)]
    every_bi = [conv_row(k, s) for k, s in flows]
    report = load_report(conn, keys)
    assert report is not None
    assert report.top_uni == top(every_uni, "bytes", 20)
    assert report.top_bi == top(every_bi, "bytes", 20)
    assert report.summary.flows_uni == len(every_uni) and report.summary.flows_bi == len(every_bi)
    for n in (1, 2, 7, 50, 10**6):
        uni = [uni_row(k, s, d) for k, s, d in top_directions(conn, keys, n)]
        assert top(uni, "bytes", n) == top(every_uni, "bytes", n)
        bi = [conv_row(k, s) for k, s in top_conversations(conn, keys, n)]
        assert top(bi, "bytes", n) == top(every_bi, "bytes", n)


def test_one_and_three_workers_identical(
    conn: Redis, redis_url: str, sample: tuple[Path, dict]
) -> None:
    path, _ = sample
    tables = []
    for n in (1, 3):
        settings = settings_for(redis_url, batch_packets=200)
        with LocalWorkers(redis_url, settings.queue, n) as w:
            assert (
                run_capture(conn, settings, [str(path)], f"w{n}", w).state is CaptureState.COMPLETE
            )
        tables.append(table(conn, f"w{n}"))
        assert conn.hgetall(run_of(conn, f"w{n}").totals)
    assert tables[0] == tables[1]
    t1, t3 = (conn.hgetall(run_of(conn, f"w{n}").totals) for n in (1, 3))
    assert t1 == t3


def test_replayed_batch_counts_once(conn: Redis, redis_url: str, sample: tuple[Path, dict]) -> None:
    """A batch job delivered again, payload and all, after the capture completed changes nothing."""
    path, _ = sample
    settings = settings_for(redis_url, batch_packets=500)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        run_capture(conn, settings, [str(path)], "dup", w)
        keys = run_of(conn, "dup")
        before = (conn.hgetall(keys.flows), conn.hgetall(keys.totals))
        from producer.capture import open_capture

        with open_capture(path) as cap:
            recs = [r for _, r in zip(range(500), cap, strict=False)]
        conn.set(keys.batch(0), encode_batch(recs))
        q = make_queue(conn, settings.queue)
        job = enqueue_batch(q, BatchRef(run=keys.run, seq=0, packets=500), 60, 0)

        deadline = time.monotonic() + 30
        while (
            job.get_status(refresh=True) not in ("finished", "failed")
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert job.get_status() == "finished"
        assert job.return_value()["status"] == "duplicate"
    assert (conn.hgetall(keys.flows), conn.hgetall(keys.totals)) == before
    assert conn.get(keys.batch(0)) is None  # the replayed payload is dropped, not leaked
