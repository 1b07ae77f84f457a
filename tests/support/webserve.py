"""What the web view's tests share: a scapy-made trace, ``reporter serve`` as a real process,
plain HTTP requests, and the reporter CLI's JSON to compare the pages and the API with."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from flowherd.reporter.cli.main import main as reporter_main
from tests.support.helpers import wait_until

BASE_TS = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def write_trace(path: Path, flows: int = 24, seed: int = 5, span_s: float = 40.0) -> int:
    """A pcap made with scapy: TCP, UDP and IPv6 flows of varied sizes, packet counts and
    durations (so ranking by bytes, packets, duration and rate differ), most with replies,
    spread over ``span_s`` seconds. Returns the number of packets."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    rng = random.Random(seed)
    pkts: list[Any] = []
    for i in range(flows):
        v6 = i % 7 == 3
        src, dst = (
            (f"2001:db8::{i + 1:x}", "2001:db8:1::1") if v6 else (f"10.0.0.{i + 1}", "192.0.2.9")
        )
        l3 = (lambda s, d: IPv6(src=s, dst=d)) if v6 else (lambda s, d: IP(src=s, dst=d))
        l4 = (
            (lambda a, b: UDP(sport=a, dport=b))
            if i % 3 == 0
            else (lambda a, b: TCP(sport=a, dport=b, flags="A"))
        )
        n, size = rng.randint(2, 50), rng.randint(20, 1200)
        start, gap = rng.uniform(0, span_s * 0.8), rng.uniform(0.001, 0.4)
        for k in range(n):
            back = k % 3 == 2
            a, b = (dst, src) if back else (src, dst)
            pa, pb = (443, 20000 + i) if back else (20000 + i, 443)
            p = (
                Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                / l3(a, b)
                / l4(pa, pb)
                / Raw(b"x" * (size // 4 if back else size))
            )
            p.time = BASE_TS + start + k * gap
            pkts.append(p)
    pkts.sort(key=lambda p: float(p.time))
    wrpcap(str(path), pkts)
    return len(pkts)


def cli_json(redis_url: str, *args: str) -> Any:
    """The parsed output of ``reporter ARGS --redis-url URL`` (which must succeed)."""
    res = CliRunner().invoke(
        reporter_main, [*args, "--redis-url", redis_url], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


class Server:
    """``reporter serve --port 0 ARGS`` in a process of its own; ``url`` ends with ``/``."""

    def __init__(self, tmp: Path, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.log = tmp / f"serve-{random.randrange(1 << 30)}.log"
        cmd = [sys.executable, "-m", "flowherd.reporter", "serve", "--port", "0", *args]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

        def started() -> str | None:
            text = self.log.read_text()
            assert self.proc.poll() is None, f"reporter serve exited: {text}"
            for word in text.split():
                if word.startswith("http://"):
                    return word
            return None

        self.url = wait_until(started, 60, "reporter serve to print its address")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def output(self) -> str:
        return self.log.read_text()


def get(
    url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request, errors included (no redirects followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(req, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    status, _, body = get(url, headers)
    assert status == 200, (status, body[:500])
    return json.loads(body)
