"""URLs as sources, against a real HTTP server on the loopback (tests/support/webfiles.py):
streamed without a local copy, compressed or not, a connection cut mid-transfer resumed with
a Range request, or, where the server cannot resume, a one-line error and a capture that
``producer submit --resume`` completes."""

from __future__ import annotations

import gzip
import json
import lzma
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowherd.models.errors import CaptureError
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.readers.http import fingerprint, is_url
from flowherd.producer.traces.sample import write_sample
from tests.support.helpers import invoke
from tests.support.webfiles import FileServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileServer, Path]]:
    d = tmp_path_factory.mktemp("www")
    write_sample(d / "t.pcap", flows=200, seed=3)
    write_sample(d / "big.pcap", flows=900, seed=4)  # over a read-ahead chunk (1 MiB)
    data = (d / "t.pcap").read_bytes()
    (d / "t.pcap.gz").write_bytes(gzip.compress(data))
    (d / "t.pcap.xz").write_bytes(lzma.compress(data))
    with FileServer(d) as srv:
        yield srv, d


def _records(src: str) -> list[tuple[int, int, bytes]]:
    with open_capture(src) as cap:
        return [(r.ts_ns, r.wire_len, r.data) for r in cap]


def test_is_url() -> None:
    assert is_url("http://h/x.pcap") and is_url("HTTPS://h/x.pcap")
    assert not is_url("ftp://h/x.pcap") and not is_url("/tmp/http:/x")


def test_a_url_reads_like_the_file(served: tuple[FileServer, Path]) -> None:
    srv, d = served
    want = _records(str(d / "t.pcap"))
    for name in ("t.pcap", "t.pcap.gz", "t.pcap.xz"):
        assert _records(srv.url(name)) == want, name
    with open_capture(srv.url("t.pcap.gz")) as cap:
        assert cap.compression == "gzip" and cap.size == (d / "t.pcap.gz").stat().st_size
    assert fingerprint(srv.url("t.pcap")).split(":")[0] == str((d / "t.pcap").stat().st_size)


def test_a_connection_cut_mid_transfer_resumes_with_a_range_request(
    served: tuple[FileServer, Path],
) -> None:
    srv, d = served
    want = _records(str(d / "t.pcap"))
    before = len(srv.requests)
    assert _records(srv.url("t.pcap", cut=40_000, cuts=3)) == want
    ranges = [r for _, r in srv.requests[before:] if r]
    assert ranges == ["bytes=40000-", "bytes=80000-", "bytes=120000-"]


def test_a_cut_compressed_chunked_transfer_resumes(served: tuple[FileServer, Path]) -> None:
    srv, d = served
    want = _records(str(d / "t.pcap"))
    assert _records(srv.url("t.pcap.gz", cut=10_000, cuts=2, chunked=True)) == want


def test_a_cut_without_range_support_is_a_one_line_error(
    served: tuple[FileServer, Path],
) -> None:
    srv, _ = served
    url = srv.url("t.pcap", cut=40_000, ranges=False)
    with pytest.raises(CaptureError) as err:
        _records(url)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{url}: connection cut at byte 40000 of ")
    assert "does not resume at a byte offset" in msg
    with pytest.raises(CaptureError, match=r"HTTP 404 Not Found$"):
        _records(srv.url("missing.pcap"))


@pytest.mark.redis
def test_submit_a_url_cut_without_range_then_resume_it(
    served: tuple[FileServer, Path], redis_url: str, conn: object
) -> None:
    srv, d = served
    # submit GETs the URL three times: to check it, to fingerprint it, to read it
    cut = srv.url("big.pcap", cut=1_200_000, cuts=1, after=2, ranges=False)
    args = [
        "--no-wait",
        "--redis-url",
        redis_url,
        "--batch-packets",
        "1000",
        "--max-in-flight",
        "1000",
    ]
    r = invoke(["submit", cut, "--name", "web", *args])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith(f"error: {cut}: connection cut at byte 1200000")
    st = json.loads(invoke(["status", "web", "--json", "--redis-url", redis_url]).output)
    assert st["state"] == "aborted" and st["batches_enqueued"] > 0
    # the server serves it whole now: --resume sends only what Redis lacks
    r = invoke(["submit", "--resume", "web", srv.url("big.pcap"), *args])
    assert r.exit_code == 0, r.output
    whole = invoke(["submit", str(d / "big.pcap"), "--name", "file", *args])
    total = whole.output.split(" in ")[1].split(" batches")[0]
    assert f"; {total} batches" in r.output and "re-sent none" in r.output
    # a file that is not the capture's is refused by fingerprint
    r = invoke(["submit", "--resume", "web", srv.url("t.pcap.gz"), *args])
    assert r.exit_code == 1 and "is not the file the capture was submitted from" in r.output
