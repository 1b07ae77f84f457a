#!/usr/bin/env python3
"""RQ's cost per batch job, against the work inside it, for each engine's default batch size.

Queues every batch of a trace first (no workers), then runs one flowherd worker in this process
in burst mode and compares its wall time with the time spent inside the batch jobs.

    python bench/job_overhead.py [TRACE]      # default: out/big-200000.pcap (see bench/run.py)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis import Redis
from rq.serializers import JSONSerializer

import flowherd.workers.jobs as jobs
from flowherd.deploy.queueing import FlowherdJob, make_queue
from flowherd.models.settings import Settings
from flowherd.producer.run.submit import submit
from flowherd.store.backend import Store
from flowherd.workers.worker import FlowherdWorker


def main() -> None:
    trace = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "out" / "big-200000.pcap")
    d = tempfile.mkdtemp()
    sock = f"{d}/r.sock"
    redis = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--dir", d],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    conn = Redis.from_url(f"unix://{sock}")
    inside = [0.0]
    process = jobs._process

    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return process(*a, **k)
        finally:
            inside[0] += time.perf_counter() - t

    jobs._process = timed  # type: ignore[assignment]
    try:
        for engine in ("scapy", "fast"):
            conn.flushall()
            inside[0] = 0.0
            s = Settings(
                redis_url=f"unix://{sock}", queue="o", engine=engine, max_in_flight=100_000
            )  # type: ignore[arg-type]
            _, prog = submit(Store.single(conn), make_queue(conn, "o"), [trace], "x", s)
            q = make_queue(conn, "o")
            w = FlowherdWorker(
                [q], connection=conn, serializer=JSONSerializer, job_class=FlowherdJob
            )
            t0 = time.perf_counter()
            w.work(burst=True, logging_level="WARNING")
            total = time.perf_counter() - t0
            n = prog.batches
            cost = total - inside[0]
            print(
                f"{engine}: {n} batch jobs of {s.packets_per_batch} packets; worker wall {total:.2f} s, "
                f"inside the batch jobs {inside[0]:.2f} s; everything else (RQ, the report job) "
                f"{cost / n * 1e3:.1f} ms per batch = {cost / total * 100:.1f}% of the wall time"
            )
    finally:
        redis.terminate()


if __name__ == "__main__":
    main()
