"""flowherd.producer.readers.capture: pcap and pcapng readers, compression, errors, tshark on the real captures."""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowherd.producer.readers.capture as capture_module
from flowherd.models.batch import Columns, RawRecord
from flowherd.models.errors import CaptureError, TruncatedCaptureError
from flowherd.models.flows import NO_FIRST
from flowherd.producer.readers import pcapng
from flowherd.producer.readers.capture import open_capture
from tests.support.helpers import block, epb, idb, old_pb, pcap_bytes, shb, spb

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PCAPS = SHARED / "pcaps"
ORACLE = SHARED / "oracle"
G = 10**9


# ---------------------------------------------- helpers (hand-packed files: tests/support/helpers.py)


def write(tmp_path: Path, data: bytes, name: str = "t.cap") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _one_by_one(path: Path) -> tuple[list[RawRecord], CaptureError | None]:
    """The reference reading of ``path``: pcapng by the general parser alone (the array path
    for Enhanced Packet Blocks switched off), classic pcap by a plain struct loop."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pcapng, "_epbs", lambda *_: Columns.empty())
        got: list[RawRecord] = []
        try:
            with open_capture(path) as cap:
                if cap.format == "pcapng" or cap.compression:
                    got.extend(r for b in cap.blocks() for r in b.records())
                    return got, None
        except CaptureError as exc:
            return got, exc
    data = path.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    frac_ns = 1 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1000
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, cap_len, wire = struct.unpack_from(endian + "IIII", data, pos)
        if cap_len > 262144 or pos + 16 + cap_len > len(data):
            break
        got.append(
            RawRecord(sec * G + frac * frac_ns, wire, linktype, data[pos + 16 : pos + 16 + cap_len])
        )
        pos += 16 + cap_len
    return got, None


def read_all(path: Path) -> list[RawRecord]:
    """The records of ``path``, read one at a time and in blocks of columns (the same), and
    equal to the reference reading (:func:`_one_by_one`)."""
    with open_capture(path) as cap:
        records = list(cap)
    with open_capture(path) as cap:
        assert [r for b in cap.blocks() for r in b.records()] == records
    assert _one_by_one(path) == (records, None)
    return records


def read_until_error(path: Path) -> tuple[list[RawRecord], CaptureError]:
    """The records before the error, and the error; blocks give the same records and error,
    and the reference reading the same records (and, for pcapng, the same error)."""
    got: list[RawRecord] = []
    with pytest.raises(CaptureError) as info, open_capture(path) as cap:
        got.extend(cap)
    in_blocks: list[RawRecord] = []
    with pytest.raises(CaptureError) as info_blocks, open_capture(path) as cap:
        for b in cap.blocks():
            in_blocks.extend(b.records())
    assert in_blocks == got
    assert type(info_blocks.value) is type(info.value)
    assert str(info_blocks.value) == str(info.value)
    ref, ref_error = _one_by_one(path)
    assert ref == got
    if ref_error is not None:
        assert (type(ref_error), str(ref_error)) == (type(info.value), str(info.value))
    return got, info.value


def ts_text(ts: int) -> str:
    return f"{ts // G}.{ts % G:09d}"


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}


# ------------------------------------------------------------------ classic pcap


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    recs = [(1700000000, 123456, 60, b"a" * 60), (1700000001, 999999, 1514, b"b" * 100)]
    path = write(tmp_path, pcap_bytes(recs, endian, nano, network=113))
    with open_capture(path) as cap:
        assert cap.format == ("pcap-ns" if nano else "pcap")
        assert cap.compression is None
        assert cap.size == path.stat().st_size
        got = list(cap)
    unit = 1 if nano else 1000
    assert got == [
        RawRecord(1700000000 * G + 123456 * unit, 60, 113, b"a" * 60),
        RawRecord(1700000001 * G + 999999 * unit, 1514, 113, b"b" * 100),
    ]


def test_pcap_out_of_range_fraction_is_kept_and_fcs_bits_masked(tmp_path: Path) -> None:
    # network: FCS bits (28..31) set above LINKTYPE_ETHERNET; fraction >= 1e6 us, kept as is.
    path = write(tmp_path, pcap_bytes([(10, 1_500_000, 4, b"abcd")], network=0xF0000001))
    assert read_all(path) == [RawRecord(10 * G + 1_500_000_000, 4, 1, b"abcd")]


def test_pcap_header_only_is_zero_records(tmp_path: Path) -> None:
    assert read_all(write(tmp_path, pcap_bytes([]))) == []


def test_scapy_wrpcap_round_trip(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    pkts = [Ether() / IP(dst=f"10.0.0.{i}") / UDP(dport=i) / (b"x" * i) for i in range(1, 40)]
    for i, p in enumerate(pkts):
        p.time = 1700000000 + i + 0.25
    wrpcap(str(tmp_path / "us.pcap"), pkts)
    wrpcap(str(tmp_path / "ns.pcap"), pkts, nano=True)
    for name, fmt in (("us.pcap", "pcap"), ("ns.pcap", "pcap-ns")):
        with open_capture(tmp_path / name) as cap:
            assert cap.format == fmt
            got = list(cap)
        assert [r.data for r in got] == [bytes(p) for p in pkts]
        assert [r.ts_ns for r in got] == [(1700000000 + i) * G + G // 4 for i in range(39)]
        assert {r.linktype for r in got} == {1}
        assert [r.wire_len for r in got] == [len(p) for p in pkts]


def test_position_advances_to_size(tmp_path: Path) -> None:
    recs = [(i, 0, 1000, bytes(1000)) for i in range(3000)]  # ~3 MB: several read chunks
    path = write(tmp_path, pcap_bytes(recs))
    with open_capture(path) as cap:
        first = cap.position
        seen = [cap.position for _ in cap]
        assert cap.position == cap.size == path.stat().st_size
    assert 0 < first < cap.size
    assert seen == sorted(seen)
    assert cap.position == cap.size  # still answers after close


# ------------------------------------------------------------------ pcapng


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_interfaces_with_own_linktype_and_resolution(tmp_path: Path, endian: str) -> None:
    units_ns = 1700000000 * G + 123456789
    units_b2 = (1700000000 << 20) + 3  # 3 / 2**20 s = 2861.02... ns
    data = (
        shb(endian)
        + idb(endian, linktype=1, tsresol=9)
        + idb(endian, linktype=0, tsresol=0x80 | 20, tsoffset=100)
        + idb(endian, linktype=101)  # default resolution: microseconds
        + epb(endian, 0, units_ns, b"eth-frame", wire=1500)
        + epb(endian, 1, units_b2, b"null-frame")
        + epb(endian, 2, 1700000000_000001, b"raw")
    )
    with open_capture(write(tmp_path, data)) as cap:
        assert cap.format == "pcapng"
        got = list(cap)
    assert got == [
        RawRecord(units_ns, 1500, 1, b"eth-frame"),
        RawRecord((1700000000 + 100) * G + 2861, 10, 0, b"null-frame"),
        RawRecord(1700000000 * G + 1000, 3, 101, b"raw"),
    ]


def test_pcapng_sections_reset_interfaces_and_byte_order(tmp_path: Path) -> None:
    first = shb("<") + idb("<", linktype=1) + idb("<", linktype=0) + epb("<", 1, 5, b"one")
    second = shb(">") + idb(">", linktype=101, tsresol=9) + epb(">", 0, 7, b"two")
    got = read_all(write(tmp_path, first + second))
    assert got == [RawRecord(5000, 3, 0, b"one"), RawRecord(7, 3, 101, b"two")]
    # Interface 1 of the first section does not exist in the second one.
    bad = first + shb(">") + idb(">") + epb(">", 1, 7, b"two")
    got, err = read_until_error(write(tmp_path, bad, "bad.pcapng"))
    assert got == [RawRecord(5000, 3, 0, b"one")]
    assert type(err) is CaptureError
    assert "refers to interface 1" in str(err) and "bad.pcapng" in str(err)


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path: Path) -> None:
    data = (
        shb()
        + idb(linktype=1, snaplen=8)
        + spb("<", 100, b"0123456789ab")  # cut to the snaplen of interface 0 (tshark: corrupt)
        + spb("<", 3, b"xyz")  # wire length shorter than the padded block: 3 bytes
        + old_pb("<", 0, 42, b"old-block")
    )
    assert read_all(write(tmp_path, data)) == [
        RawRecord(0, 100, 1, b"01234567"),
        RawRecord(0, 3, 1, b"xyz"),
        RawRecord(42_000, 99, 1, b"old-block"),
    ]
    # Without a snaplen (0), the captured part is what the block holds.
    data = shb() + idb(linktype=1) + spb("<", 1514, b"0123456789ab")
    assert read_all(write(tmp_path, data)) == [RawRecord(0, 1514, 1, b"0123456789ab")]


def test_pcapng_unknown_blocks_are_skipped(tmp_path: Path) -> None:
    data = (
        shb()
        + block("<", 0x0BADCAFE, b"whatever this is")
        + idb()
        + block("<", 4, b"\0" * 4)  # name resolution
        + epb("<", 0, 1, b"p")
        + block("<", 5, b"\0" * 12)  # interface statistics
        + block("<", 0x40000BAD, b"custom!!")
    )
    assert read_all(write(tmp_path, data)) == [RawRecord(1000, 1, 1, b"p")]


@pytest.mark.parametrize("tail", [b"", idb()])
def test_pcapng_without_packets_is_zero_records(tmp_path: Path, tail: bytes) -> None:
    assert read_all(write(tmp_path, shb() + tail)) == []


def test_scapy_pcapng_round_trip(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether, Loopback
    from scapy.utils import wrpcapng

    eth = [Ether() / IP(dst="10.1.1.1") / UDP() / (b"e" * i) for i in range(5)]
    lo = [Loopback() / IP(dst="127.0.0.1") / UDP() / (b"l" * i) for i in range(5)]
    pkts = []
    for i, (e, lp) in enumerate(zip(eth, lo, strict=True)):
        e.time = 1700000000 + i + 0.5
        lp.time = 1700000000 + i + 0.75
        lp.sniffed_on = "lo0"  # scapy writes a second IDB (linktype NULL) for it
        pkts += [e, lp]
    wrpcapng(str(tmp_path / "s.pcapng"), pkts)
    got = read_all(tmp_path / "s.pcapng")
    assert [r.data for r in got] == [bytes(p) for p in pkts]
    assert [r.linktype for r in got] == [1, 0] * 5
    expected = [(1700000000 + i) * G + frac for i in range(5) for frac in (G // 2, G * 3 // 4)]
    assert [r.ts_ns for r in got] == expected


# ------------------------------------------------------------------ compression


def sample_files() -> dict[str, bytes]:
    recs = [(1700000000 + i, i * 7, 200 + i, bytes([i % 256]) * (i % 90)) for i in range(300)]
    ng = shb() + idb(tsresol=9) + idb(linktype=0)
    ng += b"".join(epb("<", i % 2, 1_700_000 * G + i, bytes([i]) * (i % 50)) for i in range(256))
    return {"pcap": pcap_bytes(recs), "pcapng": ng}


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_compressed_files_give_identical_records(tmp_path: Path, kind: str, fmt: str) -> None:
    plain = sample_files()[fmt]
    expected = read_all(write(tmp_path, plain, "plain"))
    assert len(expected) > 250
    path = write(tmp_path, COMPRESSORS[kind](plain), "trace.pcap")  # name says nothing
    with open_capture(path) as cap:
        assert (cap.format, cap.compression) == (fmt, kind)
        assert list(cap) == expected
        assert cap.position == cap.size == path.stat().st_size


@pytest.mark.parametrize("kind", ["gzip", "xz"])  # bzip2 blocks are 900 kB: nothing comes out
def test_compressed_stream_cut_short(tmp_path: Path, kind: str) -> None:
    plain = sample_files()["pcap"]
    expected = read_all(write(tmp_path, plain, "plain"))
    packed = COMPRESSORS[kind](plain)
    got, err = read_until_error(write(tmp_path, packed[: len(packed) // 2]))
    assert isinstance(err, TruncatedCaptureError)
    assert 0 < err.records == len(got) < len(expected)
    assert got == expected[: len(got)]


@pytest.mark.parametrize(("kind", "trailer"), [("gzip", 8), ("xz", 12)])
def test_compressed_stream_cut_between_records(tmp_path: Path, kind: str, trailer: int) -> None:
    # Cutting the stream's trailer keeps every byte of data but loses the end-of-stream marker.
    plain = sample_files()["pcap"]
    expected = read_all(write(tmp_path, plain, "plain"))
    got, err = read_until_error(write(tmp_path, COMPRESSORS[kind](plain)[:-trailer]))
    assert got == expected
    assert isinstance(err, TruncatedCaptureError)
    assert (err.offset, err.records) == (len(plain), len(expected))


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_corrupt_compressed_stream(tmp_path: Path, kind: str) -> None:
    packed = bytearray(COMPRESSORS[kind](sample_files()["pcap"]))
    for i in range(20, 60):
        packed[i] ^= 0x55
    _, err = read_until_error(write(tmp_path, bytes(packed), "bad.gz"))
    assert type(err) is CaptureError
    assert f"corrupt {kind} stream" in str(err) and "bad.gz" in str(err)


def test_gzip_records_before_a_bad_checksum_come_out(tmp_path: Path) -> None:
    plain = sample_files()["pcap"]
    packed = bytearray(gzip.compress(plain))
    packed[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    got, err = read_until_error(write(tmp_path, bytes(packed)))
    assert type(err) is CaptureError and "corrupt gzip stream" in err.problem
    assert got == read_all(write(tmp_path, plain, "plain"))


def test_compressed_empty_and_compressed_garbage(tmp_path: Path) -> None:
    _, err = read_until_error(write(tmp_path, gzip.compress(b""), "e.gz"))
    assert type(err) is CaptureError and "empty file" in err.problem
    _, err = read_until_error(write(tmp_path, lzma.compress(b"hello world\n" * 9)))
    assert type(err) is CaptureError
    assert "after xz decompression it begins with 68 65 6c 6c" in err.problem


# ------------------------------------------------------------------ errors at open


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pcap"
    with pytest.raises(CaptureError) as info:
        open_capture(path)
    assert type(info.value) is CaptureError
    assert str(info.value) == f"{path}: no such file"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureError) as info:
        open_capture(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ") and "is a directory" in str(info.value)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, pcap_bytes([]))
    if os.geteuid() == 0:  # root reads anything: make open() answer as it would for a user

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(capture_module, "open", refuse, raising=False)
    else:
        path.chmod(0)
    with pytest.raises(CaptureError) as info:
        open_capture(path)
    assert str(info.value) == f"{path}: permission denied"


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    with pytest.raises(CaptureError) as info:
        open_capture(path)
    assert str(info.value) == f"{path}: empty file"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"hello world, this is text\n",
            "begins with 68 65 6c 6c 6f 20 77 6f (b'hello wo'), which looks like text",
        ),
        (b"PK\x03\x04" + bytes(40), "which looks like a ZIP archive"),
        (b"\x28\xb5\x2f\xfd" + bytes(40), "zstd-compressed data, which is not supported"),
        (b"\xa1\xb2\xcd\x34" + bytes(40), "modified (Kuznetzov) pcap"),
        (bytes(range(200, 240)), "begins with c8 c9 ca cb cc cd ce cf"),
    ],
)
def test_not_a_capture(tmp_path: Path, data: bytes, expected: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(CaptureError) as info:
        open_capture(path)
    assert type(info.value) is CaptureError
    assert str(info.value).startswith(f"{path}: not a pcap or pcapng file: ")
    assert expected in str(info.value)


def test_pcap_linktype_beyond_16_bits(tmp_path: Path) -> None:
    path = write(tmp_path, pcap_bytes([], network=0x0001_0001))
    with pytest.raises(CaptureError) as info:
        open_capture(path)
    assert str(info.value) == f"{path}: pcap header names linktype 65537, which does not exist"


def test_pcapng_bad_byte_order_magic(tmp_path: Path) -> None:
    data = bytearray(shb())
    data[8:12] = b"\x01\x02\x03\x04"
    with pytest.raises(CaptureError) as info:
        open_capture(write(tmp_path, bytes(data)))
    assert "bad byte-order magic 01 02 03 04" in str(info.value)


@pytest.mark.parametrize("data", [pcap_bytes([])[:10], shb()[:9], b"\xd4\xc3"])
def test_file_ending_inside_its_first_header(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(TruncatedCaptureError) as info:
        open_capture(write(tmp_path, data))
    assert (info.value.offset, info.value.records) == (0, 0)


# ------------------------------------------------------------------ errors while reading


def test_pcap_absurd_caplen(tmp_path: Path) -> None:
    good = pcap_bytes([(1, 0, 10, b"0123456789")])
    huge = struct.pack("<IIII", 2, 0, 0xFFFFFFFF, 0xFFFFFFFF)
    got, err = read_until_error(write(tmp_path, good + huge + bytes(64)))
    assert len(got) == 1
    assert type(err) is CaptureError
    assert "record 2 at byte offset 50 claims 4294967295 captured bytes" in str(err)


@pytest.mark.parametrize("snaplen", [65535, 400_000, 0xFFFFFFFF])
def test_pcap_caplen_limit_whatever_the_snaplen(tmp_path: Path, snaplen: int) -> None:
    """libpcap's largest snaplen (262144) bounds every record, whatever the header claims."""
    ok = [(1, 0, 262_144, bytes(262_144))]
    assert read_all(write(tmp_path, pcap_bytes(ok, snaplen=snaplen))) == [
        RawRecord(G, 262_144, 1, bytes(262_144))
    ]
    big = [(1, 0, 10, b"0123456789"), (2, 0, 300_000, bytes(262_145))]
    path = write(tmp_path, pcap_bytes(big, snaplen=snaplen), "big.pcap")
    got, err = read_until_error(path)
    assert [r.data for r in got] == [b"0123456789"]
    assert str(err) == (
        f"{path}: record 2 at byte offset 50 claims 262145 captured bytes "
        "(more than the limit of 262144): the file is corrupt"
    )


