"""File exports (``reporter export -o FILE``): the rows and their schema, the three writers, and
the files read back (Parquet by DuckDB) against ``reporter flows --format csv``."""

from __future__ import annotations

import csv
import io
import json
import random
import sys
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from flowherd.models.flows import NS, FlowKey, FlowStats, addr_text, canonical, ts_text
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.reporter.output import files as exports
from flowherd.reporter.output.files import BI, UNI, Column, Extra, format_of, iso_time, records
from flowherd.reporter.table.views import conv_row, uni_rows
from tests.support.pipeline import run_capture, settings_for

ADDRS = [bytes([10, 0, 0, i]) for i in range(3)] + [bytes([192, 168, 1, 1])]
ADDRS6 = [
    bytes(15) + b"\x01",
    bytes(10) + b"\xff\xff\x01\x02\x03\x04",
    bytes.fromhex("20010db8" + "00" * 11 + "05"),
]
PACKET = st.tuples(
    st.booleans(),
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from([1, 6, 17]),
    st.integers(0, 2),
    st.integers(0, 2),
    st.one_of(st.integers(1_704_067_200 * NS, 1_704_067_300 * NS), st.integers(-3 * NS, 3 * NS)),
    st.integers(40, 1500),
    st.integers(0, 255),
)


def build(packets: list[tuple]) -> dict[FlowKey, FlowStats]:  # type: ignore[type-arg]
    table: dict[FlowKey, FlowStats] = {}
    for v6, si, di, proto, sp, dp, ts, length, flags in packets:
        pool = ADDRS6 if v6 else ADDRS
        key, d = canonical(pool[si % len(pool)], pool[di % len(pool)], proto, sp, dp)
        table.setdefault(key, FlowStats()).add(d, ts, length, flags)
    return table


def pairs(table: dict[FlowKey, FlowStats]) -> list[tuple[bytes, bytes]]:
    return [(k.pack(), s.pack()) for k, s in table.items()]


tables = st.lists(PACKET, max_size=60).map(build)


# --- rows ---------------------------------------------------------------------------------------


@given(tables)
@settings(max_examples=150, deadline=None)
def test_rows_are_the_reported_views(table: dict[FlowKey, FlowStats]) -> None:
    """Uni rows are :func:`uni_rows` (one per direction with packets), bi rows :func:`conv_row`
    (the same orientation), with the derived columns consistent."""
    uni = [
        (r.src, r.dst, r.proto, r.sport, r.dport, r.packets, r.bytes, r.first_ns, r.last_ns,
         r.first_ns, r.last_ns, r.last_ns - r.first_ns, r.tcp_flags)
        for k, s in table.items() for r in uni_rows(k, s)
    ]  # fmt: skip
    assert list(records(pairs(table), "uni")) == uni
    bi = []
    for k, s in table.items():
        c = conv_row(k, s)
        fa, fb = (
            (s.flags_ab, s.flags_ba)
            if c.a_addr == addr_text(k.a_addr) and c.a_port == k.a_port
            else (s.flags_ba, s.flags_ab)
        )
        bi.append(
            (c.proto, c.a_addr, c.a_port, c.b_addr, c.b_port, c.packets_a_to_b, c.bytes_a_to_b,
             c.packets_b_to_a, c.bytes_b_to_a, c.packets, c.bytes, c.first_ns, c.last_ns,
             c.first_ns, c.last_ns, c.last_ns - c.first_ns, fa, fb)
        )  # fmt: skip
    assert list(records(pairs(table), "bi")) == bi
    for schema, rows in ((UNI, uni), (BI, bi)):
        assert all(len(r) == len(schema.columns) for r in rows)


