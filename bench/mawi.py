#!/usr/bin/env python3
"""flowherd end to end on a MAWI-like trace (``producer synth``): time, rate, memory, totals.

    python bench/mawi.py --scale small                 # 2 workers, a private redis-server
    python bench/mawi.py --scale medium --workers 4 --batch-packets 16000
    python bench/mawi.py --scale small --redis-url redis://host:6379/0 --store-url redis+cluster://h:7000
    python bench/mawi.py --scale small --local-cluster 3   # the store on a local 3-master cluster

The trace is written once by ``producer synth`` and kept in ``--cache`` (out/) beside its exact
totals (``.truth.json``). Then: a queue Redis (a private redis-server on a unix socket unless
``--redis-url``), ``workers run -n N``, ``producer submit --engine fast --wait`` (the timed part:
until the capture is complete), and the reporter commands ``top``, ``flows --format csv >
/dev/null`` and ``summary --json``, each a fresh process. It prints wall time, packets/s, the
peak RSS (VmHWM) of the generator, the producer, every worker process (sampled from /proc while
they run: a pool's children are gone when it ends), each reporter command and each local
redis-server, Redis ``used_memory`` before and after with the bytes per conversation, and
whether the summary's totals equal the generator's truth (the exit status is 1 if not).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

from redis import Redis

from flowherd.store.backend import connect_cluster, is_cluster_url

CHECKED = ("packets", "bytes", "flows_uni", "flows_bi")


def run_measured(cmd: list[str], env: dict[str, str], stdout: Any = None) -> tuple[float, int, str]:
    """(wall s, peak RSS MiB, stdout) of a command run to its end; exit 1 if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=stdout or subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}")
    return wall, usage.ru_maxrss // 1024, out


def hwm_mib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


