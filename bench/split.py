#!/usr/bin/env python3
"""Where a batch's time goes, stage by stage, in one process on one core.

    python bench/split.py out/big.pcap                  # every stage, the fast engine
    python bench/split.py out/big.pcap --fold scalar    # the per-frame fold instead
    python bench/split.py out/big.pcap --packets 200000 --batch 16000

Stages, each timed alone over the whole trace: the producer reading the capture and packing
batch payloads (``CaptureReader.blocks`` cut by ``flowherd.producer.run.writer.pieces`` into ``BatchBuilder``
s); the worker decoding each payload (``decode_columns``, and for the per-frame folds one record
per frame); folding it (``--fold vector``: :func:`flowherd.workers.fold.vector.fold_vector`, the fast engine;
``scalar``: :func:`flowherd.workers.fold.aggregate.fold` with ``dissect_fast`` frame by frame; ``scapy``: the
scapy engine); merging it into a private redis-server (``merge_partial``: the split by shard, the
merge script, the batch count; the redis-server's own CPU seconds beside); with ``--submit``,
the producer's whole submission of the whole trace (read, pack, store payloads, enqueue jobs)
with no worker running. Prints wall and CPU
seconds per stage (CPU time is what other programs on a shared machine disturb least) and one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis import Redis

from flowherd.models.batch import BatchBuilder, Columns, decode_columns
from flowherd.models.keys import RunKeys
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.writer import pieces
from flowherd.store.backend import Store
from flowherd.workers.decode.dissect import dissect
from flowherd.workers.decode.fastpath import dissect_fast
from flowherd.workers.fold.aggregate import PartialTable, fold
from flowherd.workers.merge import merge_partial


@contextmanager
def private_redis() -> Iterator[Redis]:
    """A fresh redis-server on a unix socket, no persistence; removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="fh-split-"))
    sock = d / "r.sock"
    args = ["--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(["redis-server", *args, "--dir", str(d)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(250):
            if sock.exists():
                break
            time.sleep(0.02)
        yield Redis(unix_socket_path=str(sock))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def _redis_cpu(conn: Redis) -> float:
    """CPU seconds the redis-server has used so far (its own INFO)."""
    info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def folder(name: str) -> Callable[[Columns | list], PartialTable]:
    if name == "vector":
        from flowherd.workers.fold.vector import fold_vector

        return lambda records: fold_vector(records, dissect_fast)
    if name == "scalar":
        return lambda records: fold(records, dissect_fast)
    return lambda records: fold(records, dissect)


def read_pack(trace: Path, packets: int, per_batch: int, limit: int) -> list[bytes]:
    """The producer's reading and packing: blocks of columns cut into batch payloads."""
    payloads: list[bytes] = []
    b, left = BatchBuilder(), packets or -1
    with open_capture(trace) as cap:
        for block in cap.blocks():
            if left >= 0:
                block = block.slice(0, left)
                left -= len(block)
            for part, full in pieces(block, b.count, b.size, per_batch, limit):
                b.add_columns(part)
                if full:
                    payloads.append(b.payload())
                    b = BatchBuilder()
            if left == 0:
                break
    if b.count:
        payloads.append(b.payload())
    return payloads


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("trace", type=Path)
    ap.add_argument("--packets", type=int, default=0, help="first N packets only (0: all)")
    ap.add_argument("--batch", type=int, default=16_000, help="packets per batch")
    ap.add_argument("--fold", choices=("vector", "scalar", "scapy"), default="vector")
    ap.add_argument(
        "--submit",
        action="store_true",
        help="also time `producer submit` of the whole trace into Redis, no worker running "
        "(read, pack, store payloads, enqueue jobs)",
    )
    a = ap.parse_args()

    t0, c0 = time.perf_counter(), time.process_time()
    payloads = read_pack(a.trace, a.packets, a.batch, 4 * 1024 * 1024)
    times = {"producer_read_pack": time.perf_counter() - t0}
    cpu = {"producer_read_pack": time.process_time() - c0}

    fn = folder(a.fold)
    times.update(decode=0.0, fold=0.0, merge=0.0)
    cpu.update(decode=0.0, fold=0.0, merge=0.0)
    packets = merged = 0
    with private_redis() as conn:
        store = Store.single(conn)
        keys = RunKeys("benchsplit")
        conn.set(keys.shard(0).live, "1")
        conn.hset(keys.meta, "state", "submitting")
        redis0 = _redis_cpu(conn)
        for seq, payload in enumerate(payloads):  # one batch at a time, as a worker does
            t0, c0 = time.perf_counter(), time.process_time()
            cols = decode_columns(payload)
            records = cols if a.fold == "vector" else cols.records()
            t1, c1 = time.perf_counter(), time.process_time()
            table = fn(records)
            t2, c2 = time.perf_counter(), time.process_time()
            merge_partial(store, keys, seq, table)
            t3, c3 = time.perf_counter(), time.process_time()
            times["decode"] += t1 - t0
            times["fold"] += t2 - t1
            times["merge"] += t3 - t2
            cpu["decode"] += c1 - c0
            cpu["fold"] += c2 - c1
            cpu["merge"] += c3 - c2
            packets += len(records)
            merged += len(table.flows)
        flows = int(conn.hlen(keys.shard(0).flows))
        cpu["merge_redis"] = _redis_cpu(conn) - redis0

    submitted = packets
    if a.submit:
        with private_redis() as conn:
            from flowherd.deploy.queueing import make_queue
            from flowherd.models.settings import Settings
            from flowherd.producer.run.submit import submit

            settings = Settings(
                queue="split", batch_packets=a.batch, engine="fast", max_in_flight=100_000
            )
            t0, c0 = time.perf_counter(), time.process_time()
            _, prog = submit(
                Store.single(conn), make_queue(conn, "split"), [str(a.trace)], "split", settings
            )
            times["producer_submit"] = time.perf_counter() - t0
            cpu["producer_submit"] = time.process_time() - c0
            submitted = prog.packets

    print(
        f"{packets:,} packets in {len(payloads)} batches of {a.batch:,}; {flows:,} flows "
        f"({merged:,} merged per batch); fold {a.fold}",
        file=sys.stderr,
    )
    print(f"  {'stage':20s} {'wall s':>8s} {'CPU s':>8s} {'packets/CPU s':>14s}", file=sys.stderr)
    for stage, c in cpu.items():
        w = f"{times[stage]:8.3f}" if stage in times else " " * 8
        n = submitted if stage == "producer_submit" else packets  # the whole trace
        print(f"  {stage:20s} {w} {c:8.3f} {n / c:>14,.0f}", file=sys.stderr)
    print(
        json.dumps(
            {
                "trace": str(a.trace),
                "packets": packets,
                "batches": len(payloads),
                "fold": a.fold,
                "flows": flows,
                "flow_merges": merged,
                "seconds": {k: round(v, 3) for k, v in times.items()},
                "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
