"""Directories and glob patterns as sources: every capture, by first timestamp; what is not a
capture skipped with a warning; ``--recursive``; the CLI's submit of a directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowherd.models.errors import CaptureError
from flowherd.producer.readers.sources import expand, first_timestamp
from tests.support.helpers import invoke, pcap_bytes

FRAME = bytes(14 + 20)  # what is in a frame does not matter to the producer


def _pcap(path: Path, *secs: int) -> Path:
    path.write_bytes(pcap_bytes([(s, 0, len(FRAME), FRAME) for s in secs]))
    return path


def test_a_directory_gives_its_captures_by_first_timestamp_and_lists_the_rest(
    tmp_path: Path,
) -> None:
    d = tmp_path / "rotated"
    d.mkdir()
    _pcap(d / "a.pcap", 300, 301)
    _pcap(d / "b.pcap", 100)
    _pcap(d / "c.pcap", 200, 250)
    (d / "notes.txt").write_text("not a capture\n")
    (d / "empty.pcap").write_bytes(b"")
    (d / "sub").mkdir()
    _pcap(d / "sub" / "d.pcap", 50)
    found = expand([str(d)])
    assert found.sources == [str(d / n) for n in ("b.pcap", "c.pcap", "a.pcap")]
    skipped = dict(found.skipped)
    assert set(skipped) == {str(d / "notes.txt"), str(d / "empty.pcap")}
    assert "not a pcap or pcapng file" in skipped[str(d / "notes.txt")]
    assert skipped[str(d / "empty.pcap")] == "empty file"
    assert found.warnings()[0].startswith("skipped ")
    # --recursive descends: the earliest file is in the subdirectory
    deep = expand([str(d)], recursive=True)
    assert deep.sources[0] == str(d / "sub" / "d.pcap") and len(deep.sources) == 4


def test_patterns_files_and_urls_keep_their_places(tmp_path: Path) -> None:
    for i, s in enumerate((30, 10, 20)):
        _pcap(tmp_path / f"x{i}.pcap", s)
    _pcap(tmp_path / "first.pcap", 99)
    url = "http://127.0.0.1:9/trace.pcap.gz"
    found = expand([str(tmp_path / "first.pcap"), str(tmp_path / "x*.pcap"), url])
    assert found.sources == [
        str(tmp_path / "first.pcap"),
        str(tmp_path / "x1.pcap"),
        str(tmp_path / "x2.pcap"),
        str(tmp_path / "x0.pcap"),
        url,
    ]
    assert found.checked == set(found.sources[1:4])


def test_first_timestamp_of_pcap_gzip_and_header_only(tmp_path: Path) -> None:
    import gzip

    p = _pcap(tmp_path / "a.pcap", 1_700_000_000)
    assert first_timestamp(str(p)) == 1_700_000_000 * 10**9
    gz = tmp_path / "a.pcap.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert first_timestamp(str(gz)) == 1_700_000_000 * 10**9
    assert first_timestamp(str(_pcap(tmp_path / "none.pcap"))) is None


def test_a_directory_or_pattern_without_captures_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(CaptureError, match="holds no capture file"):
        expand([str(tmp_path)])
    with pytest.raises(CaptureError, match="matches no capture file"):
        expand([str(tmp_path / "*.pcap")])


@pytest.mark.redis
def test_submit_a_directory_warns_of_what_it_skips(
    tmp_path: Path, redis_url: str, conn: object
) -> None:
    d = tmp_path / "day1"
    d.mkdir()
    _pcap(d / "late.pcap", 20, 21, 22)
    _pcap(d / "early.pcap", 10)
    (d / "README").write_text("captures of day 1\n")
    r = invoke(["submit", str(d), "--no-wait", "--redis-url", redis_url])
    assert r.exit_code == 0, r.output
    assert f"warning: skipped {d / 'README'}: not a pcap or pcapng file" in r.output
    assert "submitted 4 packets in 1 batches as 'day1'" in r.output
    s = invoke(["status", "day1", "--json", "--redis-url", redis_url])
    assert '"sources": [' in s.output
    assert s.output.index("early.pcap") < s.output.index("late.pcap")