class Sampler(threading.Thread):
    """The largest VmHWM seen of each process under ``roots`` (and their descendants)."""

    def __init__(self, roots: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        for name, root in self.roots.items():
            for p in descendants(root) if name == "workers" else [root]:
                label = name if p == root else f"worker pid {p}"
                if (m := hwm_mib(p)) is not None:
                    self.peak[label] = max(self.peak.get(label, 0), m)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.sample()


def redis_nodes(url: str) -> list[tuple[str, Redis]]:
    """(name, client) of every node holding data: the Redis of ``url`` or a cluster's masters."""
    if not is_cluster_url(url):
        return [("redis", Redis.from_url(url))]
    rc = connect_cluster(url)
    kw = {k: rc.get_connection_kwargs().get(k) for k in ("username", "password")}
    return [
        (f"cluster {n.host}:{n.port}", Redis(host=n.host, port=n.port, **kw))
        for n in rc.get_nodes()
        if n.server_type == "primary"
    ]


def used_memory(nodes: list[tuple[str, Redis]]) -> int:
    return sum(int(c.info("memory")["used_memory"]) for _, c in nodes)


def local_pid(client: Redis) -> int | None:
    """The redis-server's pid, if it runs on this host (/proc shows it as redis-server)."""
    pid = int(client.info("server")["process_id"])
    try:
        return pid if "redis" in Path(f"/proc/{pid}/comm").read_text() else None
    except OSError:
        return None


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = folder / "redis.sock"
    cmd = ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", ""]
    proc = subprocess.Popen(
        [*cmd, "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL
    )
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.02)
    return proc, f"unix://{sock}"


def trace_for(a: argparse.Namespace, env: dict[str, str]) -> tuple[Path, dict[str, Any], dict]:
    """The cached trace and its truth, written by ``producer synth`` if missing."""
    a.cache.mkdir(parents=True, exist_ok=True)
    path = a.cache / f"mawi-{a.scale}-{a.seed}.pcap.gz"
    truth_path = path.with_suffix("").with_suffix(".truth.json")
    gen: dict[str, Any] = {}
    if not (path.exists() and truth_path.exists()):
        cmd = [str(BIN / "producer"), "synth", "--scale", a.scale, "--seed", str(a.seed)]
        wall, rss, out = run_measured([*cmd, "--json", str(path)], env)
        truth_path.write_text(out)
        n = json.loads(out)["packets"]
        gen = {"generate_s": round(wall, 1), "generate_pps": round(n / wall), "generate_mib": rss}
    return path, json.loads(truth_path.read_text()), gen


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", default="small", choices=("tiny", "small", "medium", "large"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-packets", type=int, help="producer submit --batch-packets")
    ap.add_argument("--redis-url", help="the queue Redis (default: a private redis-server)")
    ap.add_argument("--store-url", help="the flow store (default: the queue's Redis)")
    ap.add_argument("--local-cluster", type=int, metavar="MASTERS", help="store on a new cluster")
    ap.add_argument("--cache", type=Path, default=ROOT / "out")
    a = ap.parse_args()
    env = {**os.environ}
    env.pop("FLOWHERD_STORE_URL", None)
    trace, truth, result = trace_for(a, env)
    tmp = Path(tempfile.mkdtemp(prefix="fh-mawi-"))
    own_redis = cluster = pool = None
    try:
        if a.redis_url:
            url = a.redis_url
        else:
            own_redis, url = start_redis(tmp)
        store_url = a.store_url
        if a.local_cluster:
            from flowherd.deploy.cluster import start_cluster

            cluster = start_cluster(tmp / "cluster", a.local_cluster)
            store_url = cluster.url
        env["FLOWHERD_REDIS_URL"] = url
        if store_url:
            env["FLOWHERD_STORE_URL"] = store_url
        nodes = redis_nodes(store_url or url)
        if store_url:
            nodes += [("queue redis", Redis.from_url(url))]
        mem_before = used_memory(nodes)
        pool = subprocess.Popen(
            [str(BIN / "workers"), "run", "-n", str(a.workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        roots = {"workers": pool.pid}
        roots.update({name: p for name, c in nodes if (p := local_pid(c))})
        sampler = Sampler(roots)
        sampler.start()
        time.sleep(3)  # the pool's workers import scapy and register before the clock starts
        name = f"mawi-{a.scale}"
        cmd = [str(BIN / "producer"), "submit", str(trace), "--name", name, "--replace"]
        cmd += ["--engine", "fast", "--wait", "--top", "5"]
        cmd += ["--batch-packets", str(a.batch_packets)] if a.batch_packets else []
        wall, producer_mib, _ = run_measured(cmd, env, subprocess.DEVNULL)
        sampler.sample()
        mem_after = used_memory(nodes)
        rep = str(BIN / "reporter")
        reporter: dict[str, dict[str, float]] = {}
        summary: dict[str, Any] = {}
        for label, rcmd in (
            ("top", [rep, "top", name, "-n", "20"]),
            ("flows csv", [rep, "flows", name, "--format", "csv"]),
            ("summary", [rep, "summary", name, "--json"]),
        ):
            out_to = subprocess.DEVNULL if label != "summary" else None
            s, mib, out = run_measured(rcmd, env, out_to)
            reporter[label] = {"s": round(s, 1), "mib": mib}
            if label == "summary":
                summary = json.loads(out)["summary"]
        sampler.stop.set()
        flows = truth["flows_bi"]
        result.update(
            scale=a.scale,
            workers=a.workers,
            store="cluster" if store_url and is_cluster_url(store_url) else "redis",
            packets=truth["packets"],
            flows_bi=flows,
            flows_uni=truth["flows_uni"],
            wall_s=round(wall, 2),
            packets_per_s=round(truth["packets"] / wall),
            producer_mib=producer_mib,
            peak_mib=dict(sorted(sampler.peak.items())),
            reporter=reporter,
            used_memory_before=mem_before,
            used_memory_after=mem_after,
            bytes_per_flow_bi=round((mem_after - mem_before) / flows, 1),
            bytes_per_flow_uni=round((mem_after - mem_before) / truth["flows_uni"], 1),
            totals_equal_truth={k: summary.get(k) == truth[k] for k in CHECKED},
        )
    finally:
        if pool:
            with_group = os.getpgid(pool.pid)
            os.killpg(with_group, signal.SIGINT)
            try:
                pool.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                pool.wait()
        if cluster:
            cluster.stop()
        if own_redis:
            own_redis.terminate()
            own_redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    show(result, trace)
    sys.exit(0 if all(result["totals_equal_truth"].values()) else 1)


def show(r: dict[str, Any], trace: Path) -> None:
    print(f"trace {trace} ({trace.stat().st_size / 1e6:,.1f} MB), {os.cpu_count()} CPUs")
    if "generate_s" in r:
        print(
            f"  generated in {r['generate_s']} s: {r['generate_pps']:,} packets/s, "
            f"peak RSS {r['generate_mib']} MiB"
        )
    print(
        f"  {r['packets']:,} packets, {r['flows_bi']:,} conversations ({r['flows_uni']:,} uni), "
        f"{r['workers']} workers, fast engine, store: {r['store']}"
    )
    print(f"  submit -> complete: {r['wall_s']} s, {r['packets_per_s']:,} packets/s")
    print(f"  peak RSS MiB: producer {r['producer_mib']}", end="")
    for name, mib in r["peak_mib"].items():
        print(f", {name} {mib}", end="")
    print()
    for name, v in r["reporter"].items():
        print(f"  reporter {name}: {v['s']} s, peak RSS {v['mib']} MiB")
    used = (r["used_memory_after"] - r["used_memory_before"]) / 2**20
    print(
        f"  Redis used_memory +{used:,.1f} MiB: {r['bytes_per_flow_bi']:,} bytes per "
        f"conversation ({r['bytes_per_flow_uni']:,} per unidirectional flow)"
    )
    print(f"  totals equal the generator's truth: {r['totals_equal_truth']}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
