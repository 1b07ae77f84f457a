"""A batch's segments under flow timeouts: what it contributes to the capture's flow records.

:func:`batch_segments` is pure: records and a dissect function in, one list of chunks per shard
out (see :mod:`flowherd.models.records` for the layout and why segments merge exactly). The same
batch always gives the same bytes, so storing them again (a retried job) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowherd.models.batch import RawRecord
from flowherd.models.flows import FlowKey, shard_of
from flowherd.models.records import CHUNK_BYTES, Pkt, Timeouts, encode_chunks, encode_entry
from flowherd.workers.fold.aggregate import DissectFn


def conversations(records: Iterable[RawRecord], dissect: DissectFn) -> dict[FlowKey, list[Pkt]]:
    """The counted packets of ``records`` per canonical key, each list sorted by time (the
    frames ``dissect`` files in a not-counted bucket are left out, as in the flow table)."""
    per: dict[FlowKey, list[Pkt]] = {}
    for ts, wire, linktype, data in records:
        info = dissect(linktype, data)
        if isinstance(info, str):
            continue
        src, dst, sport, dport = info.src, info.dst, info.sport, info.dport
        if (src, sport) <= (dst, dport):
            key, d = FlowKey(src, dst, info.proto, sport, dport), 0
        else:
            key, d = FlowKey(dst, src, info.proto, dport, sport), 1
        lst = per.get(key)
        if lst is None:
            per[key] = lst = []
        lst.append(Pkt(ts, d, wire, info.tcp_flags))
    for lst in per.values():
        lst.sort()
    return per


def batch_segments(
    records: Iterable[RawRecord],
    dissect: DissectFn,
    t: Timeouts,
    shards: int,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[list[bytes]]:
    """The batch's blob for each shard (index = shard), as chunks; empty where it has none."""
    per_shard: list[list[tuple[bytes, bytes]]] = [[] for _ in range(shards)]
    for key, pkts in conversations(records, dissect).items():
        kb = key.pack()
        per_shard[shard_of(kb, shards)].append((kb, encode_entry(key, t, pkts)))
    return [encode_chunks(entries, chunk_bytes) for entries in per_shard]
