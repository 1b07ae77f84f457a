#!/usr/bin/env python3
"""Live capture at given rates: `producer sniff` on a veth pair while tcpreplay replays a trace
into the other end (needs root and tcpreplay). Prints, per reader and rate: frames sent, kernel
and producer drops, frames stored once the workers have merged everything, and CPU microseconds
per frame of the reading alone (the sniffer thread, or the fanout processes together) and of the
whole producer process (start-up, batching and Redis included). The readers (the TPACKET_V3
ring, one recvmsg per frame) run in the same invocation, so their figures compare.

    sudo .venv/bin/python bench/live.py                         # 100k..300k frames/s and top speed
    sudo .venv/bin/python bench/live.py --rates 150000,300000 --frames 300000 --loops 8
    sudo .venv/bin/python bench/live.py --readers ring --fanout 2

The trace is the first --frames frames of out/big.pcap (`python ../shared/bench/make_big.py
--out out/big.pcap`), or of --trace; it is replayed --loops times per rate (tcpreplay --loop).
Everything runs on this machine: a private redis-server, two workers (`workers run -n 2`), the
sniffer and tcpreplay share its cores, as a small deployment would.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from redis import Redis

from flowherd.models.capture import CaptureState
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.store.backend import Store
from flowherd.store.captures import run_of, status
from flowherd.store.tables import iter_flows, table


def slice_trace(src: Path, dst: Path, frames: int) -> int:
    """The first ``frames`` records of the classic pcap ``src`` written to ``dst``."""
    with src.open("rb") as f, dst.open("wb") as out:
        head = f.read(24)
        out.write(head)
        endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        n = 0
        while n < frames:
            rec = f.read(16)
            if len(rec) < 16:
                break
            cap = struct.unpack(endian + "I", rec[8:12])[0]
            out.write(rec + f.read(cap))
            n += 1
    return n


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Veth:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.tx, self.rx = f"lvt{tag}", f"lvr{tag}"

    def __enter__(self) -> Veth:
        sh("ip", "link", "add", self.tx, "type", "veth", "peer", "name", self.rx)
        for dev in (self.tx, self.rx):
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            sh("ip", "link", "set", dev, "mtu", "9000", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.tx], capture_output=True)


def redis_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = 26000 + os.getpid() % 3000
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            Redis.from_url(url).ping()
            return proc, url
        except Exception:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def one_run(
    reader: str, rate: int | None, trace: Path, loops: int, url: str, fanout: int
) -> dict[str, float]:
    name = f"live-{reader}-{rate or 'top'}-{uuid.uuid4().hex[:4]}"
    queue = f"q{uuid.uuid4().hex[:6]}"
    store = Store.single(Redis.from_url(url))
    with Veth() as v, LocalWorkers(url, queue, 2) as workers:
        args = [sys.executable, "-m", "flowherd.producer", "sniff", "-i", v.rx, "--name", name,
                "--no-wait", "--engine", "fast", "--redis-url", url, "--queue", queue,
                "--no-promisc", "-v", "--ring" if reader == "ring" else "--no-ring"]  # fmt: skip
        if fanout > 1:
            args += ["--fanout", str(fanout)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                break
        else:
            raise SystemExit(f"producer sniff did not start: {proc.wait()}")
        speed = ["--pps", str(rate)] if rate else ["--topspeed"]
        t0 = time.monotonic()
        replay = subprocess.run(
            ["tcpreplay", "-i", v.tx, *speed, "--loop", str(loops), "-q", str(trace)],
            capture_output=True,
            text=True,
        )
        sent_s = time.monotonic() - t0
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, code, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(code)
        err = proc.stderr.read()
        st = follow(store, name, poll=0.1, check=workers.check)
    sent = int(next(ln.split()[1] for ln in replay.stdout.splitlines() if "packets" in ln))
    raw = store.kv.hgetall(run_of(store, name).meta)
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    stored = status(store, name).packets
    kd = int(meta.get("kernel_drops", 0) or 0)
    pd = int(meta.get("producer_drops", 0) or 0)
    cpu = usage.ru_utime + usage.ru_stime
    reader_cpu = next(
        (float(w.split("=")[1]) for w in err.split() if w.startswith("reader_cpu_us_per_frame=")
         and w.split("=")[1] != "-"),
        float("nan"),
    )  # fmt: skip
    return {
        "sent": sent,
        "rate": sent / sent_s if sent_s else 0.0,
        "kernel_drops": kd,
        "producer_drops": pd,
        "stored": stored,
        "complete": float(st.state is CaptureState.COMPLETE),
        "cpu_us": 1e6 * cpu / max(stored, 1),
        "reader_us": reader_cpu,
    }


def soak(url: str, tmp: Path, seconds: int, flows: int, packets: int) -> None:
    """New flows arriving for ``seconds``: a MAWI-like trace replayed at its own pace while
    `producer sniff --window 5s` runs with and without `--keep 2`; Redis used_memory sampled."""
    trace = tmp / "soak.pcap"
    subprocess.run(
        [sys.executable, "-m", "flowherd.producer", "synth", "--packets", str(packets),
         "--flows", str(flows), "--duration", f"{seconds}s", str(trace)],
        check=True, capture_output=True,
    )  # fmt: skip
    kv = Redis.from_url(url)
    rec = tmp / "records"
    configs = [
        ("--keep 2 --idle-timeout 5s --records-dir", ["--keep", "2", "--idle-timeout", "5s",
                                                      "--records-dir", str(rec)]),
        ("--keep 2", ["--keep", "2"]),
        ("no --keep", []),
    ]  # fmt: skip
    for label, keep in configs:
        kv.flushall()
        name, queue = f"soak{len(keep)}", f"q{uuid.uuid4().hex[:6]}"
        store = Store.single(Redis.from_url(url))
        with Veth() as v, LocalWorkers(url, queue, 2) as workers:
            args = [sys.executable, "-m", "flowherd.producer", "sniff", "-i", v.rx, "--name", name,
                    "--no-wait", "--engine", "fast", "--redis-url", url, "--queue", queue,
                    "--no-promisc", "--window", "5s", *keep]  # fmt: skip
            proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            assert proc.stderr is not None
            for line in proc.stderr:
                if "listening on" in line:
                    break
            replay = subprocess.Popen(["tcpreplay", "-i", v.tx, "-q", str(trace)],
                                      stdout=subprocess.DEVNULL)  # fmt: skip
            t0, curve = time.monotonic(), []
            while replay.poll() is None:
                time.sleep(5)
                curve.append((time.monotonic() - t0, int(kv.info("memory")["used_memory"])))
            proc.send_signal(signal.SIGINT)
            proc.wait(600)  # with records, until every record has left
            st = follow(store, name, poll=0.2, check=workers.check)
        flows_kept = sum(1 for _ in iter_flows(store, table(run_of(store, name))))
        print(
            f"\n{label}: {st.packets:,} packets stored, {flows_kept:,} flows in the capture table"
        )
        if "--records-dir" in keep:
            files = sorted(rec.glob("*.ndjson"))
            n = p = 0
            for f in files:
                for line in f.open():
                    n += 1
                    p += json.loads(line)["packets"]
            print(f"  records: {n:,} uni records in {len(files)} files, {p:,} packets "
                  f"({'equal to' if p == st.packets else 'NOT equal to'} the packets stored)")  # fmt: skip
        print("  t (s)   used_memory (MiB)")
        for t, m in curve:
            print(f"  {t:5.0f}   {m / 2**20:8.1f}")
        at = {round(t): m for t, m in curve}

        end, third = (
            min(at.items(), key=lambda e: abs(e[0] - t))[1] for t in (seconds, seconds / 3)
        )
        print(f"  at {seconds} s / at {seconds // 3} s: {end / third:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=Path, default=ROOT / "out" / "big.pcap")
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--loops", type=int, default=1)
    ap.add_argument("--rates", default="100000,150000,250000,300000,0",
                    help="frames/s, comma-separated; 0: tcpreplay --topspeed")  # fmt: skip
    ap.add_argument("--readers", default="recvmsg,ring", help="recvmsg, ring or both")
    ap.add_argument("--fanout", type=int, default=1)
    ap.add_argument("--soak", type=int, metavar="SECONDS", default=0,
                    help="instead: new flows for SECONDS with --window 5s, with and without "
                    "--keep 2, Redis memory sampled every 5 s")  # fmt: skip
    ap.add_argument("--soak-flows", type=int, default=300_000)
    ap.add_argument("--soak-packets", type=int, default=1_500_000)
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("tcpreplay"):
        print("needs root and tcpreplay (apt-get install tcpreplay)", file=sys.stderr)
        return 2
    if a.soak:
        with tempfile.TemporaryDirectory() as tmp:
            redis, url = redis_server(Path(tmp))
            try:
                soak(url, Path(tmp), a.soak, a.soak_flows, a.soak_packets)
            finally:
                redis.terminate()
        return 0
    if not a.trace.exists():
        print(
            f"{a.trace} missing: python ../shared/bench/make_big.py --out {a.trace}",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        sliced = Path(tmp) / "slice.pcap"
        n = slice_trace(a.trace, sliced, a.frames)
        redis, url = redis_server(Path(tmp))
        try:
            print(f"trace: first {n:,} frames of {a.trace.name}, {a.loops} loop(s) per run; "
                  f"{os.cpu_count()} cores shared by tcpreplay, the sniffer, 2 workers and Redis")  # fmt: skip
            print(f"{'reader':8} {'rate/s':>9} {'sent':>10} {'sent/s':>9} {'kernel drops':>14} "
                  f"{'producer drops':>15} {'stored':>10} {'reader us/frame':>16} {'process us/frame':>17}")  # fmt: skip
            for rate in (int(r) for r in a.rates.split(",")):
                for reader in a.readers.split(","):
                    r = one_run(reader, rate or None, sliced, a.loops, url, a.fanout)
                    Redis.from_url(url).flushall()
                    pct = 100 * r["kernel_drops"] / max(r["sent"], 1)
                    print(f"{reader:8} {rate or 'top':>9} {r['sent']:>10,.0f} {r['rate']:>9,.0f} "
                          f"{r['kernel_drops']:>9,.0f} ({pct:4.1f}%) {r['producer_drops']:>15,.0f} "
                          f"{r['stored']:>10,.0f} {r['reader_us']:>16.3f} {r['cpu_us']:>17.2f}", flush=True)  # fmt: skip
        finally:
            redis.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