@pytest.mark.parametrize("cut", [5, 16, 30])  # inside the record header / its data
def test_pcap_ending_inside_a_record(tmp_path: Path, cut: int) -> None:
    recs = [(1, 0, 20, bytes(20)), (2, 0, 20, bytes(20)), (3, 0, 20, bytes(20))]
    data = pcap_bytes(recs)
    got, err = read_until_error(write(tmp_path, data[: 24 + 2 * 36 + cut], "cut.pcap"))
    assert [r.ts_ns for r in got] == [G, 2 * G]
    assert isinstance(err, TruncatedCaptureError)
    assert (err.offset, err.records) == (24 + 2 * 36, 2)
    problem = "file is truncated at byte offset 96 (after 2 complete records)"
    assert str(err) == f"{tmp_path / 'cut.pcap'}: {problem}"


def test_pcapng_ending_inside_a_block(tmp_path: Path) -> None:
    head = shb() + idb()
    data = head + epb("<", 0, 1, b"a") + epb("<", 0, 2, b"b")
    got, err = read_until_error(write(tmp_path, data[:-3]))
    assert got == [RawRecord(1000, 1, 1, b"a")]
    assert isinstance(err, TruncatedCaptureError)
    assert (err.offset, err.records) == (len(head) + len(epb("<", 0, 1, b"a")), 1)


