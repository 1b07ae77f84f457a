"""Community ID v1 (flowherd.models.community) against the ``communityid`` reference package: the spec's
own example, generated tuples of every protocol, every flow of every shared capture's oracle
tables, and the CSV/JSON writers (model path and streaming path) with any seed."""

from __future__ import annotations

import csv
import io
import json
from ipaddress import ip_address
from pathlib import Path

import communityid
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import Redis

from flowherd.models.community import NO_ID_PROTOS, PORT_PROTOS, community_id, flow_community_id
from flowherd.models.flows import NS, FlowKey, FlowStats, canonical
from flowherd.producer.run.follow import LocalWorkers
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.reporter.output.lines import write_rows
from flowherd.reporter.output.ranked_lines import write_rows_ranked
from flowherd.reporter.output.render import rows_csv, rows_json, with_community
from flowherd.reporter.table.order import top
from flowherd.reporter.table.views import conv_row, uni_rows
from flowherd.store.backend import Store
from tests.support.pipeline import run_capture, settings_for

ORACLE = Path(__file__).resolve().parents[3] / "shared" / "oracle"
UNI_FILES = sorted(ORACLE.glob("*.uni.csv")) if ORACLE.is_dir() else []


def reference(src: bytes, dst: bytes, proto: int, sport: int, dport: int, seed: int = 0) -> str:
    if proto in PORT_PROTOS:
        tpl = communityid.FlowTuple(proto, src, dst, sport, dport)
    else:
        tpl = communityid.FlowTuple(proto, src, dst)
    return communityid.CommunityID(seed).calc(tpl)  # type: ignore[no-any-return]


def test_spec_example() -> None:
    # the spec's README: 128.232.110.120:34855 -> 66.35.250.204:80 TCP, seed 0
    a, b = ip_address("128.232.110.120").packed, ip_address("66.35.250.204").packed
    assert community_id(a, b, 6, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert community_id(b, a, 6, 80, 34855) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert community_id(a, b, 6, 34855, 80, seed=1) != "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def test_bad_input_is_refused() -> None:
    v4, v6 = bytes(4), bytes(16)
    for bad in (
        lambda: community_id(v4, v6, 6, 1, 2),
        lambda: community_id(v4, v4, 6, 1, 2, seed=65536),
        lambda: community_id(v4, v4, 256),
        lambda: community_id(v4, v4, 17, 70000, 1),
    ):
        with pytest.raises(ValueError):
            bad()


ADDR4 = st.sampled_from([bytes(4), bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), b"\xff" * 4])
ADDR6 = st.sampled_from([bytes(16), bytes(15) + b"\x01", b"\x20\x01\x0d\xb8" + bytes(12)])
PORT = st.one_of(st.sampled_from([0, 1, 8, 53, 128, 129, 443, 65535]), st.integers(0, 65535))


@settings(max_examples=400, deadline=None)
@given(
    v6=st.booleans(),
    data=st.data(),
    proto=st.one_of(st.sampled_from([1, 6, 17, 47, 50, 58, 132, 0, 255]), st.integers(0, 255)),
    ports=st.tuples(PORT, PORT),
    seed=st.one_of(st.just(0), st.integers(0, 65535)),
)
def test_equals_the_reference(
    v6: bool, data: st.DataObject, proto: int, ports: tuple[int, int], seed: int
) -> None:
    addr = ADDR6 if v6 else ADDR4
    src, dst = data.draw(addr), data.draw(addr)
    sp, dp = ports
    if proto in (1, 58):  # ICMP: type and code are bytes
        sp, dp = sp % 256, dp % 256
    assert community_id(src, dst, proto, sp, dp, seed) == reference(src, dst, proto, sp, dp, seed)


