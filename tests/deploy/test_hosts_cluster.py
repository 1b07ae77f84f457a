"""Hosts with the flow store on a Redis Cluster: a queue Redis host, a store host running three
cluster nodes (one password, real TCP), a producer host and three worker hosts. The tables equal
a one-host run's byte for byte, spread over the hosts and with a worker host SIGKILLed
mid-batch, and the run's shards live on every master."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowherd.lab import scenarios
from flowherd.lab.fleet import Fleet
from flowherd.lab.hosts import Lan, available
from flowherd.producer.traces.sample import write_sample
from flowherd.store.captures import run_of

pytestmark = [
    pytest.mark.root,
    pytest.mark.hosts,
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
    pytest.mark.timeout(240),
]


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    with Lan(tmp_path_factory.mktemp("hosts")) as lan:
        yield lan


@pytest.fixture(scope="module")
def hosts(lan: Lan) -> Fleet:
    return Fleet.build_cluster(lan, workers=3, masters=3)


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pcap") / "hosts.pcap"
    write_sample(path, flows=600, seed=31)
    return path


@pytest.fixture(scope="module")
def ref(lan: Lan, hosts: Fleet, pcap: Path) -> tuple[bytes, bytes]:
    uni, bi, _ = scenarios.one_host(lan, pcap)
    return uni, bi


@pytest.fixture
def fleet(hosts: Fleet) -> Iterator[Fleet]:
    f = hosts.on_queue(f"q{uuid.uuid4().hex[:8]}")
    try:
        yield f
    finally:
        f.stop_all()


def test_spread_over_hosts_with_a_cluster_store(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes]
) -> None:
    out = scenarios.spread(fleet, pcap, ref, name="cspread")
    print(out.line())
    assert out.state == "complete" and out.identical, out.line()
    store = fleet.store()
    keys = run_of(store, "cspread")
    owners = Counter(
        store.kv.get_node_from_key(sk.flows).name
        for sk in keys.all_shards()
        if store.kv.exists(sk.flows)
    )
    assert keys.shards == 16 and len(owners) == 3, owners


def test_worker_host_killed_mid_batch_with_a_cluster_store(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes]
) -> None:
    out = scenarios.host_killed(fleet, pcap, ref, name="ckilled")
    print(out.line())
    assert out.state == "complete" and out.identical, out.line()
    assert out.facts["killed_batch_reran"] is True