def test_pcapng_undefined_interface(tmp_path: Path) -> None:
    got, err = read_until_error(write(tmp_path, shb() + idb() + epb("<", 3, 1, b"x"), "u.ng"))
    assert got == []
    assert type(err) is CaptureError
    assert f"u.ng: record 1 (enhanced packet block at byte offset {len(shb() + idb())})" in str(err)
    assert "refers to interface 3, but its section defines only 1 interface(s)" in str(err)


def test_pcapng_simple_packet_without_interface(tmp_path: Path) -> None:
    _, err = read_until_error(write(tmp_path, shb() + spb("<", 1, b"x")))
    assert type(err) is CaptureError and "comes before any interface" in err.problem


@pytest.mark.parametrize(
    ("length", "problem"),
    [(30, "impossible length 30"), (8, "impossible length 8"), (1 << 30, "impossible length")],
)
def test_pcapng_bad_block_length(tmp_path: Path, length: int, problem: str) -> None:
    bad = struct.pack("<II", 6, length) + bytes(40)
    got, err = read_until_error(write(tmp_path, shb() + idb() + epb("<", 0, 1, b"a") + bad))
    assert len(got) == 1
    assert type(err) is CaptureError and problem in err.problem
    assert f"byte offset {len(shb() + idb() + epb('<', 0, 1, b'a'))}" in err.problem


