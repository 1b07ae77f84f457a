#!/usr/bin/env python3
"""Many small files against one file of the same packets: what `producer submit` costs per file.

    python bench/many_files.py                       # 10,000 files of 100 packets vs one file
    python bench/many_files.py --files 2000 --per-file 100

A MAWI-like trace of FILES x PER_FILE packets is generated (producer/traces/mawi.py) and cut
into FILES classic pcaps of PER_FILE records each (the directory a `tcpdump -G` or a capture
appliance leaves). Both are submitted to a fresh redis-server (no workers: the producer's time
alone, with no backpressure): the one file, then the directory (every file checked, ordered by
first timestamp, fingerprinted and read). It prints the seconds of each, packets/s and the
ratio (target: at most 2x), and checks both runs queued the same packets.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis import Redis

from flowherd.deploy.queueing import make_queue
from flowherd.models.settings import Settings
from flowherd.producer.readers.sources import expand
from flowherd.producer.run.submit import submit
from flowherd.producer.traces.mawi import TraceSpec, write_trace
from flowherd.store.backend import Store


def split(trace: Path, one: Path, out: Path, nfiles: int, per_file: int) -> None:
    """Cut the first ``nfiles * per_file`` records of the classic pcap ``trace`` into files of
    ``per_file`` records in ``out``, and write the same records as the one file ``one``."""
    data = trace.read_bytes()
    head, pos, n, files = data[:24], 24, 0, 0
    start = pos
    while files < nfiles:
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        pos += 16 + caplen
        n += 1
        if n == per_file:
            (out / f"part-{files:06d}.pcap").write_bytes(head + data[start:pos])
            files, n, start = files + 1, 0, pos
    one.write_bytes(data[:pos])


def redis_server(d: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = d / "r.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
         "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(500):
        if sock.exists():
            break
        time.sleep(0.02)
    return proc, f"unix://{sock}"


def timed_submit(url: str, args: list[str], name: str) -> tuple[float, int, int]:
    """Seconds to expand ``args`` and submit them (no workers), packets and batches queued."""
    conn = Redis.from_url(url)
    conn.flushall()
    store = Store.single(conn)
    settings = Settings(redis_url=url, queue="bench", engine="fast", max_in_flight=100_000)
    t0 = time.perf_counter()
    found = expand(args)
    q = make_queue(conn, "bench")
    _, prog = submit(store, q, found.sources, name, settings, checked=found.checked)
    seconds = time.perf_counter() - t0
    conn.flushall()
    return seconds, prog.packets, prog.batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--per-file", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the best is kept")
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="fh-many-"))
    try:
        packets = a.files * a.per_file
        spec = TraceSpec(packets=packets * 11 // 10, flows=max(1, packets // 20), duration_s=600)
        write_trace(d / "gen.pcap", spec)  # a few percent more than asked: cut to the count
        trace, parts, nfiles = d / "one.pcap", d / "parts", a.files
        parts.mkdir()
        split(d / "gen.pcap", trace, parts, nfiles, a.per_file)
        (d / "gen.pcap").unlink()
        proc, url = redis_server(d)
        try:
            one = min(timed_submit(url, [str(trace)], "one") for _ in range(a.repeat))
            many = min(timed_submit(url, [str(parts)], "many") for _ in range(a.repeat))
            names = sorted(str(p) for p in parts.iterdir())
            listed = min(timed_submit(url, names, "listed") for _ in range(a.repeat))
        finally:
            proc.terminate()
            proc.wait()
        assert one[1] == many[1] == listed[1], (one, many, listed)
        print(f"packets            {one[1]:,}")
        print(
            f"one file           {one[0]:.2f} s  ({one[1] / one[0]:,.0f} packets/s, {one[2]} batches)"
        )
        print(f"{nfiles:,} files  {many[0]:.2f} s  ({many[1] / many[0]:,.0f} packets/s, "
              f"{many[2]} batches, {many[0] / nfiles * 1e6:.0f} us per file)")  # fmt: skip
        print(f"  named one by one {listed[0]:.2f} s  (ratio {listed[0] / one[0]:.2f}x)")
        print(f"ratio              {many[0] / one[0]:.2f}x  (target: at most 2x)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
