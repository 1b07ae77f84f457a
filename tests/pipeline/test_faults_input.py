"""Bad input through `producer submit`: one line naming the file and the problem, exit 1, and
nothing half-merged reported as complete. (Missing path, directory, empty file, text file and
corrupt gzip are in test_cli.py.)"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowherd.models.capture import CaptureState
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from flowherd.store.captures import load_report, names, run_of, status
from tests.support.helpers import block as pcapng_block
from tests.support.helpers import epb, idb, invoke, pcap_bytes, shb, wait_until
from tests.support.pipeline import follow_for, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(150)]

NOBODY = 65534


def _one_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


def _records(path: Path) -> list[tuple[int, int, bytes]]:
    """(ts_ns, wire_len, data) of every record of a pcap."""
    with open_capture(path) as cap:
        return [(r.ts_ns, r.wire_len, r.data) for r in cap]


def _pcap(records: list[tuple[int, int, bytes]], network: int = 1) -> bytes:
    return pcap_bytes(
        [(ts // 10**9, ts % 10**9 // 1000, wire, data) for ts, wire, data in records],
        network=network,
    )


Sample = tuple[Path, dict[Any, Any]]


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    path = tmp_path / "s.pcap"
    return path, write_sample(path, flows=40, seed=41)


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    yield settings_for(redis_url).queue


def _submit(redis_url: str, queue: str, path: Path, *more: str):  # type: ignore[no-untyped-def]
    args = ["submit", str(path), "--redis-url", redis_url, "--queue", queue]
    return invoke([*args, "--batch-packets", "100", *more])


def test_file_without_read_permission(store: Store, redis_url: str, sample: Sample) -> None:
    """Root reads anything, so as root the submit runs with the effective uid of `nobody`
    (the interpreter lives where `nobody` may not go, so not in a subprocess)."""
    # not tmp_path: pytest's base folder is closed to `nobody`, who must reach the file and
    # be refused by the file's own mode (mkdtemp: a fresh name, removed below)
    d = Path(tempfile.mkdtemp(prefix="fh-perm-"))
    try:
        d.chmod(0o755)
        path = d / "secret.pcap"
        shutil.copy(sample[0], path)
        path.chmod(0o200)  # write-only
        args = ["submit", str(path), "--redis-url", redis_url]
        if os.geteuid() == 0:
            os.setegid(NOBODY)
            os.seteuid(NOBODY)
            try:
                res = invoke(args)
            finally:
                os.seteuid(0)
                os.setegid(0)
        else:
            res = invoke(args)
    finally:
        shutil.rmtree(d)
    assert res.exit_code == 1, res.output
    assert _one_line(res.output) == f"error: {path}: permission denied"
    assert names(store) == []  # refused before a capture was created


def test_absurd_first_record_length(
    store: Store, redis_url: str, queue: str, tmp_path: Path
) -> None:
    path = tmp_path / "huge.pcap"
    path.write_bytes(_pcap([]) + struct.pack("<IIII", 1, 0, 2**31, 2**31) + b"\0" * 64)
    res = _submit(redis_url, queue, path, "--strict")  # by default: a warning, and go on
    assert res.exit_code == 1
    assert _one_line(res.output) == (
        f"error: {path}: record 1 at byte offset 24 claims 2147483648 captured bytes "
        "(more than the limit of 262144): the file is corrupt"
    )
    st = status(store, "huge")
    assert st.state is CaptureState.ABORTED and st.packets == 0


def test_absurd_record_mid_file_leaves_an_aborted_capture(
    store: Store, redis_url: str, queue: str, tmp_path: Path, sample: Sample
) -> None:
    """The records before the corrupt one are merged, but the capture says it was aborted,
    and never complete, once the workers are done with them."""
    recs = _records(sample[0])[:450]
    path = tmp_path / "mid.pcap"
    path.write_bytes(_pcap(recs) + struct.pack("<IIII", 1, 0, 2**31, 2**31) + b"\0" * 64)
    res = _submit(redis_url, queue, path, "--strict")  # by default: a warning, and go on
    assert res.exit_code == 1 and "claims 2147483648 captured bytes" in _one_line(res.output)
    keys = run_of(store, "mid")
    with LocalWorkers(redis_url, queue, 1) as w:
        assert follow_for(store, "mid", 60, w).state is CaptureState.ABORTED

        def merged() -> bool:  # 400 of the 450 records were queued, in 4 full batches
            w.check()
            return status(store, "mid", detail=False).batches_done >= 4

        wait_until(merged, 60, "the 4 queued batches to be merged")
    st = status(store, "mid")
    assert st.state is CaptureState.ABORTED and st.batches_done >= 4
    assert st.total_batches is None and load_report(store, keys) is None
    assert any("submit aborted" in x and "claims 2147483648" in x for x in st.warnings)


def test_file_cut_inside_a_record(
    store: Store, redis_url: str, queue: str, tmp_path: Path, sample: Sample
) -> None:
    """The complete records are counted, then the cut is named with its offset; exit 1; the
    capture completes and its status and report carry the warning."""
    recs = _records(sample[0])
    keep = 333
    whole = _pcap(recs[:keep])
    cut = _pcap(recs[: keep + 1])[: len(whole) + 16 + 5]  # mid-way into record keep+1's data
    path = tmp_path / "cut.pcap"
    path.write_bytes(cut)
    expect = (
        f"{path}: file is truncated at byte offset {len(whole)} (after {keep} complete records)"
    )
    with LocalWorkers(redis_url, queue, 2):
        res = _submit(redis_url, queue, path, "--wait")
    assert res.exit_code == 1, res.output
    assert f"warning: {expect}" in res.stderr.splitlines()  # one line, however long
    st = status(store, "cut")
    assert st.state is CaptureState.COMPLETE and st.packets == keep
    assert st.warnings == [expect]
    report = load_report(store, run_of(store, "cut"))
    assert report is not None and report.warnings == [expect]


def test_pcapng_unknown_block_types_are_skipped(
    store: Store, redis_url: str, queue: str, tmp_path: Path, sample: Sample
) -> None:
    recs = _records(sample[0])
    data = shb() + pcapng_block("<", 0x0BAD, b"future block") + idb(linktype=1)
    for i, (ts, wire, frame) in enumerate(recs):
        data += epb("<", 0, ts // 1000, frame, wire)
        if i % 100 == 7:
            data += pcapng_block("<", 0x80000123 + i, b"x" * (i % 13))  # custom/unknown
    path = tmp_path / "odd.pcapng"
    path.write_bytes(data)
    with LocalWorkers(redis_url, queue, 2):
        res = _submit(redis_url, queue, path, "--wait")
    assert res.exit_code == 0, res.output
    st = status(store, "odd")
    assert st.state is CaptureState.COMPLETE and not st.warnings
    truth = sample[1]
    assert st.packets == len(recs) == sum(v[0] for v in truth.values())
    assert st.counted_packets == st.packets and st.flows == len(
        {(*sorted([(s, sp), (d, dp)]), p) for s, d, p, sp, dp in truth}
    )


def test_unknown_link_type_is_counted_not_dissected(
    store: Store, redis_url: str, queue: str, tmp_path: Path, sample: Sample
) -> None:
    recs = _records(sample[0])
    path = tmp_path / "user0.pcap"
    path.write_bytes(_pcap(recs, network=147))  # LINKTYPE_USER0: nobody knows what it is
    with LocalWorkers(redis_url, queue, 2):
        res = _submit(redis_url, queue, path, "--wait")
    assert res.exit_code == 0, res.output
    st = status(store, "user0")
    assert st.state is CaptureState.COMPLETE
    assert st.packets == len(recs) and st.counted_packets == 0 and st.flows == 0
    bucket = st.not_counted["unsupported_linktype"]
    assert bucket.packets == len(recs) and bucket.bytes == sum(w for _, w, _ in recs)