def test_pcapng_trailing_length_mismatch_and_overlong_packet(tmp_path: Path) -> None:
    data = bytearray(shb() + idb() + epb("<", 0, 1, b"abcd"))
    data[-4] += 4
    _, err = read_until_error(write(tmp_path, bytes(data)))
    assert type(err) is CaptureError and "trailing length" in err.problem
    body = struct.pack("<IIIII", 0, 0, 1, 500, 500) + b"abcd"
    _, err = read_until_error(write(tmp_path, shb() + idb() + block("<", 6, body)))
    assert type(err) is CaptureError and "claims 500 captured bytes in 4" in err.problem


def test_pcapng_unsupported_version(tmp_path: Path) -> None:
    _, err = read_until_error(write(tmp_path, shb(major=2) + idb()))
    assert type(err) is CaptureError and "version 2.x" in err.problem


def test_pcapng_option_running_past_its_block(tmp_path: Path) -> None:
    body = struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 200) + bytes(4)
    _, err = read_until_error(write(tmp_path, shb() + block("<", 1, body)))
    assert type(err) is CaptureError and "option (code 9)" in err.problem


# ------------------------------------------------------------------ timestamps out of range


def test_pcapng_negative_tsoffset_is_signed(tmp_path: Path) -> None:
    """if_tsoffset is a signed 64-bit number of seconds (pcapng spec, section 4.2)."""
    data = shb() + idb(tsresol=9, tsoffset=-100) + epb("<", 0, 1700000000 * G + 5, b"x")
    assert read_all(write(tmp_path, data)) == [RawRecord((1700000000 - 100) * G + 5, 1, 1, b"x")]


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_timestamp_before_1970_is_a_capture_error(tmp_path: Path, endian: str) -> None:
    data = (
        shb(endian)
        + idb(endian, tsresol=9, tsoffset=-10)
        + epb(endian, 0, 10 * G, b"at-0")  # exactly the epoch: fine
        + epb(endian, 0, 10 * G - 1, b"before")
        + epb(endian, 0, 20 * G, b"never-read")
    )
    path = write(tmp_path, data, "neg.pcapng")
    got, err = read_until_error(path)
    assert got == [RawRecord(0, 4, 1, b"at-0")]
    assert type(err) is CaptureError
    offset = len(shb() + idb(tsresol=9, tsoffset=-10) + epb("<", 0, 0, b"at-0"))
    assert str(err) == (
        f"{path}: record 2 (enhanced packet block at byte offset {offset}) has timestamp -1 ns, "
        "before 1970-01-01 (a negative if_tsoffset?): flowherd cannot store it"
    )


