"""Golden test: dissect every shared capture and compare its flow table with the tshark oracle.

For each capture in ``../shared/pcaps`` the frames are read with scapy's raw readers (each pcapng
packet with its own interface's link type), dissected, and folded into
``(src, dst, proto, sport, dport) -> [packets, wire bytes]``; that table must equal the oracle's
``<file>.uni.csv`` exactly, and the frames left out must number the oracle's ``non_ip_frames``.
The module is skipped when the shared corpus is not checked out beside the repository.
"""

from __future__ import annotations

import csv
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.data import MTU
from scapy.utils import RawPcapNgReader, RawPcapReader

from flowherd.workers.decode.dissect import NOT_COUNTED_BUCKETS, PacketInfo, dissect

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PCAPS = SHARED / "pcaps"
ORACLE = SHARED / "oracle"

if not PCAPS.is_dir() or not ORACLE.is_dir():
    pytest.skip(f"shared corpus not found at {SHARED}", allow_module_level=True)

pytestmark = [pytest.mark.corpus, pytest.mark.timeout(300)]

CAPTURES = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng"))

FlowKey = tuple[str, str, int, int, int]


def read_frames(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(linktype, captured bytes, wire length)`` for every complete record of ``path``.

    A record cut by the end of the file is dropped, as tshark drops it; a reader error after the
    last complete record ends the iteration (the truncated dpkt capture).
    """
    reader = RawPcapReader(str(path))
    try:
        while True:
            try:
                data, meta = next(reader)
            except StopIteration:
                return
            except Exception:  # a cut file: keep what was read
                return
            if isinstance(reader, RawPcapNgReader):  # each packet carries its interface's type
                yield meta.linktype, data, meta.wirelen  # type: ignore[attr-defined]
                continue
            if len(data) < min(meta.caplen, MTU):
                return
            yield reader.linktype, data, meta.wirelen
    finally:
        reader.close()


def address_text(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


def dissect_capture(path: Path) -> tuple[dict[FlowKey, list[int]], dict[str, int]]:
    flows: dict[FlowKey, list[int]] = {}
    buckets = dict.fromkeys(NOT_COUNTED_BUCKETS, 0)
    for linktype, data, wirelen in read_frames(path):
        res = dissect(linktype, data)
        if isinstance(res, PacketInfo):
            key = (address_text(res.src), address_text(res.dst), res.proto, res.sport, res.dport)
            entry = flows.setdefault(key, [0, 0])
            entry[0] += 1
            entry[1] += wirelen
        else:
            buckets[res] += 1
    return flows, buckets


def oracle_flows(name: str) -> dict[FlowKey, list[int]]:
    with (ORACLE / f"{name}.uni.csv").open(newline="") as fh:
        return {
            (row["src"], row["dst"], int(row["proto"]), int(row["sport"]), int(row["dport"])): [
                int(row["packets"]),
                int(row["bytes"]),
            ]
            for row in csv.DictReader(fh)
        }


def test_corpus_is_complete() -> None:
    assert len(CAPTURES) == 33


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_matches_oracle(name: str) -> None:
    flows, buckets = dissect_capture(PCAPS / name)
    summary = json.loads((ORACLE / f"{name}.summary.json").read_text())

    assert flows == oracle_flows(name)
    assert buckets["non_ip"] + buckets["malformed_ip"] == summary["non_ip_frames"]
    assert buckets["unsupported_linktype"] == 0
    assert buckets["dissect_error"] == 0
    assert sum(v[0] for v in flows.values()) == summary["ip_frames"]
