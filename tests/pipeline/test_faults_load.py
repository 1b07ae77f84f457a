"""Load held: many captures at once, from producer threads and producer processes, into the
same queue and the same workers, never mix their counters."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from redis import Redis

from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from tests.support.pipeline import assert_exact, follow_for, settings_for, submit_with

# a hang guard above the test's own deadlines, so those fail first
pytestmark = [
    pytest.mark.redis,
    pytest.mark.e2e,
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("nworkers", [1, 3])
def test_many_captures_from_several_producers_never_mix(
    store: Store, redis_url: str, tmp_path: Path, nworkers: int
) -> None:
    """Four producer threads (each with its own client) and two producer processes submit six
    different traces at the same time, with small batches interleaving on one queue: every
    capture's flows and totals equal its own ground truth."""
    settings = settings_for(redis_url, batch_packets=150, max_in_flight=4)
    traces = {}
    for i in range(6):
        path = tmp_path / f"c{i}.pcap"
        traces[f"c{i}"] = (path, write_sample(path, flows=60 + 15 * i, seed=100 + i))
    errors: list[BaseException] = []

    def produce(name: str) -> None:
        try:
            c = Redis.from_url(redis_url)
            submit_with(Store.single(c), settings, traces[name][0], name)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with LocalWorkers(redis_url, settings.queue, nworkers) as w:
        procs = [
            subprocess.Popen(
                [
                    *(
                        sys.executable,
                        "-m",
                        "flowherd.producer",
                        "submit",
                        str(traces[n][0]),
                        "--name",
                        n,
                    ),
                    *("--redis-url", redis_url, "--queue", settings.queue),
                    *("--batch-packets", "150", "--max-in-flight", "4", "--no-wait"),
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for n in ("c4", "c5")
        ]
        threads = [threading.Thread(target=produce, args=(f"c{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()
        assert not errors, errors
        statuses = {n: follow_for(store, n, 120, w) for n in traces}
    for name, (_, truth) in traces.items():
        assert_exact(store, name, statuses[name], truth)
    assert len({st.run for st in statuses.values()}) == len(traces)