@pytest.mark.parametrize(
    ("iface", "units", "ok"),
    [
        (idb(tsresol=9), NO_FIRST - 1, True),  # the largest timestamp the store holds
        (idb(tsresol=9), NO_FIRST, False),
        (idb(tsresol=9), 2**64 - 1, False),
        (idb(tsresol=0), 2**40, False),  # seconds: 1.1e21 ns
        (idb(tsresol=9, tsoffset=2**62), 0, False),
    ],
    ids=["largest", "sentinel", "u64-max", "seconds", "tsoffset"],
)
def test_pcapng_timestamp_beyond_the_store_range(
    tmp_path: Path, iface: bytes, units: int, ok: bool
) -> None:
    data = shb() + iface + epb("<", 0, units, b"x")
    path = write(tmp_path, data, "far.pcapng")
    if ok:
        assert [r.ts_ns for r in read_all(path)] == [units]
        return
    got, err = read_until_error(path)
    assert got == [] and type(err) is CaptureError
    where = f"record 1 (enhanced packet block at byte offset {len(shb() + iface)}) has timestamp"
    assert str(err).startswith(f"{path}: {where}")
    assert "is 10**19 - 1 ns or later (after the year 2286): flowherd cannot store it" in str(err)


def test_pcapng_out_of_range_obsolete_packet_block(tmp_path: Path) -> None:
    data = shb() + idb(tsoffset=-1) + old_pb("<", 0, 5, b"q")
    _, err = read_until_error(write(tmp_path, data))
    assert "record 1 (packet block at byte offset" in err.problem
    assert "has timestamp -999995000 ns" in err.problem


def test_pcap_timestamps_are_always_in_range(tmp_path: Path) -> None:
    """Classic pcap cannot go out of range: u32 seconds and fraction stay below 4.3e18 ns."""
    recs = [(0, 0, 1, b"a"), (0xFFFFFFFF, 0xFFFFFFFF, 1, b"b")]
    got = read_all(write(tmp_path, pcap_bytes(recs, nano=True)))
    assert [r.ts_ns for r in got] == [0, 0xFFFFFFFF * G + 0xFFFFFFFF]
    assert got[1].ts_ns < NO_FIRST