def test_keep_drops_conversations_and_extras_follow_the_row_orientation() -> None:
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    st1 = FlowStats()
    st1.add(1, 5 * NS, 100, 0x02)  # B sends first: the bi row puts b first
    st1.add(0, 6 * NS, 60, 0x12)
    st2 = FlowStats()
    st2.add(0, 7 * NS, 70, 0)
    table = {FlowKey(a, b, 6, 1000, 80): st1, FlowKey(a, b, 17, 53, 53): st2}
    tag = Extra(
        Column("tag", "str", True),
        lambda s, d, p, sp, dp: f"{addr_text(s)}:{sp}>{addr_text(d)}:{dp}" if p == 6 else None,
    )

    uni = list(records(pairs(table), "uni", extras=[tag]))
    assert [r[-1] for r in uni] == ["10.0.0.1:1000>10.0.0.2:80", "10.0.0.2:80>10.0.0.1:1000", None]
    assert all(r[-1] is None or r[-1].startswith(f"{r[0]}:{r[3]}>") for r in uni)
    (bi,) = records(pairs(table), "bi", keep=lambda k, s: k.proto == 6, extras=[tag])
    assert bi[1:5] == ("10.0.0.2", 80, "10.0.0.1", 1000) and bi[-1] == "10.0.0.2:80>10.0.0.1:1000"
    assert bi[-3:-1] == (0x02, 0x12)  # flags follow the orientation
    assert list(records(pairs(table), "uni", keep=lambda k, s: s.packets > 5)) == []
    with pytest.raises(ValueError, match="view"):
        list(records(pairs(table), "both"))  # type: ignore[arg-type]


@given(st.integers(-(2**62), 2**63 - 1))
def test_iso_time_is_exact(ns: int) -> None:
    text = iso_time(ns)
    sec, frac = divmod(ns, NS)
    want = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=sec)
    assert text == want.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def test_iso_time_examples_and_format_from_suffix() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000000000Z"
    assert iso_time(-1) == "1969-12-31T23:59:59.999999999Z"
    assert iso_time(1_704_067_200 * NS + 5) == "2024-01-01T00:00:00.000000005Z"
    assert [format_of(n) for n in ("a.CSV", "b.ndjson", "c.jsonl", "d.parquet", "e.pq", "f.txt")] == [
        "csv", "ndjson", "ndjson", "parquet", "parquet", None,
    ]  # fmt: skip


# --- writers -----------------------------------------------------------------------------------


def sample_rows(n: int = 50, seed: int = 4) -> tuple[dict[FlowKey, FlowStats], list[tuple]]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    table = build([
        (rng.random() < 0.3, rng.randrange(4), rng.randrange(4), rng.choice([6, 17]),
         rng.randrange(3), rng.randrange(3), 1_704_067_200 * NS + rng.randrange(60 * NS),
         rng.randrange(40, 1500), rng.randrange(256))
        for _ in range(n)
    ])  # fmt: skip
    return table, list(records(pairs(table), "uni"))


def test_csv_and_ndjson_hold_the_rows() -> None:
    _, rows = sample_rows()
    text = io.StringIO()
    assert exports.write_csv(iter(rows), UNI, text) == len(rows)
    got = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert list(got[0]) == UNI.names
    for g, r in zip(got, rows, strict=True):
        assert [g["src"], int(g["sport"]), int(g["bytes"]), int(g["first_ns"]), g["last"]] == [
            r[0],
            r[3],
            r[6],
            r[7],
            iso_time(r[8]),
        ]
    text = io.StringIO()
    assert exports.write_ndjson(iter(rows), UNI, text) == len(rows)
    objs = [json.loads(line) for line in text.getvalue().splitlines()]
    assert [list(o) for o in objs[:1]] == [UNI.names]
    assert [(o["dst"], o["packets"], o["tcp_flags"], o["first"]) for o in objs] == [
        (r[1], r[5], r[12], iso_time(r[7])) for r in rows
    ]


