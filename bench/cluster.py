#!/usr/bin/env python3
"""The flow store on one Redis and on a Redis Cluster, end to end, in the same run.

    python bench/cluster.py                          # the benchmark trace, fast engine, 2 workers
    python bench/cluster.py --packets 300000 --workers 2 --repeat 2

Each setup gets a fresh queue Redis and store, ``workers run -n N`` and ``producer submit``;
the time is from submission to the stored report. Setups:

* ``one``         one Redis (queue and store), 1 shard: the default;
* ``cluster``     store on 3 masters, 16 shards;
* ``replicated``  3 masters + 3 replicas, 16 shards, asynchronous replication;
* ``wait``        the same with ``--wait-replicas 1``: every merge acknowledged by a replica.

It prints packets/s and each setup's time as a ratio to ``one`` measured in the same run, and
checks that every setup's totals equal the first one's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from redis import Redis

from flowherd.deploy.cluster import _free_port, start_cluster

BIN = Path(sys.executable).parent


def queue_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            Redis.from_url(url).ping()
            break
        except Exception:
            time.sleep(0.05)
    return proc, url


def run_setup(trace: Path, setup: str, workers: int, tmp: Path) -> dict:
    qproc, qurl = queue_redis(tmp)
    cl = None
    env = {**os.environ, "FLOWHERD_REDIS_URL": qurl}
    env.pop("FLOWHERD_STORE_URL", None)
    extra: list[str] = []
    try:
        if setup != "one":
            cl = start_cluster(tmp / "cluster", 3, 0 if setup == "cluster" else 1)
            env["FLOWHERD_STORE_URL"] = cl.url
        if setup == "wait":
            extra = ["--wait-replicas", "1"]
        pool = subprocess.Popen(
            [str(BIN / "workers"), "run", "-n", str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(2)  # the workers register
        t0 = time.perf_counter()
        subprocess.run(
            [
                str(BIN / "producer"),
                "submit",
                str(trace),
                "--name",
                "b",
                "--engine",
                "fast",
                "--no-wait",
                "--replace",
                *extra,
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        while True:
            out = subprocess.run(
                [str(BIN / "producer"), "status", "b", "--json"],
                env=env,
                capture_output=True,
                text=True,
            )
            st = json.loads(out.stdout) if out.returncode == 0 or out.stdout.startswith("{") else {}
            if st.get("state") in ("complete", "failed", "aborted"):
                break
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        os.killpg(pool.pid, 9)
        pool.wait()
        return {
            "setup": setup,
            "wall_s": wall,
            "packets": st["packets"],
            "bytes": st["bytes"],
            "flows": st["flows"],
            "state": st["state"],
        }
    finally:
        if cl:
            cl.stop()
        qproc.terminate()
        qproc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--trace", type=Path, help="a pcap (default: make_big.py's trace, cached in out/)"
    )
    ap.add_argument("--packets", type=int, default=0, help="use the first N packets only")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--setups", default="one,cluster,replicated,wait")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=ROOT / "out")
    a = ap.parse_args()
    trace = a.trace
    if trace is None:
        trace = a.cache / "big.pcap"
        if not trace.exists():
            a.cache.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, str(SHARED / "bench" / "make_big.py"), "--out", str(trace)],
                check=True,
            )
    if a.packets:
        from bench.run import slice_pcap

        sliced = a.cache / f"slice-{a.packets}.pcap"
        if not sliced.exists():
            slice_pcap(trace, sliced, a.packets)
        trace = sliced
    rows = []
    for r in range(a.repeat):
        for setup in a.setups.split(","):
            with tempfile.TemporaryDirectory(prefix="fh-bench-") as d:
                row = run_setup(trace, setup, a.workers, Path(d))
            row["round"] = r
            rows.append(row)
            print(json.dumps(row), flush=True)
    first = rows[0]
    base = {r["round"]: r["wall_s"] for r in rows if r["setup"] == "one"}
    print(f"\n{'setup':<12}{'round':>6}{'wall s':>9}{'pkt/s':>12}{'vs one':>9}  totals")
    for r in rows:
        same = (r["packets"], r["bytes"], r["flows"]) == (
            first["packets"],
            first["bytes"],
            first["flows"],
        )
        ratio = r["wall_s"] / base[r["round"]] if r["round"] in base else float("nan")
        print(
            f"{r['setup']:<12}{r['round']:>6}{r['wall_s']:>9.2f}{r['packets'] / r['wall_s']:>12,.0f}"
            f"{ratio:>8.2f}x  {'same' if same and r['state'] == 'complete' else 'DIFFERENT ' + r['state']}"
        )


if __name__ == "__main__":
    main()
