"""IPFIX export end to end against a real collector: nfdump's ``nfcapd`` on localhost receives
``reporter export --ipfix``, ``nfdump`` reads its file back, and every flow, the totals and the
top flows equal flowherd's (``reporter flows``, ``reporter top``). nfdump keys flows by the
unidirectional 5-tuple, as our uni view does. Skipped when nfdump is not installed
(``scripts/install.sh --test`` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowherd.models.flows import NS
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from tests.support.helpers import wait_until
from tests.support.pipeline import run_capture, settings_for

pytestmark = [
    pytest.mark.redis,
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("nfcapd") is None, reason="nfdump is not installed"),
]
FLAGS = "CEUAPRSF"  # nfdump's tcp_flags text, most significant bit first


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rx_queue(port: int) -> int | None:
    """Bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:``port``."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}":
            return int(fields[4].split(":")[1], 16)
    return None


class Collector:
    """``nfcapd -b 127.0.0.1 -p PORT -w DIR``: one file per ``-t`` interval (an hour here, so
    one file), renamed from ``nfcapd.current.*`` when it rotates or when SIGTERM ends it."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "flows"
        self.dir.mkdir()
        self.port = _udp_port()
        self.log = (tmp / "nfcapd.log").open("w")
        self.proc = subprocess.Popen(
            ["nfcapd", "-b", "127.0.0.1", "-p", str(self.port), "-w", str(self.dir), "-t", "3600"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: _rx_queue(self.port) is not None or self.proc.poll() is not None,
            30,
            "nfcapd to bind",
        )
        assert self.proc.poll() is None, (tmp / "nfcapd.log").read_text()

    def stop(self) -> None:
        """Once nfcapd has read every datagram, SIGTERM: it writes its file and exits."""
        wait_until(lambda: _rx_queue(self.port) == 0, 30, "nfcapd to read every datagram")
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0
        self.log.close()
        assert not list(self.dir.glob("nfcapd.current*"))

    def nfdump(self, *args: str) -> str:
        proc = subprocess.run(
            ["nfdump", "-R", str(self.dir), *args],
            capture_output=True, text=True, check=True, env={**os.environ, "TZ": "UTC"},
        )  # fmt: skip
        return proc.stdout


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path)
    yield c
    if c.proc.poll() is None:
        c.proc.kill()
        c.proc.wait()


def _cli(args: list[str]):  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(reporter_main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def _ms_text(ns: int) -> str:
    s, ms = divmod(ns // 1_000_000, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ms:03d}"


def _flags(bits: int) -> str:
    return "".join(c if bits & (0x80 >> i) else "." for i, c in enumerate(FLAGS))


def _nf_key(r: dict) -> tuple:  # type: ignore[type-arg]
    src = r.get("src4_addr") or r["src6_addr"]
    dst = r.get("dst4_addr") or r["dst6_addr"]
    return (src, dst, r["proto"], r["src_port"], r["dst_port"])


def test_nfcapd_receives_every_flow(
    redis_url: str, store, tmp_path: Path, collector: Collector
) -> None:  # type: ignore[no-untyped-def]
    trace = tmp_path / "nf.pcap"
    write_sample(trace, flows=400, seed=5)
    settings = settings_for(redis_url, batch_packets=500)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        run_capture(store, settings, [str(trace)], "nf", w)
    url = ["--redis-url", redis_url]
    res = _cli(
        ["export", "nf", "--ipfix", f"127.0.0.1:{collector.port}", "--ipfix-rate", "500", *url]
    )
    collector.stop()

    ours = {
        (o["src"], o["dst"], o["proto"], o["sport"], o["dport"]): o
        for o in map(
            json.loads, _cli(["flows", "nf", "--format", "jsonl", *url]).stdout.splitlines()
        )
    }
    theirs = json.loads(collector.nfdump("-o", "json"))
    assert len(theirs) == len(ours) > 700 and f"sent {len(ours):,} flows" in res.stderr
    assert any(":" in k[0] for k in ours)  # IPv6 flows went through the second template
    got = {_nf_key(r): r for r in theirs}
    assert got.keys() == ours.keys()
    for k, o in ours.items():
        r = got[k]
        assert (r["in_packets"], r["in_bytes"], r["first"], r["last"]) == (
            o["packets"], o["bytes"], _ms_text(o["first_ns"]), _ms_text(o["last_ns"])
        ), k  # fmt: skip
        assert r["tcp_flags"] == _flags(o["tcp_flags"]), k

    # totals and the collector's own accounting (no sequence gaps: nothing lost)
    summary = json.loads(_cli(["summary", "nf", "--json", *url]).stdout)["summary"]
    stat = dict(line.split(": ", 1) for line in collector.nfdump("-I").splitlines() if ": " in line)
    assert int(stat["Flows"]) == summary["flows_uni"] == len(ours)
    assert int(stat["Packets"]) == summary["packets"] == sum(o["packets"] for o in ours.values())
    assert int(stat["Bytes"]) == sum(o["bytes"] for o in ours.values())
    assert int(stat["Sequence failures"]) == 0
    assert int(stat["First"]) == min(o["first_ns"] for o in ours.values()) // NS

    # nfdump's top 10 by bytes is `reporter top`'s (ties at the boundary in any order)
    top = json.loads(_cli(["top", "nf", "-n", "10", "--format", "json", *url]).stdout)
    nf_top = json.loads(collector.nfdump("-O", "bytes", "-n", "10", "-o", "json"))
    assert [r["in_bytes"] for r in nf_top] == [t["bytes"] for t in top]
    cut = top[-1]["bytes"]
    assert {_nf_key(r) for r in nf_top if r["in_bytes"] > cut} == {
        (t["src"], t["dst"], t["proto"], t["sport"], t["dport"]) for t in top if t["bytes"] > cut
    }
