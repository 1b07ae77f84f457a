"""Every shared capture through the real pipeline, compared with the tshark oracle.

The CSV written by ``reporter flows`` must equal the oracle's ``.uni.csv`` and ``.bi.csv`` row
for row once sorted, and the summary totals must match. Runs where ../shared exists (CI).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.models.capture import CaptureState
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from tests.conftest import SHARED
from tests.support.pipeline import CORPUS, ENGINES, corpus_name, merge_corpus, sorted_rows

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.corpus]

CAPTURES = CORPUS


@pytest.fixture(scope="module")
def merged(redis_url: str) -> dict[tuple[str, str], object]:
    """Submit every capture once per engine, with two workers, into a clean Redis."""
    if not CAPTURES:
        pytest.skip("../shared/pcaps is not present")
    conn = Redis.from_url(redis_url)
    conn.flushall()
    return merge_corpus(Store.single(conn), redis_url)  # type: ignore[return-value]


def _flows_csv(redis_url: str, name: str, direction: str) -> str:
    res = CliRunner().invoke(
        reporter_main,
        ["flows", name, "--direction", direction, "--format", "csv", "--redis-url", redis_url],
    )
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("file", CAPTURES)
def test_uni_table_equals_oracle(merged: dict, redis_url: str, file: str, engine: str) -> None:
    expected = (SHARED / "oracle" / f"{file}.uni.csv").read_text()
    assert sorted_rows(_flows_csv(redis_url, corpus_name(file, engine), "uni")) == sorted_rows(
        expected
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("file", CAPTURES)
def test_bi_table_equals_oracle(merged: dict, redis_url: str, file: str, engine: str) -> None:
    expected = (SHARED / "oracle" / f"{file}.bi.csv").read_text()
    assert sorted_rows(_flows_csv(redis_url, corpus_name(file, engine), "bi")) == sorted_rows(
        expected
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("file", CAPTURES)
def test_summary_totals_equal_oracle(merged: dict, file: str, engine: str) -> None:
    oracle = json.loads((SHARED / "oracle" / f"{file}.summary.json").read_text())
    st = merged[file, engine]
    assert st.state is CaptureState.COMPLETE  # type: ignore[attr-defined]
    assert st.packets == oracle["total_frames"]  # type: ignore[attr-defined]
    assert st.bytes == oracle["total_bytes"]  # type: ignore[attr-defined]
    assert st.counted_packets == oracle["ip_frames"]  # type: ignore[attr-defined]
    assert st.counted_bytes == oracle["ip_bytes"]  # type: ignore[attr-defined]
    not_counted = sum(b.packets for b in st.not_counted.values())  # type: ignore[attr-defined]
    assert not_counted == oracle["non_ip_frames"]
    truncated = oracle["tshark_exit_code"] != 0
    assert any("truncated" in w for w in st.warnings) == truncated  # type: ignore[attr-defined]