def test_parquet_types_row_groups_and_duckdb(tmp_path: Path) -> None:
    table, rows = sample_rows(80)
    path = tmp_path / "f.parquet"
    assert exports.write_parquet(iter(rows), UNI, str(path), row_group=16) == len(rows)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == len(rows) and meta.num_row_groups == -(-len(rows) // 16)
    types = {f.name: str(f.type) for f in pq.read_schema(path)}
    assert types["src"] == "string" and types["sport"] == "uint16" and types["proto"] == "uint8"
    assert types["bytes"] == "int64" and types["first"] == "timestamp[ns, tz=UTC]"
    got = duckdb.sql(
        f"SELECT src, dst, proto, sport, dport, packets, bytes, first_ns, last_ns, epoch_ns(first), "
        f"epoch_ns(last), duration_ns, tcp_flags FROM '{path}'"
    ).fetchall()
    assert sorted(got) == sorted(rows)
    bi_path = tmp_path / "b.parquet"
    exports.write_parquet(records(pairs(table), "bi"), BI, str(bi_path))
    got_bi = duckdb.sql(
        f"SELECT sum(packets), sum(bytes_a_to_b + bytes_b_to_a) FROM '{bi_path}'"
    ).fetchall()[0]
    assert got_bi == (sum(s.packets for s in table.values()), sum(s.bytes for s in table.values()))
    empty = tmp_path / "e.parquet"
    assert exports.write_parquet(iter([]), BI, str(empty)) == 0
    assert pq.read_schema(empty).names == BI.names


def synthetic(n: int) -> Iterator[tuple[bytes, bytes]]:
    rng = random.Random(1)
    hosts = [rng.randbytes(4) for _ in range(2048)]
    for i in range(n):
        a, b = sorted((rng.choice(hosts), rng.choice(hosts)))
        t = 1_704_067_200 * NS + rng.randrange(300 * NS)
        yield (
            FlowKey(a, b, 6, i & 0xFFFF, 443).pack(),
            FlowStats(3, 900, 1, 60, t, t + 9, t + 1, t + 5).pack(),
        )


class _Sink(io.StringIO):
    def write(self, s: str) -> int:
        return len(s)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_memory_does_not_grow_with_the_table(fmt: str, tmp_path: Path) -> None:
    """The traced peak for 48,000 conversations is about what 12,000 need: one chunk or row
    group at a time (a table held in memory would take four times as much). Arrow's own
    buffers are outside tracemalloc's view: for Parquet this checks the Python rows."""

    def peak(n: int) -> int:
        rows = records(synthetic(n), "uni")
        tracemalloc.start()
        if fmt == "parquet":
            exports.write_parquet(rows, UNI, str(tmp_path / f"{n}.parquet"), row_group=8192)
        else:
            (exports.write_csv if fmt == "csv" else exports.write_ndjson)(rows, UNI, _Sink())
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p

    small, large = peak(12_000), peak(48_000)
    assert large < 1.25 * small + 1_000_000, (small, large)


# --- the command, on a capture merged by real workers ------------------------------------------


def _cli(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(reporter_main, args, catch_exceptions=False)


@pytest.fixture
def merged(redis_url: str, store, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """Capture ``ex`` (a sample trace with IPv4 and IPv6 flows, 20 s windows), merged by two
    workers."""
    path = tmp_path / "ex.pcap"
    write_sample(path, flows=120, seed=11)
    settings = settings_for(redis_url, batch_packets=400, window=20)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        run_capture(store, settings, [str(path)], "ex", w)
    return redis_url


def _flows_csv(url: str, direction: str, *args: str) -> list[list[str]]:
    res = _cli(
        ["flows", "ex", "--direction", direction, "--format", "csv", *args, "--redis-url", url]
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.reader(io.StringIO(res.stdout)))  # every column, community_id included
    assert rows[0][-1] == "community_id"
    return [rows[0], *sorted(rows[1:])]


TAIL = "first_ns, last_ns, community_id FROM '{}'"
UNI_SQL = "SELECT src, dst, proto, sport, dport, packets, bytes, " + TAIL
BI_SQL = (
    "SELECT proto, a_addr, a_port, b_addr, b_port, packets_a_to_b, bytes_a_to_b, packets_b_to_a, "
    "bytes_b_to_a, packets, bytes, " + TAIL
)
FILTER = [
    "--where",
    "tcp and dport < 10000 or proto 17 and bytes > 300",
    "--community-id-seed",
    "7",
]


@pytest.mark.redis
@pytest.mark.e2e
@pytest.mark.parametrize("direction", ["uni", "bi"])
@pytest.mark.parametrize("args", [[], FILTER], ids=["all", "where"])
def test_parquet_read_by_duckdb_equals_reporter_flows(
    merged: str, tmp_path: Path, direction: str, args: list[str]
) -> None:
    out = tmp_path / f"ex.{direction}.parquet"
    res = _cli(
        ["export", "ex", "-o", str(out), "--direction", direction, *args, "--redis-url", merged]
    )
    assert res.exit_code == 0, res.output
    rows = duckdb.sql((UNI_SQL if direction == "uni" else BI_SQL).format(out)).fetchall()
    as_text = [
        [str(v) for v in r[:-3]] + [ts_text(r[-3]), ts_text(r[-2]), r[-1] or ""] for r in rows
    ]
    want = _flows_csv(merged, direction, *args)
    assert [want[0], *sorted(as_text)] == want
    total = len(_flows_csv(merged, direction)) - 1
    assert 0 < len(rows) < total if args else len(rows) == total > 100
    assert any(":" in r[0 if direction == "uni" else 1] for r in rows)  # IPv6 too
    assert f"wrote {len(rows):,}" in res.stderr and not (tmp_path / f"{out.name}.part").exists()


@pytest.mark.redis
@pytest.mark.e2e
def test_csv_and_ndjson_files_and_stdout_equal_reporter_flows(merged: str, tmp_path: Path) -> None:
    want = _flows_csv(merged, "uni")
    cols = ["src", "dst", "proto", "sport", "dport", "packets", "bytes"]

    def check(objs: list[dict]) -> None:  # type: ignore[type-arg]
        got = [
            [str(o[c]) for c in cols]
            + [ts_text(int(o["first_ns"])), ts_text(int(o["last_ns"])), o["community_id"] or ""]
            for o in objs
        ]
        assert [want[0], *sorted(got)] == want

    out = tmp_path / "ex.csv"
    assert _cli(["export", "ex", "-o", str(out), "--redis-url", merged]).exit_code == 0
    check(list(csv.DictReader(out.open())))
    out = tmp_path / "ex.jsonl"
    assert _cli(["export", "ex", "-o", str(out), "--redis-url", merged]).exit_code == 0
    check([json.loads(line) for line in out.read_text().splitlines()])
    res = _cli(["export", "ex", "-o", "-", "--format", "ndjson", "--redis-url", merged])
    assert res.exit_code == 0
    check([json.loads(line) for line in res.stdout.splitlines()])


@pytest.mark.redis
@pytest.mark.e2e
def test_one_window(merged: str, tmp_path: Path) -> None:
    wins = json.loads(_cli(["windows", "ex", "--json", "--redis-url", merged]).stdout)
    assert len(wins) >= 3
    for which, win in (("latest", wins[-1]), (str(wins[1]["start_ns"] / NS + 1), wins[1])):
        out = tmp_path / "w.ndjson"
        res = _cli(["export", "ex", "--window", which, "-o", str(out), "--redis-url", merged])
        assert res.exit_code == 0, res.output
        objs = [json.loads(line) for line in out.read_text().splitlines()]
        assert sum(o["packets"] for o in objs) == win["packets"]
        assert sum(o["bytes"] for o in objs) == win["bytes"]
        assert all(
            win["start_ns"] <= o["first_ns"] <= o["last_ns"] < win["start_ns"] + win["width_ns"]
            for o in objs
        )
    res = _cli(["export", "ex", "--window", "all", "-o", str(out), "--redis-url", merged])
    assert res.exit_code == 2 and "one window" in res.output


def _one_line_error(res) -> str:  # type: ignore[no-untyped-def]
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.mark.redis
def test_usage_errors_are_one_line(redis_url: str, conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = ["--redis-url", redis_url]
    res = _cli(["export", "nope", "-o", str(tmp_path / "x.csv"), *url])
    assert res.exit_code == 1 and "no capture named 'nope'" in _one_line_error(res)
    for args, expect in [
        ([], "-o FILE or --ipfix"),
        (["-o", "x.txt"], "--format"),
        (["--ipfix", "localhost"], "HOST:PORT"),
        (["--ipfix", "127.0.0.1:4739", "--direction", "bi"], "unidirectional"),
    ]:
        res = _cli(["export", "nope", *args, *url])
        assert res.exit_code == 2 and expect in res.output, (args, res.output)


@pytest.mark.redis
def test_missing_pyarrow_is_one_line(
    merged: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an install without the extra sees
    out = tmp_path / "x.parquet"
    res = _cli(["export", "ex", "-o", str(out), "--redis-url", merged])
    assert res.exit_code == 3 and "flowherd[export]" in _one_line_error(res)
    assert not out.exists()
