"""Tumbling windows end to end: per-window tables equal offline ones; the reporter's views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowherd.models.capture import CaptureState
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.reporter.query import windows
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_flows, table
from flowherd.workers.decode.dissect import dissect
from flowherd.workers.fold.aggregate import PartialTable, fold
from tests.support.pipeline import run_capture, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e]
W = 10 * 10**9


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("w") / "w.pcap"
    write_sample(p, flows=200, seed=21)
    return p


def test_windows_equal_offline_and_sum_to_whole(store: Store, redis_url: str, trace: Path) -> None:
    # small batches in a shuffled-by-workers order: every batch straddles window boundaries
    settings = settings_for(redis_url, batch_packets=700, window=W / 1e9, engine="fast")
    with LocalWorkers(redis_url, settings.queue, 3) as w:
        st = run_capture(store, settings, [str(trace)], "win", w)
    assert st.state is CaptureState.COMPLETE
    with open_capture(trace) as cap:
        recs = list(cap)
    offline: dict[int, list] = {}
    for r in recs:
        offline.setdefault(r.ts_ns - r.ts_ns % W, []).append(r)
    keys = run_of(store, "win")
    assert windows.starts(store, keys) == sorted(offline)
    assert len(offline) >= 6
    whole = PartialTable()
    for start, rs in offline.items():
        expect = fold(rs, dissect)
        assert dict(iter_flows(store, table(keys, start))) == expect.flows
        whole.merge(expect)
    assert dict(iter_flows(store, table(keys))) == whole.flows
    sums = windows.summaries(store, keys)
    assert sum(s.packets for s in sums) == st.packets == len(recs)


def _cli(redis_url: str, *args: str) -> str:
    res = CliRunner().invoke(
        reporter_main, [*args, "--redis-url", redis_url], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_window_views(store: Store, redis_url: str, trace: Path, tmp_path: Path) -> None:
    settings = settings_for(redis_url, window=10.0, keep_windows=4)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        run_capture(store, settings, [str(trace)], "views", w)
    keys = run_of(store, "views")
    starts = windows.starts(store, keys)
    assert len(starts) == 4  # retention kept the newest four
    listed = json.loads(_cli(redis_url, "windows", "views", "--json"))
    assert [x["start_ns"] for x in listed] == starts
    per = json.loads(
        _cli(redis_url, "top", "views", "--window", "all", "-n", "3", "--format", "json")
    )
    assert len(per) == 4 and all(len(x["rows"]) <= 3 for x in per)
    latest = json.loads(_cli(redis_url, "top", "views", "--window", "latest", "--format", "json"))
    assert latest[0]["window_start"] == per[-1]["window_start"]
    inside = str(starts[1] / 1e9 + 3.5)
    one = json.loads(
        _cli(redis_url, "top", "views", "--window", inside, "-n", "3", "--format", "json")
    )
    assert one == [per[1]]
    pers = json.loads(_cli(redis_url, "persist", "views", "-n", "3", "--json"))
    counts = {}
    for x in per:
        for r in x["rows"]:
            k = (r["src"], r["dst"], r["sport"], r["dport"])
            counts[k] = counts.get(k, 0) + 1
    assert sorted(len(p["windows"]) for p in pers) == sorted(counts.values())
    assert len(pers[0]["windows"]) == max(counts.values())
    out = tmp_path / "t.png"
    _cli(redis_url, "hist", "views", "--timeline", "-o", str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "top" in _cli(redis_url, "watch", "views", "--once")


def test_no_windows_is_a_clear_error(store: Store, redis_url: str, trace: Path) -> None:
    settings = settings_for(redis_url)
    with LocalWorkers(redis_url, settings.queue, 1) as w:
        run_capture(store, settings, [str(trace)], "plain", w)
    res = CliRunner().invoke(reporter_main, ["persist", "plain", "--redis-url", redis_url])
    assert res.exit_code == 1 and "--window" in res.output and "Traceback" not in res.output
