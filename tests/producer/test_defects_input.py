"""Input that must never leave the producer (issue 12): timestamps outside the store's range and
records over the size limit, through ``producer submit`` and the batch codec."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.models.batch import (
    HEADER_SIZE,
    TS_LIMIT,
    BatchBuilder,
    RawRecord,
    decode_batch,
    encode_batch,
)
from flowherd.models.errors import BatchError
from flowherd.models.flows import NO_FIRST
from flowherd.producer.cli.main import main as producer_main
from tests.support.helpers import epb, idb, shb

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
G = 10**9


def _payloads(conn: Redis) -> Iterator[bytes]:
    """Every batch payload in Redis, whatever its key is called."""
    for key in conn.scan_iter(count=1000):
        if conn.type(key) == b"string":
            value = conn.get(key)
            if isinstance(value, bytes) and value.startswith(b"FHB1"):
                yield value


def _submit_subprocess(redis_url: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``producer submit --strict`` as a real process, so that what it prints is what a user
    sees (without --strict the records before the bad one are kept: tests/producer/
    test_corrupt_blocks.py)."""
    queue = f"t{uuid.uuid4().hex[:8]}"
    args = ["submit", "--strict", str(path), "--redis-url", redis_url, "--queue", queue]
    return subprocess.run(
        [sys.executable, "-m", "flowherd.producer", *args, "--batch-packets", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.parametrize(
    ("iface", "units", "problem"),
    [
        (
            idb(tsresol=9, tsoffset=-3600),
            3599 * G,
            "has timestamp -1000000000 ns, before 1970-01-01 (a negative if_tsoffset?)",
        ),
        (
            idb(tsresol=9),
            NO_FIRST,
            f"has timestamp {NO_FIRST} ns, which is 10**19 - 1 ns or later (after the year 2286)",
        ),
    ],
    ids=["negative-tsoffset", "beyond-19-digits"],
)
def test_submit_refuses_a_timestamp_out_of_range(
    conn: Redis, redis_url: str, tmp_path: Path, iface: bytes, units: int, problem: str
) -> None:
    """The bad record is named in one line (file, record number, timestamp), exit 1, no
    traceback; the record before it may be queued, the bad one never is."""
    head = shb() + iface + epb("<", 0, 3600 * G, b"fine")
    path = tmp_path / "clock.pcapng"
    path.write_bytes(head + epb("<", 0, units, b"bad") + epb("<", 0, 3600 * G, b"after"))
    res = _submit_subprocess(redis_url, path)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error")]
    assert lines == [
        f"error: {path}: record 2 (enhanced packet block at byte offset {len(head)}) {problem}: "
        "flowherd cannot store it"
    ], res.stderr
    stamps = [r.ts_ns for p in _payloads(conn) for r in decode_batch(p)]
    assert all(0 <= ts < TS_LIMIT for ts in stamps) and units - 3600 * G not in stamps


def test_submit_refuses_an_oversized_pcapng_packet(redis_url: str, tmp_path: Path) -> None:
    head = shb() + idb() + epb("<", 0, 1, b"ok")
    path = tmp_path / "big.pcapng"
    path.write_bytes(head + epb("<", 0, 2, bytes(300_000)))
    args = ["submit", "--strict", str(path), "--redis-url", redis_url]
    args += ["--queue", f"t{uuid.uuid4().hex[:8]}"]
    res = CliRunner().invoke(producer_main, args, catch_exceptions=False)
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [
        f"error: {path}: record 2 (enhanced packet block at byte offset {len(head)}) claims "
        "300000 captured bytes (more than the limit of 262144): file is corrupt"
    ]


@pytest.mark.parametrize("ts", [-1, TS_LIMIT, 2**64 - 1, 2**64])
def test_batch_builder_refuses_a_timestamp_out_of_range(ts: int) -> None:
    b = BatchBuilder()
    b.add(RawRecord(0, 1, 1, b"a"))
    with pytest.raises(BatchError, match=f"record timestamp {ts} ns is outside 0 <= ts_ns < "):
        b.add(RawRecord(ts, 1, 1, b"b"))
    assert b.count == 1 and [r.ts_ns for r in decode_batch(b.payload())] == [0]


def test_batch_decoder_refuses_a_timestamp_beyond_the_store_range() -> None:
    last = TS_LIMIT - 1
    ok = encode_batch([RawRecord(0, 1, 1, b"a"), RawRecord(last, 1, 1, b"b")])
    assert [r.ts_ns for r in decode_batch(ok)] == [0, last]
    bad = bytearray(ok)
    where = HEADER_SIZE + 8  # the timestamp column's second u64
    assert int.from_bytes(bad[where : where + 8], "little") == last
    bad[where : where + 8] = TS_LIMIT.to_bytes(8, "little")
    with pytest.raises(BatchError, match="timestamp 9999999999999999999 ns is beyond"):
        list(decode_batch(bytes(bad)))
