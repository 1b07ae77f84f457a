"""Redis side of a batch: the atomic, idempotent merge of a partial table into a run.

The merge is a Lua script (``merge.lua``) run with EVALSHA: one round trip,
atomic with respect to every other client, and idempotent by batch sequence number.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from importlib import resources

from redis import Redis

from models.keys import RunKeys
from workers.aggregate import PartialTable, pack_flows

_MERGE = resources.files(__package__).joinpath("merge.lua").read_text()


class MergeStatus(enum.IntEnum):
    STALE = -1  # the run was replaced or deleted: nothing written
    DUPLICATE = 0  # this batch was merged before: nothing written
    MERGED = 1
    LAST = 2  # merged, and it completed the capture: the caller enqueues the report


@dataclass(frozen=True, slots=True)
class MergeResult:
    status: MergeStatus
    new_flows: int


def _ts19(ns: int) -> bytes:
    return b"%019d" % ns


def _table_args(start: str, table: PartialTable) -> list[bytes | int | str]:
    pairs: list[bytes | int | str] = [
        "packets",
        table.packets,
        "bytes",
        table.bytes,
        "counted_packets",
        table.counted_packets,
        "counted_bytes",
        table.counted_bytes,
    ]
    for bucket, (p, b) in sorted(table.not_counted.items()):
        pairs += [f"nc:{bucket}:packets", p, f"nc:{bucket}:bytes", b]
    head: list[bytes | int | str] = [
        start,
        pack_flows(table.flows),
        _ts19(table.first_ns),
        _ts19(table.last_ns),
        len(pairs) // 2,
    ]
    return head + pairs


def merge_partial(
    conn: Redis, keys: RunKeys, seq: int, table: PartialTable, keep_windows: int = 0
) -> MergeResult:
    """Merge ``table`` (and its per-window tables) as batch ``seq`` of the run, exactly once,
    in one atomic script; deletes the batch payload. ``keep_windows`` > 0 drops the oldest
    windows beyond that many."""
    argv: list[bytes | int | str] = [seq, keys.prefix, keep_windows, *_table_args("", table)]
    for start, part in sorted(table.windows.items()):
        argv += _table_args(str(start), part)
    script = conn.register_script(_MERGE)
    status, new_flows = script(
        keys=[
            keys.done,
            keys.flows,
            keys.rank_bi,
            keys.totals,
            keys.batch(seq),
            keys.meta,
            keys.finalized,
            keys.windows,
        ],
        args=argv,
    )
    return MergeResult(MergeStatus(int(status)), int(new_flows))
