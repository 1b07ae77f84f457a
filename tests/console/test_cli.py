"""The three CLIs through click's CliRunner: exit codes, one-line errors, embedded mode."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowherd.deploy.local import is_running, stop_local_redis
from flowherd.models.settings import Settings
from flowherd.producer.cli.main import main as producer_main
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.workers.cli import main as workers_main

pytestmark = [pytest.mark.redis]


def _run(cli, args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.parametrize("cli", [producer_main, workers_main, reporter_main])
def test_help_and_version(cli) -> None:  # type: ignore[no-untyped-def]
    res = _run(cli, ["--help"])
    assert res.exit_code == 0 and "Usage:" in res.output
    assert _run(cli, ["--version"]).exit_code == 0


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _one_line_error(res) -> str:  # type: ignore[no-untyped-def]
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: d / "missing.pcap", "no such file"),
        (lambda d: d, "directory"),
        (lambda d: _write(d / "empty.pcap", b""), "empty"),
        (lambda d: _write(d / "t.pcap", b"hello world\n" * 10), "not a pcap"),
        (lambda d: _write(d / "z.pcap.gz", b"\x1f\x8b" + b"\0" * 40), "gzip"),
    ],
)
def test_bad_input_is_one_line_error(redis_url: str, tmp_path: Path, make, expect: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    res = _run(producer_main, ["submit", str(path), "--redis-url", redis_url])
    assert res.exit_code == 1
    line = _one_line_error(res)
    assert expect in line.lower() and str(path.name) in line


def test_existing_name_refused_then_replaced(redis_url: str, conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "a.pcap"
    write_sample(p, flows=5)
    args = ["submit", str(p), "--redis-url", redis_url, "--queue", "qx", "--no-wait"]
    assert _run(producer_main, args).exit_code == 0
    res = _run(producer_main, args)
    assert res.exit_code == 1 and "--replace" in _one_line_error(res)
    assert _run(producer_main, [*args, "--replace"]).exit_code == 0


def test_unknown_capture(redis_url: str, conn) -> None:  # type: ignore[no-untyped-def]
    res = _run(reporter_main, ["top", "nope", "--redis-url", redis_url])
    assert res.exit_code == 1 and "no capture named 'nope'" in _one_line_error(res)


def test_unreachable_redis_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWHERD_CONNECT_TIMEOUT", "0.5")
    res = _run(reporter_main, ["captures", "--redis-url", "redis://:s3cret@127.0.0.1:1/0"])
    assert res.exit_code == 1
    line = _one_line_error(res)
    assert "s3cret" not in line and "127.0.0.1:1" in line


@pytest.mark.slow
@pytest.mark.e2e  # a private redis-server and local worker processes
def test_embedded_mode_end_to_end(tmp_path: Path) -> None:
    """No Redis URL: a private redis-server and local workers are started; reporter finds it."""
    home = Settings().home
    trace = tmp_path / "demo.pcap.gz"
    raw = tmp_path / "demo.pcap"
    truth = write_sample(raw, flows=60, seed=3)
    trace.write_bytes(gzip.compress(raw.read_bytes()))
    try:
        res = _run(producer_main, ["submit", str(trace), "--workers", "2", "--top", "5"])
        assert res.exit_code == 0, res.output
        assert "Top 5 flows by bytes" in res.output
        assert is_running(home)
        res = _run(reporter_main, ["summary", "demo", "--json"])
        assert res.exit_code == 0, res.output
        summary = json.loads(res.output)["summary"]
        assert summary["packets"] == sum(v[0] for v in truth.values())
        assert summary["flows_uni"] == len(truth)
        res = _run(reporter_main, ["top", "demo", "-n", "3", "--format", "json"])
        rows = json.loads(res.output)
        assert [r["bytes"] for r in rows] == sorted((v[1] for v in truth.values()), reverse=True)[
            :3
        ]
        out = tmp_path / "h.png"
        assert _run(reporter_main, ["hist", "demo", "--top", "20", "-o", str(out)]).exit_code == 0
        assert out.read_bytes()[:4] == b"\x89PNG"
        res = _run(reporter_main, ["captures"])
        assert "demo" in res.output and "complete" in res.output
    finally:
        stop_local_redis(home)
