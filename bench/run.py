#!/usr/bin/env python3
"""flowherd throughput benchmark: the single-process scapy baseline vs flowherd end to end.

    python bench/run.py                       # slice of ../shared/bench/make_big.py's trace
    python bench/run.py --packets 200000 --workers 1,2
    python bench/run.py --trace my.pcap       # any pcap/pcapng
    python bench/run.py --trace out/big.pcap --engines fast --peers   # vs tshark and NFStream

For each worker count it starts a fresh private redis-server and N worker processes, submits
the trace, and measures until the report is stored (submit -> merged tables -> report). It prints
packets/s, MB/s (wire bytes), the ratio to the baseline measured in the same run, peak memory of
producer, workers and Redis, and where the workers' time went (decode+dissect+fold vs merge).
``--peers`` also times tshark's conversation tables and NFStream on the same trace in the same
run (bench/peers.py) and prints flowherd's ratio to each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from redis import Redis

from bench.peers import cpu_seconds, nfstream_flows, tshark_conv
from flowherd.deploy.queueing import make_queue
from flowherd.models.capture import CaptureStatus
from flowherd.models.settings import Settings
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.producer.run.submit import submit
from flowherd.store.backend import Store


def slice_pcap(src: Path, dst: Path, packets: int) -> int:
    """Copy the first ``packets`` records of a classic pcap (struct only)."""
    import struct

    n = 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        hdr = fi.read(24)
        fo.write(hdr)
        endian = "<" if hdr[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        while n < packets:
            rh = fi.read(16)
            if len(rh) < 16:
                break
            caplen = struct.unpack(endian + "IIII", rh)[2]
            fo.write(rh + fi.read(caplen))
            n += 1
    return n


def read_rate(trace: Path) -> dict:
    """The producer's reading alone: every record of the trace in blocks, nothing queued."""
    t0 = time.perf_counter()
    n = 0
    with open_capture(trace) as cap:
        for block in cap.blocks():
            n += len(block)
    s = time.perf_counter() - t0
    return {"packets": n, "seconds": round(s, 3), "packets_per_s": round(n / s)}


def pack_rate(trace: Path, batch: int, compress: bool) -> dict:
    """The producer's reading and packing: every record into batch payloads, nothing queued."""
    from flowherd.models.batch import BatchBuilder
    from flowherd.producer.run.writer import pieces

    t0 = time.perf_counter()
    n = nbytes = 0
    b = BatchBuilder()
    with open_capture(trace) as cap:
        for block in cap.blocks():
            n += len(block)
            for part, full in pieces(block, b.count, b.size, batch, 4 * 1024 * 1024):
                b.add_columns(part)
                if full:
                    nbytes += len(b.payload(compress))
                    b = BatchBuilder()
    if b.count:
        nbytes += len(b.payload(compress))
    s = time.perf_counter() - t0
    return {"packets": n, "seconds": round(s, 3), "packets_per_s": round(n / s), "bytes": nbytes}


