#!/usr/bin/env python3
"""The record exporter's cost (`reporter records`): how fast a live capture's records leave.

A MAWI-like trace (`producer synth`) is fed in time order through the run writer of a live
capture with records that leave as they expire (the frontier published after every batch, as
`producer sniff` does), two workers merge it, then the exporter runs alone on what they left:
it absorbs every batch, folds each conversation and writes every record to NDJSON files. Prints
records, packets, the exporter's wall and CPU time, and CPU microseconds per record and per
packet. Everything runs on this machine (a private redis-server).

    .venv/bin/python bench/records.py                       # 300,000 packets, 60,000 flows
    .venv/bin/python bench/records.py --packets 1500000 --flows 300000 --active 0
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flowherd.deploy.queueing import make_queue
from flowherd.models.expiry import END, RecordsOut
from flowherd.models.flows import NS
from flowherd.models.records import Timeouts
from flowherd.models.settings import Settings
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.producer.run.writer import RunWriter
from flowherd.reporter.query.expire import Exporter
from flowherd.store.backend import Store
from flowherd.store.captures import register
from flowherd.store.lock import RunLock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live import redis_server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--flows", type=int, default=60_000)
    ap.add_argument("--seconds", type=int, default=60, help="trace duration")
    ap.add_argument("--idle", type=float, default=5.0, help="idle timeout, seconds")
    ap.add_argument("--active", type=float, default=30.0, help="active timeout, seconds (0: off)")
    a = ap.parse_args()
    from redis import Redis

    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        trace = tmp / "t.pcap"
        subprocess.run(
            [sys.executable, "-m", "flowherd.producer", "synth", "--packets", str(a.packets),
             "--flows", str(a.flows), "--duration", f"{a.seconds}s", str(trace)],
            check=True, capture_output=True,
        )  # fmt: skip
        with open_capture(trace) as cap:
            frames = sorted(cap, key=lambda r: r.ts_ns)
        redis, url = redis_server(tmp)
        try:
            store = Store.single(Redis.from_url(url))
            settings = Settings(redis_url=url, engine="fast", home=tmp / "home")
            t = Timeouts(int(a.idle * NS), int(a.active * NS))
            out = RecordsOut(dir=str(tmp / "rec"))
            keys = register(store, "bench", ["live:bench"], settings, False)
            with RunLock(store, keys, "bench") as lock, LocalWorkers(url, settings.queue, 2) as w:
                q = make_queue(store.queue, settings.queue)
                wr = RunWriter(store, q, keys, settings, lock=lock, timeouts=t, records=out)
                for i in range(0, len(frames), 16_000):
                    chunk = frames[i : i + 16_000]
                    for r in chunk:
                        wr.add(r)
                    wr.flush()
                    wr.advance(chunk[-1].ts_ns)
                wr.close()
                follow(store, "bench", poll=0.2, check=w.check)
            ex = Exporter(store, keys, "bench", out, t, tmp / "home")
            w0, c0 = time.perf_counter(), time.process_time()
            steps = 0
            while True:
                res = ex.step()
                steps += 1
                if res is None or res.frontier.watermark >= END:
                    break
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            tot = ex.totals()
            files = sorted((tmp / "rec").glob("*.ndjson"))
        finally:
            redis.terminate()
    print(f"trace: {len(frames):,} packets, {a.flows:,} flows over {a.seconds} s; "
          f"idle {a.idle} s, active {a.active} s")  # fmt: skip
    print(f"records: {tot.records:,} ({tot.packets:,} packets) in {len(files)} files, "
          f"{steps} steps")  # fmt: skip
    print(f"exporter: {wall:.2f} s wall, {cpu:.2f} s CPU: {1e6 * cpu / max(tot.records, 1):.1f} "
          f"us per record, {1e6 * cpu / max(tot.packets, 1):.2f} us per packet, "
          f"{tot.records / max(cpu, 1e-9):,.0f} records per CPU second")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
