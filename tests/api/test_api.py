"""The Python API against the CLI on the same capture: a real Redis, a real local worker."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowherd
from flowherd import frames
from flowherd.api import seconds
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_raw, table
from tests.support.helpers import invoke


def test_durations_as_the_cli_takes_them_or_seconds() -> None:
    assert seconds("30s", "window") == 30.0 and seconds("500ms", "w") == 0.5
    assert seconds(90, "window") == 90.0 and seconds(None, "window") is None
    with pytest.raises(ValueError, match="idle_timeout: 'soon' is not a duration"):
        seconds("soon", "idle_timeout")
    with pytest.raises(ValueError, match="window: 0 is not a positive number"):
        seconds(0, "window")


@pytest.mark.redis
def test_errors_are_the_clis(redis_url: str, conn: object, tmp_path: Path) -> None:
    with pytest.raises(flowherd.CaptureStateError) as err:
        flowherd.open("nope", redis_url=redis_url)
    r = CliRunner().invoke(reporter_main, ["top", "nope", "--redis-url", redis_url])
    assert r.output.strip() == f"error: {err.value}"
    missing = str(tmp_path / "missing.pcap")
    with pytest.raises(flowherd.CaptureError) as err2:
        flowherd.analyse(missing, redis_url=redis_url, progress=False)
    r = invoke(["submit", missing, "--redis-url", redis_url])
    assert r.output.strip() == f"error: {err2.value}"


def _cli(*args: str) -> list[dict[str, str]]:
    r = CliRunner().invoke(reporter_main, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return list(csv.DictReader(io.StringIO(r.output)))


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("api")
    write_sample(d / "api.pcap", flows=400, seed=11)
    (d / "notes.txt").write_text("not a capture")
    return d


@pytest.fixture
def cap(trace: Path, redis_url: str, conn: object) -> Iterator[flowherd.Capture]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        c = flowherd.analyse(
            trace, name="api", workers=1, window="20s", redis_url=redis_url, progress=False
        )
    assert [str(w.message) for w in seen] == [
        f"skipped {trace / 'notes.txt'}: not a pcap or pcapng file: it begins with "
        "6e 6f 74 20 61 20 63 61 (b'not a ca'), which looks like text"
    ]
    yield c


@pytest.mark.e2e
def test_tables_equal_the_clis(cap: flowherd.Capture, redis_url: str) -> None:
    url = ["--redis-url", redis_url]
    assert cap.state == "complete" and "complete" in cap._repr_html_()
    top = cap.top(10, by="packets", direction="bi")
    cli = _cli("top", "api", "-n", "10", "--by", "packets", "--direction", "bi",
               "--format", "csv", *url)  # fmt: skip
    assert list(top.columns) == list(cli[0])
    assert [str(x) for x in top["frames"]] == [r["frames"] for r in cli]
    assert str(top["first_ts"].dtype) == "datetime64[ns, UTC]" and top["proto"].dtype == "uint8"
    flows = cap.flows()
    cli_flows = _cli("flows", "api", *url)
    assert list(flows.columns) == list(cli_flows[0])
    got = sorted(
        zip(
            flows["src"],
            flows["sport"].astype(int),
            flows["bytes"],
            flows["community_id"],
            strict=True,
        )
    )
    want = sorted(
        (r["src"], int(r["sport"]), int(r["bytes"]), r["community_id"]) for r in cli_flows
    )
    assert got == want
    stats = cap.stats(key="dport", by="flows", n=5)
    cli_stats = _cli(
        "stats", "api", "--key", "dport", "--by", "flows", "-n", "5", "--format", "csv", *url
    )
    assert list(stats.columns)[:4] == ["key", "packets", "bytes", "flows"]
    assert list(stats["key"]) == [r["key"] for r in cli_stats]
    assert list(stats["bytes"]) == [int(r["bytes"]) for r in cli_stats]
    tcp = cap.top(3, where="proto tcp and bytes > 10KB")
    cli_tcp = _cli(
        "top", "api", "-n", "3", "--where", "proto tcp and bytes > 10KB", "--format", "csv", *url
    )
    assert list(tcp["bytes"]) == [int(r["bytes"]) for r in cli_tcp]
    wins = cap.windows()
    assert len(wins) >= 3 and int(wins["packets"].sum()) == cap.status().packets
    per_window = cap.top(2, window="all")
    assert per_window.columns[0] == "window_start"
    assert list(per_window["window_start"].unique()) == list(wins["start"])
    assert len(cap.elephants("top:7")) == 7
    assert cap.summary()["packets"] == cap.status().packets
    frame = flowherd.captures(redis_url=redis_url)
    assert list(frame["name"]) == ["api"] and int(frame["packets"][0]) == cap.status().packets


@pytest.mark.e2e
def test_the_arrow_stream_reads_the_store_as_it_goes(cap: flowherd.Capture) -> None:
    duckdb = pytest.importorskip("duckdb")
    reader = cap.flows_arrow()  # noqa: F841 (DuckDB reads it by its name)
    rel = duckdb.sql("select count(*), sum(bytes), sum(packets) from reader")
    (got,) = rel.fetchall()
    flows = cap.flows()
    assert got == (len(flows), int(flows["bytes"].sum()), int(flows["packets"].sum()))
    # batches are built as the records are read: the first batch leaves the rest unread
    read = 0
    store = cap._store

    def counted() -> Iterator[tuple[bytes, bytes]]:
        nonlocal read
        for pair in iter_raw(store, table(run_of(store, "api"))):
            read += 1
            yield pair

    r = frames.flow_reader(counted(), "uni", size=100)
    first = r.read_next_batch()
    assert first.num_rows == 100 and read < 200
    assert sum(b.num_rows for b in r) + 100 == len(flows)


@pytest.mark.e2e
def test_figures(cap: flowherd.Capture) -> None:
    fig = cap.hist(top=50)
    assert len(fig.axes) >= 2 and "api" in fig._suptitle.get_text()
    assert cap.ccdf().axes[0].get_yscale() == "log"