# ------------------------------------------------------------------ record size limits


def _peak_while_reading(path: Path) -> tuple[int, CaptureError]:
    tracemalloc.start()
    try:
        _, err = read_until_error(path)
        return tracemalloc.get_traced_memory()[1], err
    finally:
        tracemalloc.stop()


def test_pcap_claim_is_not_allocated_before_it_is_read(tmp_path: Path) -> None:
    """A header of 16 bytes claiming 200 MB (under the old 256 MiB limit) costs no 200 MB."""
    data = pcap_bytes([], snaplen=0xFFFFFFFF) + struct.pack("<IIII", 1, 0, 200 << 20, 200 << 20)
    peak, err = _peak_while_reading(write(tmp_path, data + bytes(100), "claim.pcap"))
    assert peak < 8 << 20, f"peak {peak} bytes"
    assert type(err) is CaptureError and "record 1 at byte offset 24 claims 209715200" in str(err)


def test_pcapng_block_claim_is_not_allocated_before_it_is_read(tmp_path: Path) -> None:
    head = shb() + idb()
    data = head + struct.pack("<II", 6, 200 << 20) + bytes(100)
    peak, err = _peak_while_reading(write(tmp_path, data, "claim.pcapng"))
    assert peak < 8 << 20, f"peak {peak} bytes"
    assert type(err) is CaptureError
    assert str(err) == (
        f"{tmp_path / 'claim.pcapng'}: record 1 (enhanced packet block at byte offset "
        f"{len(head)}) has an impossible length 209715200 (more than the limit of "
        f"{pcapng.MAX_PACKET_BLOCK}): file is corrupt"
    )


def test_pcapng_growing_block_reads_only_what_is_there(tmp_path: Path) -> None:
    """An unknown block may be large (up to 16 MiB, libpcap's bound), but a claim of 16 MiB
    with 100 bytes behind it allocates no more than a read chunk or two."""
    data = shb() + struct.pack("<II", 0x0BAD, 16 << 20) + bytes(100)
    peak, err = _peak_while_reading(write(tmp_path, data))
    assert peak < 8 << 20, f"peak {peak} bytes"
    assert isinstance(err, TruncatedCaptureError)


@pytest.mark.parametrize("kind", ["epb", "pb", "spb"])
def test_pcapng_packet_over_the_record_limit(tmp_path: Path, kind: str) -> None:
    big = bytes(262_145)
    blocks = {
        "epb": epb("<", 0, 1, big),
        "pb": old_pb("<", 0, 1, big),
        "spb": spb("<", len(big), big),
    }
    head = shb() + idb() + epb("<", 0, 1, b"ok")
    path = write(tmp_path, head + blocks[kind] + epb("<", 0, 1, b"after"), "big.pcapng")
    got, err = read_until_error(path)
    assert [r.data for r in got] == [b"ok"]
    assert type(err) is CaptureError
    assert str(err).startswith(f"{path}: record 2 (")
    assert f"at byte offset {len(head)}) claims 262145 captured bytes" in str(err)
    assert str(err).endswith("(more than the limit of 262144): file is corrupt")
    fits = {
        "epb": epb("<", 0, 1, big[1:]),
        "pb": old_pb("<", 0, 1, big[1:]),
        "spb": spb("<", len(big) - 1, big[1:]),
    }
    assert [len(r.data) for r in read_all(write(tmp_path, head + fits[kind]))] == [2, 262_144]


def test_pcapng_non_packet_block_over_16_mib(tmp_path: Path) -> None:
    data = shb() + struct.pack("<II", 4, (16 << 20) + 4) + bytes(64)
    _, err = read_until_error(write(tmp_path, data))
    assert type(err) is CaptureError
    assert f"has an impossible length {(16 << 20) + 4} (more than the limit of 16777216)" in (
        err.problem
    )


# ------------------------------------------------------------------ fuzzing


def _check_only_capture_errors(data: bytes) -> None:
    fd, name = tempfile.mkstemp(suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        count = 0
        try:
            with open_capture(name) as cap:
                for _ in cap:
                    count += 1
                    assert count < 100_000, "iteration does not terminate"
        except CaptureError:
            pass
    finally:
        os.unlink(name)


_VALID = [
    pcap_bytes([(1, 2, 9, b"abc"), (3, 4, 5, b"defgh")]),
    pcap_bytes([(1, 2, 9, b"abc")], endian=">", nano=True),
    shb() + idb(tsresol=9, tsoffset=5) + epb("<", 0, 7, b"xyz") + spb("<", 4, b"abcd"),
    shb(">")
    + idb(">", tsresol=0x94)
    + old_pb(">", 0, 1, b"q")
    + shb()
    + idb()
    + epb("<", 0, 1, b""),
]
_VALID += [gzip.compress(_VALID[0]), lzma.compress(_VALID[2]), bz2.compress(_VALID[3])]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_capture_errors(data: bytes) -> None:
    _check_only_capture_errors(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_VALID),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
    st.binary(max_size=8),
)
def test_mutated_files_raise_only_capture_errors(
    base: bytes, flips: list[tuple[int, int]], cut: int, insert: bytes
) -> None:
    data = bytearray(base)
    for where, value in flips:
        if data:
            data[where % len(data)] = value
    at = cut % (len(data) + 1)
    _check_only_capture_errors(bytes(data[:at] + insert + data[at:]))
    _check_only_capture_errors(bytes(data[:at]))


