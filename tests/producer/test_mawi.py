"""The MAWI-like trace generator: deterministic, readable, header-only, exact truth, constant memory,
and flowherd's totals on it equal that truth end to end."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowherd.deploy.local import stop_local_redis
from flowherd.models.settings import Settings
from flowherd.producer.cli.main import main as producer_main
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.traces.mawi import SCALES, Tally, TraceSpec, Truth, records, write_trace
from flowherd.producer.traces.mawi_flows import flow_keys
from flowherd.reporter.cli.main import main as reporter_main

ROOT = Path(__file__).resolve().parents[2]
SPEC = TraceSpec(packets=6_000, flows=600, seed=3, duration_s=30)


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    path = tmp_path_factory.mktemp("mawi") / "t.pcap.gz"
    return path, write_trace(path, SPEC)


def _count(path: Path) -> dict[str, int]:
    """The totals of a trace by a parser of its own (Ethernet, IPv4/IPv6, TCP/UDP ports)."""
    uni: dict[tuple[object, ...], int] = defaultdict(int)
    bi: dict[tuple[object, ...], int] = defaultdict(int)
    c: dict[str, int] = defaultdict(int)
    with open_capture(path) as cap:
        for r in cap:
            d = r.data
            c["packets"] += 1
            c["bytes"] += r.wire_len
            c["first_ns"] = c["first_ns"] or r.ts_ns
            c["last_ns"] = r.ts_ns
            if d[12:14] == b"\x86\xdd":
                src, dst, proto, l4 = d[22:38], d[38:54], d[20], 54
                c["ipv6_packets"] += 1
            else:
                assert d[12:14] == b"\x08\x00" and d[14] == 0x45
                src, dst, proto, l4 = d[26:30], d[30:34], d[23], 34
            ports = struct.unpack_from("!HH", d, l4) if proto in (6, 17) else (0, 0)
            c[{6: "tcp_packets", 17: "udp_packets"}.get(proto, "icmp_packets")] += 1
            uni[(src, dst, proto, *ports)] += r.wire_len
            a, b = sorted([(src, ports[0]), (dst, ports[1])])
            bi[(a, b, proto)] += r.wire_len
    c.update(flows_uni=len(uni), flows_bi=len(bi))
    c.update(largest_uni_bytes=max(uni.values()), largest_bi_bytes=max(bi.values()))
    top = sorted(bi.values(), reverse=True)
    c["top1pct_share_pct"] = 100 * sum(top[: len(top) // 100]) // c["bytes"]
    return dict(c)


def test_truth_equals_a_direct_count(trace: tuple[Path, Truth]) -> None:
    path, truth = trace
    got = _count(path)
    share = got.pop("top1pct_share_pct")
    assert got == truth.model_dump(include=set(got))
    assert truth.flows_bi == SPEC.flows
    assert 0.6 * SPEC.packets < truth.packets < 1.5 * SPEC.packets
    assert share >= 25, "the largest 1% of conversations carry at least a quarter of the bytes"
    assert truth.tcp_packets > truth.udp_packets > truth.icmp_packets > 0
    assert 0.05 < truth.ipv6_packets / truth.packets < 0.5


def test_header_only_records_in_time_order(trace: tuple[Path, Truth]) -> None:
    path, truth = trace
    with gzip.open(path) as f:
        head = f.read(24)
        assert struct.unpack("<IHHiIII", head) == (0xA1B2C3D4, 2, 4, 0, 0, 96, 1)
        last, n, short = 0, 0, 0
        while rh := f.read(16):
            sec, usec, caplen, wire = struct.unpack("<IIII", rh)
            data = f.read(caplen)
            assert caplen == len(data) == min(wire, 96) and wire >= 60
            assert usec < 1_000_000 and (sec, usec) >= divmod(last, 1_000_000)
            last = sec * 1_000_000 + usec
            n += 1
            short += wire > caplen
            if data[12:14] == b"\x08\x00":  # a valid IPv4 header checksum
                s = sum(struct.unpack("!10H", data[14:34]))
                assert (s & 0xFFFF) + (s >> 16) in (0xFFFF, 0x1FFFE)
    assert n == truth.packets and short > n / 2  # most frames are cut: header only
    assert last * 1000 == truth.last_ns < truth.first_ns + 30 * 10**9


def test_same_spec_same_bytes(tmp_path: Path, trace: tuple[Path, Truth]) -> None:
    path, truth = trace
    again = tmp_path / "again.pcap.gz"
    assert write_trace(again, SPEC) == truth
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    other = write_trace(tmp_path / "o.pcap.gz", SPEC.model_copy(update={"seed": 4}))
    assert other.flows_bi == truth.flows_bi and other.bytes != truth.bytes
    raw = tmp_path / "plain.pcap"  # without .gz: the same pcap, uncompressed
    write_trace(raw, SPEC)
    assert raw.read_bytes() == gzip.decompress(path.read_bytes())


def test_nanosecond_timestamps(tmp_path: Path) -> None:
    spec = SPEC.model_copy(update={"nanosecond": True, "packets": 1_000, "flows": 100})
    path = tmp_path / "ns.pcap"
    truth = write_trace(path, spec)
    assert path.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"
    got = _count(path)
    assert (got["first_ns"], got["last_ns"]) == (truth.first_ns, truth.last_ns)
    assert truth.last_ns % 1000 != 0 or truth.first_ns % 1000 != 0  # not rounded to µs


def test_scapy_reads_it(trace: tuple[Path, Truth]) -> None:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    path, truth = trace
    pkts = rdpcap(str(path))
    assert len(pkts) == truth.packets
    wires: list[int] = [p.wirelen or 0 for p in pkts]
    assert all(len(p) == min(w, 96) for p, w in zip(pkts, wires, strict=True))
    layers = {layer for p in pkts for layer in (IP, IPv6, TCP, UDP, ICMP) if p.haslayer(layer)}
    assert layers == {IP, IPv6, TCP, UDP, ICMP}
    assert sum(wires) == truth.bytes
    syn = next(p for p in pkts if p.haslayer(TCP) and p[TCP].flags == "S")
    assert dict(syn[TCP].options)["MSS"] == 1460


def test_flow_keys_are_a_bijection() -> None:
    import numpy as np

    i = np.arange(1 << 18)
    for seed in (0, 1, 12345):
        keys = flow_keys(i, seed)
        assert len(np.unique(keys)) == i.size and int(keys.max()) < 1 << 35


def test_fewer_packets_than_flows_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot make"):
        next(records(TraceSpec(packets=10, flows=11), Tally()))


_RSS = """
import sys
from flowherd.producer.traces.mawi import TraceSpec, write_trace
t = write_trace(sys.argv[1], TraceSpec(packets=int(sys.argv[2]), flows=int(sys.argv[2]) // 10))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(t.packets, int(hwm) // 1024)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_the_trace(tmp_path: Path) -> None:
    """Peak RSS of a whole run in a fresh process: 50 k packets against 1 M (20 times more)."""
    peaks = {}
    for n in (50_000, 1_000_000):
        out = subprocess.run(
            [sys.executable, "-c", _RSS, str(tmp_path / f"{n}.pcap.gz"), str(n)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        packets, peaks[n] = map(int, out.stdout.split())
        assert packets > n * 0.7
    assert peaks[1_000_000] - peaks[50_000] < 40, peaks
    assert peaks[1_000_000] < 250, peaks


def test_cli_writes_and_prints_the_truth(tmp_path: Path) -> None:
    out = tmp_path / "c.pcap.gz"
    args = ["synth", str(out), "--packets", "3000", "--flows", "300", "--seed", "3", "--json"]
    res = CliRunner().invoke(producer_main, args)
    assert res.exit_code == 0, res.output
    truth = Truth.model_validate_json(res.stdout)
    spec = TraceSpec(packets=3000, flows=300, seed=3, duration_s=SCALES["tiny"].duration_s)
    assert truth == write_trace(
        tmp_path / "d.pcap.gz", spec
    )  # --packets, --flows: the scale's time
    assert f"{truth.packets:,} packets" in res.stderr and "300 conversations" in res.stderr
    res = CliRunner().invoke(producer_main, ["synth", str(out), "--packets", "5", "--flows", "9"])
    assert res.exit_code == 2 and "at least --flows" in res.output
    res = CliRunner().invoke(producer_main, ["synth", str(tmp_path / "no" / "x.pcap")])
    assert res.exit_code == 1 and res.output.startswith("error: ") and res.output.count("\n") == 1


@pytest.mark.redis
@pytest.mark.e2e
@pytest.mark.parametrize("workers", ["1", "3"])
def test_flowherd_finds_the_truth(tmp_path: Path, workers: str) -> None:
    """`producer submit --engine fast` with the private Redis: totals, flow counts and the
    largest flow equal the generator's truth, whatever the number of workers."""
    path = tmp_path / "tiny.pcap.gz"
    truth = write_trace(path, SCALES["tiny"])
    home = Settings().home
    runner = CliRunner()
    try:
        args = ["submit", str(path), "--engine", "fast", "--workers", workers, "--top", "3"]
        res = runner.invoke(producer_main, [*args, "--batch-packets", "4000"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(reporter_main, ["summary", "tiny", "--json"])
        assert res.exit_code == 0, res.output
        s = json.loads(res.stdout)["summary"]
        want = truth.model_dump(include={"packets", "bytes", "flows_uni", "flows_bi"})
        assert {k: s[k] for k in want} == want
        assert s["counted_packets"] == truth.packets and not s["not_counted"]
        assert (s["first_ns"], s["last_ns"]) == (truth.first_ns, truth.last_ns)
        res = runner.invoke(reporter_main, ["top", "tiny", "-n", "1", "--format", "json"])
        assert json.loads(res.stdout)[0]["bytes"] == truth.largest_uni_bytes
        args = ["top", "tiny", "-n", "1", "--direction", "bi", "--format", "json"]
        res = runner.invoke(reporter_main, args)
        assert json.loads(res.stdout)[0]["bytes"] == truth.largest_bi_bytes
    finally:
        stop_local_redis(home)
