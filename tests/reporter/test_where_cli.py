"""``--where`` and the Community ID through the real pipeline and the reporter's commands: a
generated capture (TCP, UDP, ICMP, SCTP, GRE, IPv6; 10 s windows) submitted to real workers,
then every command that reads flows, compared with the unfiltered output filtered in Python
and with the ``communityid`` reference package."""

from __future__ import annotations

import csv
import io
import json
from ipaddress import ip_address, ip_network
from pathlib import Path

import communityid
import pytest
from click.testing import CliRunner
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from flowherd.producer.run.follow import LocalWorkers
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from tests.support.pipeline import run_capture, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

T0 = 1_700_000_000.0
NAME = "where"


def _pkt(layers: Packet, ts: float, pad: int = 0) -> Packet:
    p = Ether() / layers / Raw(b"x" * pad)
    p.time = ts
    return p


def capture(path: Path) -> Path:
    """Seven conversations over 25 s: a client's HTTPS download, DNS, ping, SCTP, GRE,
    IPv6 HTTP, and a long SSH transfer."""
    c, web, dns = "10.0.0.1", "93.184.216.34", "10.0.0.53"
    pk: list[Packet] = []
    for i in range(5):  # 10.0.0.1:40000 -> :443 requests, replies
        pk.append(_pkt(IP(src=c, dst=web) / TCP(sport=40000, dport=443), T0 + i * 0.5, 100))
        pk.append(_pkt(IP(src=web, dst=c) / TCP(sport=443, dport=40000), T0 + i * 0.5 + 0.1, 1400))
    pk.append(_pkt(IP(src="10.0.0.2", dst=dns) / UDP(sport=5353, dport=53), T0 + 1, 40))
    pk.append(_pkt(IP(src=dns, dst="10.0.0.2") / UDP(sport=53, dport=5353), T0 + 1.01, 120))
    pk.append(_pkt(IP(src=c, dst="8.8.8.8") / ICMP(type=8), T0 + 2))
    pk.append(_pkt(IP(src="8.8.8.8", dst=c) / ICMP(type=0), T0 + 2.02))
    pk.append(_pkt(IP(src="10.1.0.1", dst="10.1.0.2") / SCTP(sport=2905, dport=2905), T0 + 3))
    pk.append(_pkt(IP(src="192.168.1.1", dst="192.168.1.2") / GRE(), T0 + 4, 60))
    for i in range(3):
        pk.append(_pkt(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=1234, dport=80),
                       T0 + 5 + i, 200))  # fmt: skip
    for i in range(20):  # a long transfer crossing two window boundaries
        pk.append(_pkt(IP(src="172.16.0.5", dst="10.0.0.9") / TCP(sport=22, dport=51000),
                       T0 + 3 + i, 1400))  # fmt: skip
    pk.sort(key=lambda p: p.time)
    wrpcap(str(path), pk)
    return path


