"""A corrupt block in the middle of a capture file (issue 19): like tshark, the records before
it are read and counted and the run gets a warning (exit status 1), as for a truncated file;
``--strict`` aborts at the first corrupt block instead."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.models.capture import CaptureState
from flowherd.producer.cli.main import main as producer_main
from flowherd.store.backend import Store
from flowherd.store.captures import status
from tests.support.helpers import epb, idb, shb

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]
G = 10**9


def _corrupt(tmp_path: Path) -> tuple[Path, int]:
    """Three good records, a block with an impossible length, then one more record."""
    good = b"".join(epb("<", 0, (i + 1) * G, bytes(60)) for i in range(3))
    head = shb() + idb(tsresol=9) + good
    bad = struct.pack("<II", 6, 7) + bytes(8)  # an EPB whose length (7) is impossible
    path = tmp_path / "mid.pcapng"
    path.write_bytes(head + bad + epb("<", 0, 9 * G, bytes(60)))
    return path, len(head)


def _submit(redis_url: str, *args: str):  # type: ignore[no-untyped-def]
    queue = f"t{uuid.uuid4().hex[:8]}"
    return CliRunner().invoke(
        producer_main, ["submit", *args, "--redis-url", redis_url, "--queue", queue, "--no-wait"]
    )


def test_records_before_a_corrupt_block_are_counted(
    redis_url: str, conn: Redis, tmp_path: Path
) -> None:
    path, offset = _corrupt(tmp_path)
    res = _submit(redis_url, str(path), "--name", "mid")
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert "submitted 3 packets" in res.output
    warned = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert len(warned) == 1 and f"byte offset {offset}" in warned[0] and "corrupt" in warned[0]
    st = status(Store.single(conn), "mid")
    assert st.state is not CaptureState.ABORTED and len(st.warnings) == 1


def test_strict_aborts_at_the_corrupt_block(redis_url: str, conn: Redis, tmp_path: Path) -> None:
    path, _ = _corrupt(tmp_path)
    res = _submit(redis_url, "--strict", str(path), "--name", "mids")
    assert res.exit_code == 1, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and "corrupt" in lines[0]
    assert status(Store.single(conn), "mids").state is CaptureState.ABORTED
