#!/usr/bin/env python3
"""The reporter's read side on big tables: rows/s and peak memory, today's path against the
streaming one, on one Redis.

Loads a flow table into a private redis-server (unix socket; or ``--redis-url``) in the stored
format (HSET pipelines), either a synthetic heavy-tailed table of N unidirectional flows or
the table behind a uni CSV (e.g. ``big.truth.uni.csv`` from ``../shared/bench/make_big.py``:
the benchmark trace's 137,074 flows), then runs each measurement in a fresh process and prints
wall time, the process's CPU time, rows/s and peak RSS (VmHWM).

    python bench/report.py --flows 137074 --flows 5000000
    python bench/report.py --uni-csv /tmp/big.truth.uni.csv --flows 5000000
    python bench/report.py --flows 200000 --only flows-csv,flows-csv-raw

Measurements (``--only``; ``before-*`` run up to ``--before-max`` flows, they hold the table):

* ``before-flows``: ``reporter flows --format csv`` until now: every row as a model, sorted
  (``top(all_rows(...), "bytes", maxsize)``), then ``rows_csv``;
* ``before-report``: ``make_report`` (the table in a list); ``before-hist``: every size in a
  list, then the figure (the figure code of the file named by ``$FH_OLD_PLOTS`` if set, e.g.
  ``git show 17cc367:reporter/plots.py > /tmp/old_plots.py``);
* ``flows-csv`` (``hscan_iter``), ``flows-csv-raw`` (HSCAN replies read without building a
  dict), ``flows-csv-prefetch`` (raw, the next page read by a thread while this one is
  written), ``flows-bi-csv``: :func:`flowherd.reporter.output.lines.write_rows` in table order;
  ``flows-ranked``: :func:`flowherd.reporter.output.ranked_lines.write_rows_ranked` (largest first);
* ``report``: :func:`flowherd.reporter.analysis.report.stream_report`; ``hist``: a
  :class:`~flowherd.reporter.analysis.sizes.SizeDist` in one pass, exact elephant thresholds, the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tables import KEY, from_uni_csv, load, synthetic

ALL = (
    "before-flows",
    "flows-csv",
    "flows-csv-raw",
    "flows-csv-prefetch",
    "flows-bi-csv",
    "flows-ranked",
    "before-report",
    "report",
    "before-hist",
    "hist",
)


# ---------------------------------------------------------------------------------------------
# tables


def _raw_pages(conn: Any, count: int) -> Iterator[list[bytes]]:
    """HSCAN replies as flat [k1, v1, k2, v2, ...] lists (no dict, no decoding)."""
    conn.set_response_callback("HSCAN", lambda r, **kw: r)
    cursor: Any = 0
    while True:
        cursor, flat = conn.execute_command("HSCAN", KEY, cursor, "COUNT", count)
        yield flat
        if cursor in (0, b"0"):
            return


def raw_pairs(conn: Any, count: int) -> Iterator[tuple[bytes, bytes]]:
    for flat in _raw_pages(conn, count):
        it = iter(flat)
        yield from zip(it, it, strict=True)


def prefetched_pairs(conn: Any, count: int) -> Iterator[tuple[bytes, bytes]]:
    """:func:`raw_pairs` with the next page read by a thread (Redis works while we write)."""
    q: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=2)

    def reader() -> None:
        for flat in _raw_pages(conn, count):
            q.put(flat)
        q.put(None)

    threading.Thread(target=reader, daemon=True).start()
    while (flat := q.get()) is not None:
        it = iter(flat)
        yield from zip(it, it, strict=True)


def _status() -> Any:
    from flowherd.models.capture import CaptureState, CaptureStatus

    return CaptureStatus(
        name="bench", run="0" * 16, state=CaptureState.COMPLETE, created_ns=0, sources=[],
        batches_enqueued=1, batches_done=1, batches_failed=0, total_batches=1, packets=0,
        bytes=0, counted_packets=0, counted_bytes=0, flows=0, not_counted={}, first_ns=None,
        last_ns=None,
    )  # fmt: skip


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(what: str, url: str, count: int, out_dir: str) -> dict[str, Any]:
    from redis import Redis

    try:  # what every reporter command loads anyway (click, rich, pydantic, the store)
        import flowherd.reporter.cli.main  # noqa: F401
    except Exception:  # the CLI is being rewired elsewhere; measure without it
        pass
    conn = Redis.from_url(url)
    sink = open(os.devnull, "w")  # noqa: SIM115
    extra: dict[str, Any] = {}
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    rows = 0
    if what == "before-flows":
        from flowherd.models.flows import FlowKey, FlowStats
        from flowherd.reporter.output.render import rows_csv
        from flowherd.reporter.table.order import top
        from flowherd.reporter.table.views import uni_rows

        allr = (
            r
            for k, v in conn.hscan_iter(KEY, count=count)
            for r in uni_rows(FlowKey.unpack(k), FlowStats.unpack(v))
        )
        ranked = top(allr, "bytes", sys.maxsize)
        rows = len(ranked)
        rows_csv(ranked, sink, view="uni")
    elif what.startswith("flows-"):
        from flowherd.reporter.output.lines import write_rows
        from flowherd.reporter.output.ranked_lines import write_rows_ranked

        if what == "flows-csv-raw":
            pairs = raw_pairs(conn, count)
        elif what == "flows-csv-prefetch":
            pairs = prefetched_pairs(conn, count)
        else:
            pairs = conn.hscan_iter(KEY, count=count)
        if what == "flows-ranked":
            rows = write_rows_ranked(pairs, sink, "uni", "csv", tmpdir=out_dir)
        else:
            rows = write_rows(pairs, sink, "bi" if what == "flows-bi-csv" else "uni", "csv")
    elif what == "before-report":
        from flowherd.models.flows import FlowKey, FlowStats
        from flowherd.reporter.analysis.report import make_report

        flows = (
            (FlowKey.unpack(k), FlowStats.unpack(v)) for k, v in conn.hscan_iter(KEY, count=count)
        )
        rep = make_report(_status(), flows, 0)
        rows = rep.summary.flows_uni
    elif what == "report":
        from flowherd.reporter.analysis.report import stream_report

        reads = [0]

        def rescan() -> Iterator[tuple[bytes, bytes]]:
            reads[0] += 1
            return raw_pairs(conn, count)

        rep = stream_report(_status(), rescan, 0)
        rows = rep.summary.flows_uni
        extra["reads"] = reads[0]
        extra["elephants"] = [e.description for e in rep.elephants]
        extra["share_top1pct"] = rep.summary.share_top1pct_uni
    elif what == "before-hist":
        from flowherd.models.flows import FlowKey, FlowStats
        from flowherd.reporter.output.plots import save_figure, size_histogram_figure
        from flowherd.reporter.table.views import uni_rows

        if os.environ.get("FH_OLD_PLOTS"):  # the figure code before SizeDist, from a file
            import importlib.util

            spec = importlib.util.spec_from_file_location("old_plots", os.environ["FH_OLD_PLOTS"])
            assert spec is not None and spec.loader is not None
            old = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(old)
            size_histogram_figure = old.size_histogram_figure
            extra["plots"] = os.environ["FH_OLD_PLOTS"]

        sizes = [
            r.bytes
            for k, v in conn.hscan_iter(KEY, count=count)
            for r in uni_rows(FlowKey.unpack(k), FlowStats.unpack(v))
        ]
        rows = len(sizes)
        save_figure(size_histogram_figure(sizes, None, "bench"), f"{out_dir}/before.png")
    elif what == "hist":
        from flowherd.reporter.analysis.elephants import DEFAULT_RULES, classify_dist
        from flowherd.reporter.analysis.scan import uni_sizes
        from flowherd.reporter.analysis.sizes import SizeDist
        from flowherd.reporter.output.plots import save_figure, size_histogram_figure

        reads = [1]

        def sizes_again() -> Iterator[int]:
            reads[0] += 1
            return uni_sizes(raw_pairs(conn, count))

        dist = SizeDist.of(uni_sizes(raw_pairs(conn, count)))
        elephants, _ = classify_dist(dist, DEFAULT_RULES, sizes_again)
        rows = dist.n
        save_figure(size_histogram_figure(dist, None, "bench", elephants), f"{out_dir}/after.png")
        extra["reads"] = reads[0]
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    return {
        "what": what,
        "rows": rows,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "rows_per_s": int(rows / wall) if wall else 0,
        "rows_per_cpu_s": int(rows / cpu) if cpu else 0,
        "peak_rss_mib": round(_vm_hwm_mib(), 1),
        **extra,
    }


# ---------------------------------------------------------------------------------------------


def run_one(what: str, url: str, count: int, out_dir: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "_measure", what, url, str(count), out_dir]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"what": what, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        _, _, what, url, count, out_dir = sys.argv
        print(json.dumps(measure(what, url, int(count), out_dir)))
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--flows", type=int, action="append", help="synthetic unidirectional flows (repeatable)"
    )
    ap.add_argument("--uni-csv", help="also load the table behind this uni CSV (first)")
    ap.add_argument("--redis-url", help=f"use this Redis (its key {KEY} is replaced)")
    ap.add_argument("--count", type=int, default=5000, help="HSCAN COUNT (default 5000)")
    ap.add_argument("--only", help="comma-separated measurements (default: all)")
    ap.add_argument("--before-max", type=int, default=1_000_000, help="largest table for before-*")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement (best kept)")
    ap.add_argument("--figures", help="keep the hist figures (before.png, after.png) here")
    args = ap.parse_args()
    from redis import Redis

    tmp = tempfile.mkdtemp(prefix="fh-bench-")
    figures = args.figures or tmp
    os.makedirs(figures, exist_ok=True)
    server = None
    url = args.redis_url
    if url is None:
        sock = f"{tmp}/r.sock"
        server = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"unix://{sock}"
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
    conn = Redis.from_url(url)
    tables: list[tuple[str, Any]] = []
    if args.uni_csv:
        tables.append((f"uni CSV {Path(args.uni_csv).name}", lambda: from_uni_csv(args.uni_csv)))
    for n in args.flows or ([] if args.uni_csv else [137_074]):
        tables.append((f"synthetic {n:,} flows", lambda n=n: synthetic(n)))
    which = args.only.split(",") if args.only else list(ALL)
    try:
        from redis.connection import DefaultParser

        print(f"redis-py parser: {DefaultParser.__name__}; HSCAN COUNT {args.count}; {url}")
        for name, make in tables:
            t = time.perf_counter()
            convs, uni = load(conn, make())
            used = conn.info("memory")["used_memory"] / 2**20
            stored = conn.hlen(KEY)  # a synthetic key drawn twice is stored once
            dup = f", {convs - stored} drawn twice" if stored != convs else ""
            print(f"\n## {name}: {uni:,} flows in {convs:,} conversations{dup} (loaded in "
                  f"{time.perf_counter() - t:.0f} s; Redis {used:.0f} MiB)")  # fmt: skip
            print(f"{'measurement':<20} {'rows':>10} {'wall s':>8} {'cpu s':>7} {'rows/s':>9} "
                  f"{'rows/cpu-s':>10} {'peak RSS MiB':>12}")  # fmt: skip
            for what in which:
                if what.startswith("before-") and uni > args.before_max:
                    print(f"{what:<20} (not run: holds all {uni:,} flows; --before-max)")
                    continue
                runs = [run_one(what, url, args.count, figures) for _ in range(args.repeat)]
                ok = [r for r in runs if "error" not in r]
                if not ok:
                    print(f"{what:<20} error: {runs[0]['error']}")
                    continue
                r = min(ok, key=lambda r: r["wall_s"])
                rest = {k: v for k, v in r.items() if k not in ("what", "rows", "wall_s", "cpu_s", "rows_per_s", "rows_per_cpu_s", "peak_rss_mib")}  # fmt: skip
                print(f"{what:<20} {r['rows']:>10,} {r['wall_s']:>8} {r['cpu_s']:>7} "
                      f"{r['rows_per_s']:>9,} {r['rows_per_cpu_s']:>10,} {r['peak_rss_mib']:>12}"
                      + (f"  {json.dumps(rest)}" if rest else ""))  # fmt: skip
                sys.stdout.flush()
    finally:
        conn.delete(KEY)
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