@pytest.fixture(scope="module")
def merged(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    from redis import Redis

    conn = Redis.from_url(redis_url)
    path = capture(tmp_path_factory.mktemp("where") / "where.pcap")
    settings = settings_for(redis_url, batch_packets=7, window=10.0)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        run_capture(Store.single(conn), settings, [str(path)], NAME, w)
    return redis_url


def cli(url: str, *args: str, code: int = 0) -> str:
    res = CliRunner(env={"COLUMNS": "400"}).invoke(reporter_main, [*args, "--redis-url", url])
    assert res.exit_code == code, res.output
    return res.output


def flows_json(url: str, direction: str, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(cli(url, "flows", NAME, "--direction", direction, "--format", "json", *extra))  # type: ignore[no-any-return]


def reference_id(row: dict, seed: int = 0) -> str | None:  # type: ignore[type-arg]
    """``communityid``'s ID of a JSON row (ports: what the flow key holds)."""
    src, dst = row.get("src", row.get("a_addr")), row.get("dst", row.get("b_addr"))
    sp, dp = row.get("sport", row.get("a_port")), row.get("dport", row.get("b_port"))
    if row["proto"] in (1, 58, 132):
        return None
    if row["proto"] in (6, 17):
        tpl = communityid.FlowTuple(row["proto"], src, dst, sp, dp)
    else:
        tpl = communityid.FlowTuple(row["proto"], src, dst)
    return communityid.CommunityID(seed).calc(tpl)  # type: ignore[no-any-return]


@pytest.mark.parametrize("direction", ["uni", "bi"])
def test_community_id_in_json_csv_and_table(merged: str, direction: str) -> None:
    rows = flows_json(merged, direction)
    assert {r["proto"] for r in rows} == {1, 6, 17, 47, 132}
    for r in rows:
        assert r["community_id"] == reference_id(r), r
    assert len({r["community_id"] for r in rows if r["proto"] == 6}) == 3  # one per connection
    for seed in ("0", "7"):
        text = cli(merged, "flows", NAME, "--direction", direction, "--community-id-seed", seed)
        lines = list(csv.DictReader(io.StringIO(text)))
        assert text.splitlines()[0].endswith(",last_ts,community_id")
        assert len(lines) == len(rows)
        for line in lines:
            want = reference_id(
                {k: int(v) if v.isdigit() else v for k, v in line.items()}, int(seed)
            )
            assert line["community_id"] == (want or ""), line
        ranked = cli(merged, "flows", NAME, "--direction", direction, "--order", "rank",
                     "--community-id-seed", seed)  # fmt: skip
        assert sorted(ranked.splitlines()) == sorted(text.splitlines())
    top = json.loads(cli(merged, "top", NAME, "--direction", direction, "--format", "json",
                         "--community-id-seed", "7", "-n", "50"))  # fmt: skip
    assert all(r["community_id"] == reference_id(r, 7) for r in top)
    top_csv = cli(merged, "top", NAME, "--direction", direction, "--format", "csv", "-n", "3")
    assert top_csv.splitlines()[0].endswith(",community_id")
    table = cli(merged, "top", NAME, "--direction", direction, "-n", "50")
    ssh = next(r for r in rows if 22 in (r.get("sport"), r.get("dport"), r.get("a_port")))
    assert "community id" in table and ssh["community_id"] in table


def test_bad_seed_is_a_usage_error(merged: str) -> None:
    res = CliRunner().invoke(reporter_main, ["flows", NAME, "--community-id-seed", "70000",
                                             "--redis-url", merged])  # fmt: skip
    assert res.exit_code == 2 and "Traceback" not in res.output


FILTERS = {
    "proto tcp and dport 443": lambda r, s, d: r["proto"] == 6 and d[1] == 443,
    "tcp and bytes > 5k": lambda r, s, d: r["proto"] == 6 and r["bytes"] > 5000,
    "udp or icmp": lambda r, s, d: r["proto"] in (17, 1),
    "net 10.0.0.0/24 and not port 53": lambda r, s, d: (
        any(ip_address(a) in ip_network("10.0.0.0/24") for a in s) and 53 not in d
    ),
    "src host 172.16.0.5": lambda r, s, d: s[0] == "172.16.0.5",
    "dst net 2001:db8::/32": lambda r, s, d: s[1].startswith("2001:db8:"),
    "duration >= 10s": lambda r, s, d: r["last_ns"] - r["first_ns"] >= 10**10,
    "packets >= 5 and (host 93.184.216.34 or port 22)": lambda r, s, d: (
        r["packets"] >= 5 and ("93.184.216.34" in s or 22 in d)
    ),
    "proto != tcp": lambda r, s, d: r["proto"] != 6,
}


def key_text(r: dict) -> str:  # type: ignore[type-arg]
    """The ranking's tie-break (flowherd.reporter.table.order.key_text) of a JSON row."""
    if "src" in r:
        return str((r["src"], r["dst"], r["proto"], r["sport"], r["dport"]))
    return str([r["proto"], r["a_addr"], r["a_port"], r["b_addr"], r["b_port"]])


def _ends(r: dict) -> tuple[tuple[str, str], tuple[int, int]]:  # type: ignore[type-arg]
    if "src" in r:
        return (r["src"], r["dst"]), (r["sport"], r["dport"])
    return (r["a_addr"], r["b_addr"]), (r["a_port"], r["b_port"])


@pytest.mark.parametrize("direction", ["uni", "bi"])
@pytest.mark.parametrize("text", sorted(FILTERS))
def test_flows_and_top_where(merged: str, direction: str, text: str) -> None:
    everything = flows_json(merged, direction)
    want = [r for r in everything if FILTERS[text](r, *_ends(r))]
    got = flows_json(merged, direction, "--where", text)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    by_rank = flows_json(merged, direction, "--where", text, "--order", "rank")
    assert by_rank == sorted(got, key=lambda r: (-r["bytes"], -r["packets"], key_text(r)))
    top = json.loads(cli(merged, "top", NAME, "--direction", direction, "--format", "json",
                         "-n", "3", "--by", "packets", "--where", text))  # fmt: skip
    ranked = sorted(want, key=lambda r: (-r["packets"], -r["bytes"]))
    assert [r["packets"] for r in top] == [r["packets"] for r in ranked[:3]]
    assert all(r in want for r in top)


def test_filters_have_matches(merged: str) -> None:
    """The filters above select some flows and leave out others, in both views."""
    for direction in ("uni", "bi"):
        everything = flows_json(merged, direction)
        for text, f in FILTERS.items():
            n = sum(1 for r in everything if f(r, *_ends(r)))
            assert 0 < n < len(everything), (direction, text)


def test_where_on_windows_summary_and_hist(merged: str, tmp_path: Path) -> None:
    where = ["--where", "port 22"]
    wins = json.loads(cli(merged, "windows", NAME, "--json", *where))
    assert [w["flows"] for w in wins] == [1, 1, 1]
    assert sum(w["packets"] for w in wins) == 20
    ssh = json.loads(cli(merged, "top", NAME, "-n", "5", "--format", "json", *where))
    assert len(ssh) == 1 and sum(w["bytes"] for w in wins) == ssh[0]["bytes"]
    per = json.loads(cli(merged, "top", NAME, "--window", "all", "--format", "json", *where))
    assert [len(w["rows"]) for w in per] == [1, 1, 1]
    assert all(r["rows"][0]["sport"] == 22 for r in per)
    pers = json.loads(cli(merged, "persist", NAME, "-n", "1", "--json", *where))
    assert len(pers) == 1 and pers[0]["sport"] == 22 and len(pers[0]["windows"]) == 3
    assert "flows where port 22" in cli(merged, "watch", NAME, "--once", *where)
    summ = json.loads(cli(merged, "summary", NAME, "--json", "--where", "udp"))["summary"]
    assert (summ["packets"], summ["flows_uni"], summ["flows_bi"]) == (2, 2, 1)
    assert summ["not_counted"] == {}
    everything = json.loads(cli(merged, "summary", NAME, "--json"))["summary"]
    assert everything["packets"] > summ["packets"]
    out = tmp_path / "h.png"
    cli(merged, "hist", NAME, "-o", str(out), "--where", "tcp")
    assert out.stat().st_size > 0
    res = CliRunner().invoke(reporter_main, ["hist", NAME, "-o", str(out), "--where", "port 9",
                                             "--redis-url", merged])  # fmt: skip
    assert res.exit_code == 1 and "no flows matching 'port 9'" in res.output


@pytest.mark.parametrize(
    "command",
    [
        ["top", NAME],
        ["flows", NAME],
        ["summary", NAME],
        ["hist", NAME, "-o", "x.png"],
        ["windows", NAME],
        ["persist", NAME],
        ["watch", NAME, "--once"],
    ],
)
def test_bad_filter_is_one_line_exit_2(merged: str, command: list[str]) -> None:
    res = CliRunner().invoke(
        reporter_main, [*command, "--where", "proto tcp and dprt 443", "--redis-url", merged]
    )
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == ["error: --where: unknown field 'dprt' at column 15"]
