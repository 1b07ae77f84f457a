"""Hosts that come and go: flowherd over real TCP between network namespaces on a bridge.

A Redis host (password), a producer host and three worker hosts each running
``workers run -n 1`` (``lab/fleet.py`` and ``lab/scenarios.py``, on ``lab/hosts.py``). Each case compares
``reporter flows --format csv --order rank`` (uni and bi) byte for byte with a run on one host:
spread over the hosts; one worker host SIGKILLed mid-batch; one worker host's link down 15 s
mid-batch; and ``workers run`` stopped by SIGTERM while its link is down. Needs root;
``bench/hosts.py`` runs the same scenarios and prints their times.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowherd.lab import scenarios
from flowherd.lab.fleet import Fleet
from flowherd.lab.hosts import Lan, available
from flowherd.producer.traces.sample import write_sample

pytestmark = [
    pytest.mark.root,
    pytest.mark.hosts,
    pytest.mark.e2e,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    with Lan(tmp_path_factory.mktemp("hosts")) as lan:
        yield lan


@pytest.fixture(scope="module")
def hosts(lan: Lan) -> Fleet:
    return Fleet.build(lan, workers=3)


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pcap") / "hosts.pcap"
    write_sample(path, flows=600, seed=31)  # ~10,600 frames: 22 batches
    return path


@pytest.fixture(scope="module")
def ref(lan: Lan, hosts: Fleet, pcap: Path) -> tuple[bytes, bytes]:
    uni, bi, _ = scenarios.one_host(lan, pcap)
    assert uni.count(b"\n") > 1000 and bi.count(b"\n") > 500
    return uni, bi


@pytest.fixture
def fleet(hosts: Fleet, lan: Lan) -> Iterator[Fleet]:
    """The module's hosts, on a queue of this test's own; every worker killed after it."""
    f = hosts.on_queue(f"q{uuid.uuid4().hex[:8]}")
    try:
        yield f
    finally:
        f.stop_all()


def _show_logs(lan: Lan) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in lan.logs)


def test_spread_over_hosts_equals_one_host(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes], lan: Lan
) -> None:
    out = scenarios.spread(fleet, pcap, ref)
    print(out.line())
    assert out.state == "complete", _show_logs(lan)
    assert out.identical
    jobs = out.facts["jobs"]
    assert isinstance(jobs, dict) and all(n > 0 for n in jobs.values()), jobs  # all took part
    for h in fleet.hosts:  # the password travels by environment only
        for pid in h.pids():
            assert fleet.redis.password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_worker_host_killed_mid_batch(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes], lan: Lan
) -> None:
    out = scenarios.host_killed(fleet, pcap, ref)
    print(out.line())
    assert out.state == "complete", _show_logs(lan)
    assert out.identical
    assert out.facts["killed_batch_reran"] is True  # re-queued, merged once
    assert out.facts["left_on_host"] == 0


def test_worker_link_down_15s_mid_batch(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes], lan: Lan
) -> None:
    out = scenarios.link_flap(fleet, pcap, ref, down=15)
    print(out.line())
    assert out.state == "complete", _show_logs(lan)
    assert out.identical
    assert out.facts["victim_pool_alive"] is True


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_sigterm_with_redis_unreachable_stops_within_10s(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes], lan: Lan, busy: bool
) -> None:
    """systemd and Kubernetes stop workers with SIGTERM (then SIGKILL after a grace period):
    ``workers run`` and all its processes end within 10 s though every Redis call hangs."""
    out = scenarios.sigterm_unreachable(fleet, pcap, ref, busy)
    print(out.line())
    assert out.seconds["stopped"] <= 10, (out.line(), _show_logs(lan))
    if busy:  # the abandoned batch is re-queued and merged once elsewhere
        assert out.state == "complete" and out.identical
