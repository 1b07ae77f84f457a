"""Every shared capture through the real pipeline into a Redis Cluster store (3 masters, 16
shards), with both engines: the tables equal the tshark oracle (as the single-Redis store's
do, tests/pipeline/test_oracle.py) and the totals equal its summary."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.deploy.cluster import LocalCluster
from flowherd.models.capture import CaptureState, CaptureStatus
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import open_store
from tests.conftest import SHARED
from tests.support.cluster import flush_cluster
from tests.support.pipeline import CORPUS, ENGINES, corpus_name, merge_corpus, sorted_rows

pytestmark = [
    pytest.mark.redis,
    pytest.mark.e2e,
    pytest.mark.corpus,
    pytest.mark.cluster,
    pytest.mark.slow,
]

CAPTURES = CORPUS


@pytest.fixture(scope="module")
def merged(redis_url: str, cluster: LocalCluster) -> dict[tuple[str, str], CaptureStatus]:
    if not CAPTURES:
        pytest.skip("../shared/pcaps is not present")
    queue = Redis.from_url(redis_url)
    queue.flushall()
    store = open_store(queue, cluster.url)
    flush_cluster(store.kv)
    return merge_corpus(store, redis_url, cluster.url)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("file", CAPTURES)
def test_cluster_tables_equal_oracle(
    merged: dict[tuple[str, str], CaptureStatus],
    redis_url: str,
    cluster: LocalCluster,
    file: str,
    engine: str,
) -> None:
    st = merged[file, engine]
    oracle = json.loads((SHARED / "oracle" / f"{file}.summary.json").read_text())
    assert st.state is CaptureState.COMPLETE, st
    assert (st.packets, st.bytes) == (oracle["total_frames"], oracle["total_bytes"])
    assert (st.counted_packets, st.counted_bytes) == (oracle["ip_frames"], oracle["ip_bytes"])
    for direction in ("uni", "bi"):
        res = CliRunner().invoke(
            reporter_main,
            [
                "flows",
                corpus_name(file, engine),
                "--direction",
                direction,
                "--format",
                "csv",
                "--redis-url",
                redis_url,
                "--store-url",
                cluster.url,
            ],
        )
        assert res.exit_code == 0, res.output
        expected = (SHARED / "oracle" / f"{file}.{direction}.csv").read_text()
        assert sorted_rows(res.output) == sorted_rows(expected), direction
