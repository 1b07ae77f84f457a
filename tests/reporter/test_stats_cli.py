"""``reporter stats`` end to end: captures through real worker processes into Redis (one
Redis, and a Redis Cluster), the CLI's CSV, JSON and table output against the plain reference
over the stored tables, per window too, and its one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from flowherd.deploy.cluster import LocalCluster
from flowherd.models.capture import CaptureState
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_flows, table
from tests.support.cluster import store_env
from tests.support.pipeline import run_capture, settings_for
from tests.support.stats_reference import reference

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

BASE = 1704067200  # flowherd.producer.traces.sample's first second
KEYS = ["srcip", "dstip", "ip", "sport", "dport", "port", "proto", "pair", "net/16,48"]


def _extra(path: Path) -> Path:
    """IPv6, ICMP and a self-addressed flow beside the sample's IPv4 TCP/UDP."""
    pkts = []
    for i in range(12):
        pkts.append(Ether() / IPv6(src="2001:db8::1", dst=f"2001:db8:0:1::{i % 3 + 1}") / UDP(sport=5353, dport=53) / (b"q" * i))  # fmt: skip
        pkts.append(Ether() / IPv6(src=f"2001:db8:0:1::{i % 3 + 1}", dst="2001:db8::1") / TCP(sport=443, dport=40000 + i % 2))  # fmt: skip
        pkts.append(Ether() / IP(src="10.9.9.9", dst="10.9.9.9") / UDP(sport=123, dport=123))
        pkts.append(Ether() / IP(src="10.0.0.1", dst="10.9.9.9") / ICMP())
    for i, p in enumerate(pkts):
        p.time = BASE + i * 1.25
    wrpcap(str(path), pkts)
    return path


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def cli(*args: str) -> str:
    res = CliRunner().invoke(reporter_main, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Rows of the CLI (CSV strings or JSON values) equal the reference's, in order."""
    assert [r["key"] for r in got] == [r["key"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert [int(g[f]) for f in ("packets", "bytes", "flows")] == [w["packets"], w["bytes"], w["flows"]]  # fmt: skip
        for f in ("packets_pct", "bytes_pct", "flows_pct"):
            assert float(g[f]) == pytest.approx(w[f], abs=1e-6)
        for f in ("pps", "bps"):
            assert float(g[f]) == pytest.approx(w[f], abs=1e-3)
        assert g["first_ts"] == f"{w['first_ns'] // 10**9}.{w['first_ns'] % 10**9:09d}"


def test_stats_cli_equals_reference_whole_and_per_window(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    sample = tmp_path / "s.pcap"
    write_sample(sample, flows=120, seed=4, duration_s=30)
    files = [str(sample), str(_extra(tmp_path / "x.pcap"))]
    settings = settings_for(redis_url, batch_packets=300, window=10.0, engine="fast")
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        st = run_capture(store, settings, files, "st", w)
    assert st.state is CaptureState.COMPLETE, st
    keys = run_of(store, "st")
    whole = list(iter_flows(store, table(keys)))
    url = ["--redis-url", redis_url]
    for key in KEYS:
        for view in ("uni", "bi"):
            out = cli("stats", "st", "--key", key, "--direction", view, "-n", "0", "--format", "csv", *url)  # fmt: skip
            assert out.splitlines()[0].startswith("key,packets,bytes,flows,")
            _same(_csv(out), reference(whole, key, view, "bytes", 0)[1])
    # orders, limits and thresholds
    for args, want in [
        (["--by", "flows", "-n", "3"], reference(whole, "dport", "uni", "flows", 3)),
        (["--by", "pps", "-n", "4"], reference(whole, "dport", "uni", "pps", 4)),
        (["--percentage", "5"], reference(whole, "dport", "uni", "bytes", 0, percentage=5.0)),
        (
            ["--by", "packets", "--threshold", "20"],
            reference(whole, "dport", "uni", "packets", 0, threshold=20),
        ),
        (["--threshold", "10kB"], reference(whole, "dport", "uni", "bytes", 0, threshold=10_000)),
    ]:
        doc = json.loads(cli("stats", "st", "--key", "dport", "--format", "json", *args, *url))
        assert doc["totals"] == want[0] and doc["key"] == "dport"
        _same(doc["rows"], want[1])
        assert 0 < len(doc["rows"]) < len(reference(whole, "dport", "uni", "bytes", 0)[1])
    # a filter: shares of what matched
    udp = [(k, v) for k, v in whole if k.proto == 17]
    doc = json.loads(cli("stats", "st", "--key", "ip", "-n", "0", "--format", "json", "--where", "proto udp", *url))  # fmt: skip
    assert doc["totals"] == reference(udp, "ip")[0] and 0 < doc["totals"]["flows"] < len(whole)
    _same(doc["rows"], reference(udp, "ip", "uni", "bytes", 0)[1])
    # per window: each window's table, and the windows add up to the whole capture
    per = json.loads(cli("stats", "st", "--key", "ip", "--window", "all", "-n", "0", "--format", "json", *url))  # fmt: skip
    assert len(per) >= 3
    summed: dict[str, int] = {}
    for doc in per:
        start = int(doc["window_start"].replace(".", ""))
        _same(doc["rows"], reference(iter_flows(store, table(keys, start)), "ip", "uni", "bytes", 0)[1])  # fmt: skip
        for r in doc["rows"]:
            summed[r["key"]] = summed.get(r["key"], 0) + r["packets"]
    assert summed == {r["key"]: r["packets"] for r in reference(whole, "ip", "uni", "bytes", 0)[1]}
    latest = cli("stats", "st", "--key", "proto", "--window", "latest", "--format", "csv", *url)
    assert latest.startswith("# window ") and "TCP" in latest
    shown = cli("stats", "st", "--key", "pair", "-n", "5", *url)
    top = reference(whole, "pair", "uni", "bytes", 5)[1]
    assert top[0]["key"] in shown and "of " in shown and len(top) == 5


def test_stats_errors_are_one_line(store: Store, redis_url: str) -> None:
    url = ["--redis-url", redis_url]
    run = CliRunner().invoke
    for args, code, says in [
        (["nope", "--key", "ip"], 1, "nope"),
        (["x", "--key", "host"], 2, "unknown key"),
        (["x", "--key", "net/40"], 2, "/0 to /32"),
        (["x", "--key", "ip", "--threshold", "1", "--percentage", "2"], 2, "not both"),
        (["x", "--key", "ip", "--by", "bps", "--percentage", "2"], 2, "share of bps"),
        (["x", "--key", "ip", "--threshold", "lots"], 2, "not a size"),
    ]:
        res = run(reporter_main, ["stats", *args, *url])
        assert res.exit_code == code, res.output
        assert says in res.output and "Traceback" not in res.output


@pytest.mark.cluster
def test_stats_on_the_cluster(
    cluster_store: Store, cluster: LocalCluster, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.pcap"
    write_sample(path, flows=200, seed=9)
    settings = settings_for(redis_url, batch_packets=400, engine="fast")
    with store_env(cluster.url), LocalWorkers(redis_url, settings.queue, 2) as w:
        st = run_capture(cluster_store, settings, [str(path)], "cs", w)
    assert st.state is CaptureState.COMPLETE, st
    keys = run_of(cluster_store, "cs")
    assert keys.shards == 16
    whole = list(iter_flows(cluster_store, table(keys)))
    for key, view in (("srcip", "uni"), ("port", "bi"), ("pair", "bi"), ("dstnet/24", "uni")):
        out = cli("stats", "cs", "--key", key, "--direction", view, "-n", "0", "--format", "csv", "--redis-url", redis_url, "--store-url", cluster.url)  # fmt: skip
        _same(_csv(out), reference(whole, key, view, "bytes", 0)[1])
