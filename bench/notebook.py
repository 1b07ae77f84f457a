#!/usr/bin/env python3
"""A notebook's question both ways: flowherd's ``analyse(...).flows()`` against NFStream's
``NFStreamer(source=...).to_pandas()``, on the same trace, in the same run.

    python bench/notebook.py                       # out/big.pcap if present, else generated
    python bench/notebook.py --packets 1000000 --workers 2
    python bench/notebook.py --trace my.pcap

Each side runs in a fresh Python process (what a notebook's kernel is), timed from the call to
the DataFrame in hand; the figures are its wall time and its peak resident memory (the
process's own; flowherd's worker processes and Redis are reported apart). flowherd runs on a
private redis-server with ``--workers`` local workers; NFStream with its defaults (its own
meters, one per CPU). Both count flows; NFStream's are bidirectional with its default 120 s
idle and 1800 s active timeouts, so flowherd is asked for the same (``direction="bi"``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_flowherd(trace: str, workers: int) -> dict[str, object]:
    import flowherd

    home = tempfile.mkdtemp(prefix="fh-nb-")
    os.environ["FLOWHERD_HOME"] = home
    from flowherd.deploy.local import ensure_local_redis, stop_local_redis

    ensure_local_redis(Path(home))  # started before the clock, as a notebook's would be
    try:
        t0 = time.perf_counter()
        cap = flowherd.analyse(
            trace, name="bench", workers=workers, idle_timeout=120, active_timeout=1800,
            progress=False, replace=True,
        )  # fmt: skip
        df = cap.flows(direction="bi")
        seconds = time.perf_counter() - t0
        rows = len(df)
    finally:
        stop_local_redis(Path(home))
    return {"seconds": seconds, "rows": rows}


def run_nfstream(trace: str) -> dict[str, object]:
    from nfstream import NFStreamer

    t0 = time.perf_counter()
    df = NFStreamer(source=trace).to_pandas()
    return {"seconds": time.perf_counter() - t0, "rows": len(df)}


def child(side: str, trace: str, workers: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", side, "--trace", trace, "--workers", str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", help="a pcap (default: out/big.pcap, else a generated one)")
    ap.add_argument("--packets", type=int, default=500_000, help="of the generated trace")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", choices=["flowherd", "nfstream"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        res = run_flowherd(a.trace, a.workers) if a.child == "flowherd" else run_nfstream(a.trace)
        res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        res["largest_child_rss_mib"] = kids
        print(json.dumps(res))
        return
    trace = a.trace
    tmp = None
    if trace is None and (ROOT / "out" / "big.pcap").exists():
        trace = str(ROOT / "out" / "big.pcap")
    if trace is None:
        from flowherd.producer.traces.mawi import TraceSpec, write_trace

        tmp = tempfile.mkdtemp(prefix="fh-nb-trace-")
        trace = os.path.join(tmp, "trace.pcap")
        spec = TraceSpec(packets=a.packets, flows=max(1, a.packets // 10), duration_s=300)
        write_trace(trace, spec)
    size = os.path.getsize(trace)
    print(
        f"trace {trace}: {size / 1e6:,.1f} MB; {a.workers} flowherd workers; {os.cpu_count()} CPUs"
    )
    results = {side: child(side, trace, a.workers) for side in ("flowherd", "nfstream")}
    for side, r in results.items():
        print(f"{side:9s} {r['seconds']:7.2f} s   peak RSS {r['peak_rss_mib']:7.1f} MiB   "
              f"{r['rows']:,} flows (largest child process {r['largest_child_rss_mib']:.0f} MiB)")  # fmt: skip
    f, n = results["flowherd"], results["nfstream"]
    print(f"flowherd/nfstream: time {float(f['seconds']) / float(n['seconds']):.2f}x, "
          f"peak memory {float(f['peak_rss_mib']) / float(n['peak_rss_mib']):.2f}x")  # fmt: skip
    if tmp:
        os.unlink(trace)
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