# ------------------------------------------------------------------ the shared captures

# tshark's first protocol for each linktype the shared captures use.
_LINK_PROTOCOL = {0: "null", 1: "eth", 9: "ppp", 12: "raw", 101: "raw", 113: "sll", 276: "sll"}


def _shared_captures() -> list[Path]:
    return sorted(p for p in PCAPS.glob("*") if p.suffix in (".pcap", ".pcapng"))


def _need_corpus() -> None:
    if not PCAPS.is_dir():
        pytest.skip(f"shared captures are absent ({PCAPS})")


@pytest.mark.corpus
def test_corpus_is_complete() -> None:
    _need_corpus()
    listed = [line.split("\t")[0] for line in (PCAPS / "MANIFEST.tsv").read_text().splitlines()]
    assert sorted(listed[1:]) == [p.name for p in _shared_captures()]
    assert len(listed[1:]) == 33


@pytest.mark.corpus
@pytest.mark.parametrize("path", _shared_captures(), ids=lambda p: p.name)
def test_shared_capture_matches_tshark(path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    fields = ["frame.time_epoch", "frame.len", "frame.cap_len", "frame.protocols"]
    proc = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", *(a for f in fields for a in ("-e", f))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    expected = [line.split("\t") for line in proc.stdout.splitlines()]
    assert expected, proc.stderr
    got: list[RawRecord] = []
    try:
        with open_capture(path) as cap:
            got.extend(cap)
        truncated = False
    except TruncatedCaptureError as exc:
        assert exc.records == len(got)
        truncated = True
    assert truncated == ("cut short" in proc.stderr)
    assert [[ts_text(r.ts_ns), str(r.wire_len), str(len(r.data))] for r in got] == [
        e[:3] for e in expected
    ]
    assert [_LINK_PROTOCOL.get(r.linktype) for r in got] == [e[3].split(":")[0] for e in expected]


@pytest.mark.corpus
@pytest.mark.parametrize("path", _shared_captures(), ids=lambda p: p.name)
def test_shared_capture_count_matches_oracle(path: Path) -> None:
    summary = json.loads((ORACLE / f"{path.name}.summary.json").read_text())
    count = 0
    try:
        with open_capture(path) as cap:
            for _ in cap:
                count += 1
    except TruncatedCaptureError as exc:
        assert exc.records == count
    assert count == summary["total_frames"]


@pytest.mark.corpus
def test_shared_cut_off_capture() -> None:
    _need_corpus()
    got, err = read_until_error(PCAPS / "dpkt_truncated_dns_2.pcap")
    assert len(got) == 1 and got[0].wire_len == 282
    assert isinstance(err, TruncatedCaptureError)
    assert (err.offset, err.records) == (240, 1)


@pytest.mark.corpus
def test_shared_many_interfaces_linktypes() -> None:
    _need_corpus()
    got = read_all(PCAPS / "ppp_many_interfaces-1.pcapng")
    assert len(got) == 64
    assert {r.linktype for r in got} == {0, 1}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.binary(max_size=90),
        ),
        max_size=12,
    ),
    st.sampled_from(["<", ">"]),
    st.booleans(),
    st.integers(24, 200),  # the first read holds the global header
    st.data(),
)
def test_pcap_blocks_equal_records_across_buffers_and_cuts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recs: list[tuple[int, int, int, bytes]],
    endian: str,
    nano: bool,
    chunk: int,
    data: st.DataObject,
) -> None:
    """Classic pcap read in blocks of columns: the same records and the same error as one
    record at a time, whatever the read size (records spanning reads) and wherever the file is
    cut."""
    from flowherd.producer.readers import pcap

    monkeypatch.setattr(pcap, "CHUNK", chunk)
    whole = pcap_bytes(recs, endian, nano)
    cut = data.draw(st.integers(24, len(whole)))
    path = write(tmp_path, whole[:cut], "blocks.pcap")
    frac = 1 if nano else 1000
    expected = [RawRecord(s * G + f * frac, w, 1, d) for s, f, w, d in recs]
    ends = list(itertools.accumulate((16 + len(r[3]) for r in recs), initial=24))
    if cut in ends:  # cut between records: a shorter, whole file
        assert read_all(path) == expected[: ends.index(cut)]
    else:
        got, err = read_until_error(path)
        assert isinstance(err, TruncatedCaptureError)
        assert got == expected[: sum(e <= cut for e in ends) - 1]


