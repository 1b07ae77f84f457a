"""The producer cuts batches after the same frames whether it is fed one record or a block of
columns at a time (``flowherd.producer.run.writer.pieces``), so a resumed run rebuilds the same batches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowherd.models.batch import BatchBuilder, Columns, RawRecord
from flowherd.producer.run.writer import pieces


def _cut_one_by_one(recs: list[RawRecord], per_batch: int, limit: int) -> list[int]:
    """Batch sizes of RunWriter.add: flush once the count or the body bytes reach the limit."""
    sizes, b = [], BatchBuilder()
    for r in recs:
        b.add(r)
        if b.count >= per_batch or b.size >= limit:
            sizes.append(b.count)
            b = BatchBuilder()
    return [*sizes, b.count] if b.count else sizes


def _cut_in_blocks(blocks: list[Columns], per_batch: int, limit: int) -> list[int]:
    """Batch sizes of RunWriter.add_columns, block after block."""
    sizes, b = [], BatchBuilder()
    for cols in blocks:
        for part, full in pieces(cols, b.count, b.size, per_batch, limit):
            b.add_columns(part)
            if full:
                sizes.append(b.count)
                b = BatchBuilder()
    return [*sizes, b.count] if b.count else sizes


@given(
    st.lists(st.integers(0, 300), max_size=80),
    st.lists(st.integers(1, 30), max_size=6),
    st.integers(1, 20),
    st.integers(1, 2000),
)
def test_blocks_cut_the_batches_records_cut(
    caps: list[int], block_sizes: list[int], per_batch: int, limit: int
) -> None:
    recs = [RawRecord(i, 60, 1, bytes(c)) for i, c in enumerate(caps)]
    blocks, i = [], 0
    for n in [*block_sizes, len(recs)]:
        blocks.append(Columns.from_records(recs[i : i + n]))
        i += n
    expected = _cut_one_by_one(recs, per_batch, limit)
    assert _cut_in_blocks(blocks, per_batch, limit) == expected
    assert sum(expected) == len(recs)
