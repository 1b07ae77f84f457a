"""The external merge sort the reporter spills through: the order of ``sorted``, any run size."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowherd.reporter.table.extsort import external_sort, fixed_width


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=4, max_size=4)), st.integers(1, 7))
def test_fixed_width_records_come_back_sorted(recs: list[bytes], run_rows: int) -> None:
    with ExitStack() as stack:
        out = list(external_sort(iter(recs), stack, run_rows, read=fixed_width(4)))
    assert out == sorted(recs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text("abc\0", max_size=6)), st.integers(1, 5))
def test_lines_come_back_sorted(texts: list[str], run_rows: int) -> None:
    recs = [t.encode() + b"\n" for t in texts]
    with ExitStack() as stack:
        out = list(external_sort(recs, stack, run_rows))
    assert out == sorted(recs)


def test_runs_are_spilled_and_removed(tmp_path: Path) -> None:
    recs = [b"%03d\n" % i for i in range(100, 0, -1)]
    with ExitStack() as stack:
        merged = external_sort(recs, stack, 10, tmpdir=str(tmp_path))
        (d,) = list(tmp_path.iterdir())
        assert len(list(d.iterdir())) == 10  # ten full runs spilled
        assert list(merged) == sorted(recs)
    assert list(tmp_path.iterdir()) == []


def test_run_rows_below_one_is_refused() -> None:
    with ExitStack() as stack, pytest.raises(ValueError, match="run_rows"):
        external_sort([b"x"], stack, 0)
