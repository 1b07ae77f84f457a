#!/usr/bin/env python3
"""A minute of live traffic through `producer sniff` (needs root): exact totals, windows, watch.

Creates a veth pair, starts a private redis-server and two workers, runs
`producer sniff -i <veth> --window 10s --duration D` and sends a known set of frames into the
other end at a steady rate from a raw socket, then checks that the capture's per-flow table equals
what was sent, that the windows sum to it, and prints `reporter watch --once` taken mid-run.

    sudo .venv/bin/python bench/sniff_minute.py [--seconds 60] [--rate 5000]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis import Redis

from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.reporter.query import windows
from flowherd.reporter.table.views import uni_rows
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_flows
from flowherd.store.tables import table as run_table


def frames(nflows: int, seed: int = 1) -> list[tuple[tuple, bytes]]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    rnd = random.Random(seed)
    out = []
    for i in range(nflows):
        src, dst = f"10.9.{i // 250}.{i % 250 + 1}", "10.8.0.1"
        sport, dport = 20000 + i, rnd.choice((80, 443, 53))
        proto = 17 if dport == 53 else 6
        l4 = UDP(sport=sport, dport=dport) if proto == 17 else TCP(sport=sport, dport=dport)
        size = rnd.choice((0, 100, 600, 1400))
        f = bytes(
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src=src, dst=dst)
            / l4
            / (b"x" * size)
        )
        out.append(((src, dst, proto, sport, dport), f))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rate", type=int, default=5000, help="frames per second")
    ap.add_argument("--flows", type=int, default=200)
    a = ap.parse_args()
    tag = uuid.uuid4().hex[:6]
    va, vb = f"fh{tag}a", f"fh{tag}b"
    subprocess.run(["ip", "link", "add", va, "type", "veth", "peer", "name", vb], check=True)
    d = Path(tempfile.mkdtemp(prefix="fh-sniff-"))
    sock = d / "r.sock"
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", str(d)],
                             stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        for n in (va, vb):
            Path(f"/proc/sys/net/ipv6/conf/{n}/disable_ipv6").write_text("1\n")
            subprocess.run(["ip", "link", "set", n, "up"], check=True)
        time.sleep(0.5)
        url = f"unix://{sock}"
        store = Store.single(Redis.from_url(url))
        fl = frames(a.flows)
        with LocalWorkers(url, "sniffq", 2) as w:
            env = {"FLOWHERD_REDIS_URL": url, "FLOWHERD_QUEUE": "sniffq", "PATH": "/usr/bin:/bin"}
            dur = a.seconds + 3
            sniffer = subprocess.Popen(
                [sys.executable, "-m", "flowherd.producer", "sniff", "-i", va, "--name", "minute", "--window", "10s",
                 "--duration", f"{dur}s", "--no-wait", "--engine", "fast"],
                env=env, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(2)
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            tx.bind((vb, 0))
            sent: dict[tuple, list[int]] = {}
            t0 = time.monotonic()
            n = 0
            watched = ""
            while time.monotonic() - t0 < a.seconds:
                due = int((time.monotonic() - t0) * a.rate)
                while n < due:
                    key, f = fl[n % len(fl)]
                    tx.send(f)
                    v = sent.setdefault(key, [0, 0])
                    v[0] += 1
                    v[1] += len(f)
                    n += 1
                if not watched and time.monotonic() - t0 > a.seconds / 2:
                    watched = subprocess.run([sys.executable, "-m", "flowherd.reporter", "watch", "minute", "--once", "-n", "5"],
                                             env=env, capture_output=True, text=True).stdout  # fmt: skip
                time.sleep(0.002)
            send_s = time.monotonic() - t0
            _, err = sniffer.communicate(timeout=dur + 30)
            st = follow(store, "minute", poll=0.1, check=w.check)
        got = {}
        for key, stt in iter_flows(store, run_table(run_of(store, "minute"))):
            for r in uni_rows(key, stt):
                got[(r.src, r.dst, r.proto, r.sport, r.dport)] = [r.packets, r.bytes]
        keys = run_of(store, "minute")
        sums = windows.summaries(store, keys)
        print(watched)
        print(err.strip().splitlines()[-1] if err.strip() else "")
        result = {
            "sent_frames": n, "send_seconds": round(send_s, 1), "rate": round(n / send_s),
            "captured": st.packets, "state": st.state.value, "exact_per_flow": got == sent,
            "windows": len(sums), "windows_sum_packets": sum(s.packets for s in sums),
            "windows_sum_equals_total": sum(s.packets for s in sums) == st.packets
            and sum(s.bytes for s in sums) == st.bytes,
            "per_window_packets": [s.packets for s in sums],
            "warnings": st.warnings,
        }  # fmt: skip
        print(json.dumps(result, indent=1))
    finally:
        subprocess.run(["ip", "link", "del", va], check=False)
        redis.terminate()


if __name__ == "__main__":
    main()
