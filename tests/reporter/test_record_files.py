"""Record files of a live capture (``reporter records``): each format holds the journal's
records in the columns of ``reporter export``; a file appears whole under its final name; a
journal torn past its committed length is cut back; the sniff refuses records without a
timeout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowherd.models.errors import FlowherdError
from flowherd.models.expiry import RecordsOut, journal_entries, journal_entry
from flowherd.models.flows import FlowKey, FlowStats
from flowherd.producer.cli.main import main as producer_main
from flowherd.reporter.query.expire import _append, _read, file_name, write_file

A, B = bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2))


def _pairs() -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(5):
        st = FlowStats()
        st.add(0, 1_700_000_000_000_000_000 + i, 100 + i, 0x18)
        if i % 2:
            st.add(1, 1_700_000_000_000_000_500 + i, 60, 0x10)
        out.append((FlowKey(A, B, 6, 1000 + i, 80).pack(), st.pack()))
    return out


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "parquet"])
def test_each_format_holds_the_records(fmt: str, tmp_path: Path) -> None:
    pairs = _pairs()
    dest = tmp_path / file_name("cap", 0, 1, 7, 1_700_000_000 * 10**9, fmt)
    assert dest.name == f"cap.20231114T221320Z.000007.{fmt}"
    n = write_file(pairs, RecordsOut(dir=str(tmp_path), format=fmt), dest)
    assert n == 7  # 5 records, 2 of them with both directions
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]  # no temporary file left
    if fmt == "ndjson":
        rows = [json.loads(line) for line in dest.read_text().splitlines()]
    elif fmt == "csv":
        rows = list(csv.DictReader(dest.open()))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(dest).to_pylist()
    assert sum(int(r["packets"]) for r in rows) == 7
    assert sum(int(r["bytes"]) for r in rows) == sum(100 + i for i in range(5)) + 2 * 60
    assert {int(r["sport"]) for r in rows if r["src"] == "10.0.0.1"} == {1000 + i for i in range(5)}


def test_the_journal_is_cut_back_to_its_committed_length(tmp_path: Path) -> None:
    j = tmp_path / ".run.s0.000000.journal"
    pairs = _pairs()
    first = b"".join(journal_entry(k, FlowStats.unpack(v)) for k, v in pairs[:2])
    n = _append(j, 0, first)
    with j.open("ab") as f:
        f.write(b"\x07uncommitted")  # a step killed between its write and its commit
    m = _append(j, n, journal_entry(pairs[2][0], FlowStats.unpack(pairs[2][1])))
    assert list(journal_entries(_read(j, 0, m))) == pairs[:3]
    j.write_bytes(b"")  # replaced behind the exporter's back: its records are lost, say so
    with pytest.raises(FlowherdError, match="were committed"):
        _append(j, m, b"")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--records-dir", "out"], "give --idle-timeout and/or --active-timeout"),
        (["--ipfix", "127.0.0.1:4739"], "give --idle-timeout and/or --active-timeout"),
        (["--idle-timeout", "5s", "--ipfix", "nowhere"], "expected HOST:PORT"),
        (["--idle-timeout", "5s", "--records-dir", "o", "--records-rotate", "0s"], "rotate"),
    ],
)
def test_sniff_refuses_records_it_cannot_write(args: list[str], message: str) -> None:
    res = CliRunner().invoke(producer_main, ["sniff", "-i", "lo", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_sniff_refuses_a_records_dir_it_cannot_write(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    for bad in (str(f), "a\0b"):
        res = CliRunner().invoke(
            producer_main, ["sniff", "-i", "lo", "--idle-timeout", "5s", "--records-dir", bad]
        )
        assert res.exit_code == 2, res.output
        assert "--records-dir" in res.output and "Traceback" not in res.output