def baseline(trace: Path, limit: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(SHARED / "bench" / "seed_baseline.py"),
            str(trace),
            "--limit",
            str(limit),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_rss_kib(pid: int) -> int:
    """VmHWM of a process and its children (KiB)."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
        except OSError:
            pass
    return total


def run_flowherd(trace: Path, workers: int, batch: int, engine: str) -> dict:
    d = Path(tempfile.mkdtemp(prefix="fh-bench-"))
    sock = d / "r.sock"
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"unix://{sock}"
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.02)
    conn = Redis.from_url(url)
    store = Store.single(conn)
    settings = Settings(redis_url=url, queue="bench", batch_packets=batch or None, engine=engine)
    try:
        with LocalWorkers(url, "bench", workers) as w:
            time.sleep(1.0)  # let the worker processes import scapy before the clock starts
            t0 = time.perf_counter()
            submit(store, make_queue(conn, "bench"), [str(trace)], "bench", settings)
            t_submit = time.perf_counter() - t0
            merged_at: list[float] = []

            def on_update(s: CaptureStatus) -> None:
                if (
                    not merged_at
                    and s.total_batches is not None
                    and s.batches_done == s.total_batches
                ):
                    merged_at.append(time.perf_counter())

            st = follow(store, "bench", on_update=on_update, poll=0.02, check=w.check)
            elapsed = time.perf_counter() - t0
            report_s = elapsed - (merged_at[0] - t0) if merged_at else 0.0
            worker_rss = _peak_rss_kib(w.proc.pid)
        dissect_us = merge_us = 0
        q = make_queue(conn, "bench")
        for job in q.job_class.fetch_many(
            [f"fh-{st.run}-{i}" for i in range(st.total_batches or 0)],
            connection=conn,
            serializer=q.serializer,
        ):
            rv = job.return_value() if job else None
            if rv:
                dissect_us += rv.get("dissect_us", 0)
                merge_us += rv.get("merge_us", 0)
        info = conn.info("memory")
        return {
            "workers": workers,
            "engine": engine,
            "state": st.state.value,
            "packets": st.packets,
            "bytes": st.bytes,
            "flows": st.flows,
            "seconds": round(elapsed, 3),
            "submit_seconds": round(t_submit, 3),
            "report_seconds": round(report_s, 3),
            "packets_per_s": round(st.packets / elapsed),
            "mb_per_s": round(st.bytes / elapsed / 1e6, 1),
            "producer_peak_rss_mib": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            ),
            "worker_peak_rss_mib": round(worker_rss / 1024),
            "redis_peak_mib": round(info["used_memory_peak"] / 2**20, 1),
            "worker_dissect_s": round(dissect_us / 1e6, 2),
            "worker_merge_s": round(merge_us / 1e6, 2),
        }
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--trace", type=Path, help="trace to use (default: a slice of make_big.py's trace)"
    )
    ap.add_argument("--packets", type=int, default=100_000, help="slice size of the big trace")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument(
        "--batch", type=int, default=0, help="packets per batch (0: the engine default)"
    )
    ap.add_argument("--engines", default="scapy,fast", help="comma-separated engines to run")
    ap.add_argument(
        "--baseline-packets",
        type=int,
        default=200_000,
        help="run the baseline on at most this many packets (its rate is per packet; 0: skip it)",
    )
    ap.add_argument(
        "--tshark",
        action="store_true",
        help="also time tshark -z conv,tcp -z conv,udp on the same trace",
    )
    ap.add_argument(
        "--peers",
        action="store_true",
        help="also time tshark conv and NFStream (timeouts off, no DPI) on the same trace",
    )
    ap.add_argument("--cache", type=Path, default=ROOT / "out", help="where the big trace is kept")
    a = ap.parse_args()
    trace = a.trace
    if trace is None:
        big = a.cache / "big.pcap"
        if not big.exists():
            a.cache.mkdir(parents=True, exist_ok=True)
            print(f"building {big} with make_big.py (about 20 s)...", file=sys.stderr)
            subprocess.run(
                [sys.executable, str(SHARED / "bench" / "make_big.py"), "--out", str(big)],
                check=True,
            )
        trace = a.cache / f"big-{a.packets}.pcap"
        if not trace.exists():
            slice_pcap(big, trace, a.packets)
    print(
        f"trace: {trace} ({trace.stat().st_size / 1e6:.1f} MB), machine: {os.cpu_count()} CPUs",
        file=sys.stderr,
    )
    base = baseline(trace, a.baseline_packets) if a.baseline_packets else None
    if base:
        print(
            f"baseline (seed_baseline.py, 1 process): {base['packets_per_s']:,.0f} packets/s "
            f"({base['packets']:,} packets in {base['seconds']} s)"
        )
    reading = read_rate(trace)
    print(f"producer read alone: {reading['packets_per_s']:,} records/s", flush=True)
    packing = pack_rate(trace, a.batch or 16_000, Settings().compress)
    print(f"producer read and pack: {packing['packets_per_s']:,} records/s", flush=True)
    tshark = nfstream = None
    peers: list[dict] = []
    if a.tshark or a.peers:
        peers.append(tshark_conv(trace))
        tshark = peers[-1]["seconds"]
        print(f"tshark conv,tcp+conv,udp: {tshark} s, CPU {peers[-1]['cpu_seconds']} s", flush=True)
    if a.peers:
        peers.append(nfstream_flows(trace))
        nfstream = peers[-1]["seconds"]
        print(
            f"nfstream (timeouts off, no DPI): {nfstream or peers[-1].get('error')} s, "
            f"CPU {peers[-1].get('cpu_seconds')} s",
            flush=True,
        )
    results = []
    for engine in a.engines.split(","):
        for n in (int(x) for x in a.workers.split(",")):
            c0 = cpu_seconds()
            r = run_flowherd(trace, n, a.batch, engine)
            r["cpu_seconds"] = round(cpu_seconds() - c0, 3)  # producer, workers, Redis
            if base:
                r["ratio_to_baseline"] = round(r["packets_per_s"] / base["packets_per_s"], 2)
            if tshark:
                r["ratio_to_tshark"] = round(float(tshark) / r["seconds"], 2)
            if nfstream:
                r["ratio_to_nfstream"] = round(float(nfstream) / r["seconds"], 2)
            vs = "".join(
                f"; {r[k]}x {name}"
                for k, name in (("ratio_to_tshark", "tshark"), ("ratio_to_nfstream", "NFStream"))
                if k in r
            )
            results.append(r)
            print(
                f"flowherd {engine}, {n} worker(s): {r['packets_per_s']:,} packets/s, "
                f"{r['mb_per_s']} MB/s, {r.get('ratio_to_baseline', '-')}x baseline; {r['seconds']} s end "
                f"to end (producer done after {r['submit_seconds']} s, report {r['report_seconds']} s after "
                f"the last merge); worker time: dissect "
                f"{r['worker_dissect_s']} s, merge {r['worker_merge_s']} s; peak RSS producer "
                f"{r['producer_peak_rss_mib']} MiB, worker {r['worker_peak_rss_mib']} MiB, "
                f"Redis {r['redis_peak_mib']} MiB; CPU {r['cpu_seconds']} s; {r['state']}{vs}",
                flush=True,
            )
    print(
        json.dumps(
            {
                "trace": str(trace),
                "baseline": base and {k: base[k] for k in ("packets", "seconds", "packets_per_s")},
                "tshark_seconds": tshark,
                "nfstream_seconds": nfstream,
                "peers": peers,
                "producer_read": reading,
                "producer_read_pack": packing,
                "flowherd": results,
            }
        )
    )


if __name__ == "__main__":
    main()