def test_flows_of_icmp_and_sctp_have_none() -> None:
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    assert {1, 58, 132} == NO_ID_PROTOS
    for proto in (1, 58, 132):
        assert flow_community_id(a, b, proto, 0, 0) is None
    assert flow_community_id(a, b, 47, 0, 0) == reference(a, b, 47, 0, 0)
    # a TCP/UDP key with ports 0 (a non-first fragment) hashes the ports it has
    assert flow_community_id(a, b, 6, 0, 0) == reference(a, b, 6, 0, 0)


# ---------------------------------------------------------------------------------------------
# the shared corpus: every flow of every oracle table


def _packed(text: str) -> bytes:
    return ip_address(text).packed


@pytest.mark.skipif(not UNI_FILES, reason="no oracle in ../shared/oracle")
@pytest.mark.corpus
@pytest.mark.parametrize("path", UNI_FILES, ids=lambda p: p.name.removesuffix(".uni.csv"))
def test_every_oracle_flow_equals_the_reference(path: Path) -> None:
    """TCP and UDP flows (and port-less protocols) get the reference's ID, from the flow key
    as the rows and the CSV writer compute it; ICMP, ICMPv6 and SCTP get none."""
    bi = path.with_name(path.name.removesuffix(".uni.csv") + ".bi.csv")
    for file, cols in ((path, ("src", "dst", "sport", "dport")),
                       (bi, ("a_addr", "b_addr", "a_port", "b_port"))):  # fmt: skip
        rows = list(csv.DictReader(io.StringIO(file.read_text())))
        for r in rows:
            s, d, sp, dp = r[cols[0]], r[cols[1]], int(r[cols[2]]), int(r[cols[3]])
            proto = int(r["proto"])
            got = flow_community_id(_packed(s), _packed(d), proto, sp, dp)
            if proto in NO_ID_PROTOS:
                assert got is None
                continue
            want = reference(_packed(s), _packed(d), proto, sp, dp)
            assert got == want, r
            # the conversation's rows (canonical key) give the same ID
            key, _ = canonical(_packed(s), _packed(d), proto, sp, dp)
            stats = FlowStats()
            stats.add(0, 1, 1, 0)
            assert conv_row(key, stats).community_id == want


def test_corpus_has_tcp_and_udp() -> None:
    """The corpus test above checks something: the oracle holds TCP and UDP flows."""
    if not UNI_FILES:
        pytest.skip("no oracle in ../shared/oracle")
    protos = {line.split(",")[2] for p in UNI_FILES for line in p.read_text().splitlines()[1:]}
    assert {"6", "17"} <= protos


# ---------------------------------------------------------------------------------------------
# writers: the model path and the streaming path agree, with any seed

V4 = [bytes([10, 0, 0, i]) for i in range(3)]
V6 = [bytes(15) + b"\x01", b"\x20\x01\x0d\xb8" + bytes(12)]
PACKET = st.tuples(
    st.booleans(),
    st.integers(0, 2),
    st.integers(0, 2),
    st.sampled_from([1, 6, 17, 47, 132]),
    st.integers(0, 2),
    st.integers(0, 2),
    st.one_of(st.integers(1_704_067_200 * NS, 1_704_067_500 * NS), st.integers(-3 * NS, 3 * NS)),
    st.integers(40, 1500),
)


def build(packets: list[tuple]) -> dict[FlowKey, FlowStats]:  # type: ignore[type-arg]
    table: dict[FlowKey, FlowStats] = {}
    for v6, si, di, proto, sp, dp, ts, length in packets:
        pool = V6 if v6 else V4
        key, d = canonical(pool[si % len(pool)], pool[di % len(pool)], proto, sp, dp)
        table.setdefault(key, FlowStats()).add(d, ts, length, 0)
    return table