def test_block_reading_and_packing_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """The producer's path (blocks of columns cut into batch payloads that are then let go):
    peak memory for a file 4x as long stays that of the shorter file."""
    from flowherd.models.batch import BatchBuilder
    from flowherd.producer.run.writer import pieces

    def peak(n: int) -> int:
        rec = struct.pack("<IIII", 1, 0, 100, 100) + bytes(range(100))
        path = write(tmp_path, pcap_bytes([]) + rec * n, f"m{n}.pcap")
        tracemalloc.start()
        try:
            b, packed = BatchBuilder(), 0
            with open_capture(path) as cap:
                for block in cap.blocks():
                    for part, full in pieces(block, b.count, b.size, 16_000, 4 << 20):
                        b.add_columns(part)
                        if full:
                            packed += len(b.payload())
                            b = BatchBuilder()
            packed += len(b.payload())
            assert packed > n * 100
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(30_000), peak(120_000)
    assert large < small * 1.3 + (1 << 20), (small, large)
    assert large < 24 << 20


_ifaces = st.lists(
    st.tuples(
        st.sampled_from([1, 101, 113, 228]),
        st.one_of(st.none(), st.sampled_from([0, 3, 6, 9, 10, 12, 0x80 | 10, 0x80 | 30, 100])),
        st.one_of(st.none(), st.sampled_from([0, 5, -5, -(2**40), 2**33, 2**62, -(2**63)])),
    ),
    min_size=0,
    max_size=3,
)
_packets = st.lists(
    st.tuples(
        st.sampled_from(["epb", "epb", "epb", "spb", "pb", "idb", "junk"]),
        st.integers(0, 3),  # interface
        st.one_of(st.integers(0, 2**32), st.integers(0, 2**64 - 1)),
        st.binary(max_size=40),
    ),
    max_size=14,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_ifaces, _packets, st.sampled_from(["<", ">"]), st.integers(28, 300), st.data())
def test_pcapng_blocks_equal_records_across_interfaces_buffers_and_cuts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ifaces: list[tuple[int, int | None, int | None]],
    packets: list[tuple[str, int, int, bytes]],
    endian: str,
    chunk: int,
    data: st.DataObject,
) -> None:
    """pcapng read in blocks of columns (runs of Enhanced Packet Blocks read as arrays): the
    same records and the same error as one record at a time, with interfaces of every
    resolution and offset (timestamps before 1970, beyond int64, undefined interfaces), other
    packet and block types between, any read size and any cut."""
    from flowherd.producer.readers import pcap

    monkeypatch.setattr(pcap, "CHUNK", chunk)
    body = shb(endian) + b"".join(idb(endian, lt, 0, r, o) for lt, r, o in ifaces)
    for kind, iid, units, frame in packets:
        if kind == "epb":
            body += epb(endian, iid, units, frame)
        elif kind == "spb":
            body += spb(endian, len(frame), frame)
        elif kind == "pb":
            body += old_pb(endian, iid, units & (2**64 - 1), frame)
        elif kind == "idb":
            body += idb(endian, 1, 0, 9, None)
        else:
            body += block(endian, 0xBAD, frame)
    cut = data.draw(st.integers(len(shb(endian)), len(body)))
    path = write(tmp_path, body[:cut], "blocks.pcapng")
    records, error = _one_by_one(path)
    in_blocks: list[RawRecord] = []
    error_blocks: CaptureError | None = None
    with open_capture(path) as cap:
        try:
            for b in cap.blocks():
                in_blocks.extend(b.records())
        except CaptureError as exc:
            error_blocks = exc
    assert in_blocks == records
    assert (type(error_blocks), str(error_blocks)) == (type(error), str(error))
    if not error:
        assert read_all(path) == records


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize(
    "tsresol", [0, 3, 6, 9, 10, 12, 0x80 | 10, 0x80 | 20, 0x80 | 32, 0x80 | 40]
)
@pytest.mark.parametrize("tsoffset", [None, -3600, 10**9])
def test_pcapng_array_timestamps_exact_at_every_resolution(
    tmp_path: Path, endian: str, tsresol: int, tsoffset: int | None
) -> None:
    """The array path's timestamps equal units x 10**9 / units-per-second, rounded down, plus
    the offset, exactly as the general path's Python integers; units at and around today's
    time and the u64 extremes."""
    per_s = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    now = 1_764_000_000  # seconds: late 2025
    units = [0, 1, per_s - 1, now * per_s + per_s // 3 + 7, 2**63 + 12345, 2**64 - 1]
    units = [u for u in units if u < 2**64]
    body = shb(endian) + idb(endian, 1, 0, tsresol, tsoffset)
    body += b"".join(epb(endian, 0, u, bytes([i]) * 5) for i, u in enumerate(units))
    path = write(tmp_path, body, "res.pcapng")
    expected = [u * G // per_s + (tsoffset or 0) * G for u in units]
    good = [t for t in expected if 0 <= t < NO_FIRST]
    first_bad = next((i for i, t in enumerate(expected) if not 0 <= t < NO_FIRST), None)
    if first_bad is None:
        got = read_all(path)
    else:
        got, err = read_until_error(path)
        assert f"has timestamp {expected[first_bad]} ns" in str(err)
    assert [r.ts_ns for r in got] == good[: len(got)]
    assert len(got) == (len(units) if first_bad is None else first_bad)