@settings(max_examples=80, deadline=None)
@given(
    packets=st.lists(PACKET, max_size=40),
    view=st.sampled_from(["uni", "bi"]),
    seed=st.sampled_from([0, 1, 65535]),
)
def test_writers_agree_with_any_seed(packets: list, view: str, seed: int) -> None:  # type: ignore[type-arg]
    table = build(packets)
    pairs = [(k.pack(), s.pack()) for k, s in table.items()]
    if view == "bi":
        rows = [conv_row(k, s, seed) for k, s in table.items()]
    else:
        rows = [r for k, s in table.items() for r in uni_rows(k, s, seed)]
    assert with_community(rows, seed) == rows  # type: ignore[type-var]
    for r in rows:
        if r.proto in NO_ID_PROTOS:
            assert r.community_id is None
        else:
            a, b = (r.src, r.dst) if view == "uni" else (r.a_addr, r.b_addr)  # type: ignore[union-attr]
            pa, pb = (r.sport, r.dport) if view == "uni" else (r.a_port, r.b_port)  # type: ignore[union-attr]
            assert r.community_id == reference(_packed(a), _packed(b), r.proto, pa, pb, seed)
    want = io.StringIO()
    rows_csv(rows, want, view=view, community_seed=seed)  # type: ignore[arg-type]
    got = io.StringIO()
    write_rows(pairs, got, view, "csv", community_seed=seed)  # type: ignore[arg-type]
    assert got.getvalue() == want.getvalue()
    assert want.getvalue().splitlines()[0].endswith(",community_id")
    got = io.StringIO()
    write_rows(pairs, got, view, "json", community_seed=seed)  # type: ignore[arg-type]
    assert got.getvalue() == rows_json(rows) == rows_json(rows, community_seed=seed)
    assert [r["community_id"] for r in json.loads(got.getvalue())] == [r.community_id for r in rows]
    ranked = top(rows, "bytes", len(rows))  # type: ignore[type-var]
    want = io.StringIO()
    rows_csv(ranked, want, view=view, community_seed=seed)  # type: ignore[arg-type]
    for fmt, expect in (("csv", want.getvalue()), ("json", rows_json(ranked))):
        got = io.StringIO()
        write_rows_ranked(pairs, got, view, fmt, run_rows=3, community_seed=seed)  # type: ignore[arg-type]
        assert got.getvalue() == expect


def test_both_directions_and_the_conversation_share_the_id() -> None:
    key, d = canonical(bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]), 6, 443, 40000)
    stats = FlowStats()
    stats.add(d, 1, 100, 0)
    stats.add(1 - d, 2, 100, 0)
    ids = {r.community_id for r in uni_rows(key, stats)} | {conv_row(key, stats).community_id}
    assert len(ids) == 1 and None not in ids


# ---------------------------------------------------------------------------------------------
# shared captures through the pipeline: the CLI's column

PIPELINE = ["ppp_many-protocols.pcap", "zeek_ftp-ipv6.pcap", "dpkt_dns_icmp.pcap"]


@pytest.mark.redis
@pytest.mark.e2e
@pytest.mark.corpus
def test_cli_column_on_shared_captures(redis_url: str, conn: Redis, shared: Path) -> None:
    settings = settings_for(redis_url, batch_packets=200, engine="fast")
    checked = 0
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        for file in PIPELINE:
            run_capture(Store.single(conn), settings, [str(shared / "pcaps" / file)], "c", w)
            for direction in ("uni", "bi"):
                res = CliRunner().invoke(reporter_main, ["flows", "c", "--direction", direction,
                                                         "--redis-url", redis_url])  # fmt: skip
                assert res.exit_code == 0, res.output
                a, b, ap, bp = (("src", "dst", "sport", "dport") if direction == "uni"
                                else ("a_addr", "b_addr", "a_port", "b_port"))  # fmt: skip
                for r in csv.DictReader(io.StringIO(res.output)):
                    p = int(r["proto"])
                    want = "" if p in NO_ID_PROTOS else reference(
                        _packed(r[a]), _packed(r[b]), p, int(r[ap]), int(r[bp]))  # fmt: skip
                    assert r["community_id"] == want, (file, r)
                    checked += p in (6, 17)
    assert checked > 50
