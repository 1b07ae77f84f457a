"""``reporter stats --key ip`` against tshark's ``-z endpoints,ip -z endpoints,ipv6`` on every
shared capture, through the real pipeline (two worker processes, the fast engine; the engines
are checked equal to each other by tests/pipeline/test_oracle.py).

tshark counts a frame for its source and its destination address, as ``--key ip`` does, but
for every IP header its dissectors see, tunnelled ones included; flowherd keys a frame by its
outermost IP header only. Captures whose frames carry an inner IP header are left out, each
with the reason, found by comparing (:data:`EXCLUDED`). Runs where ../shared exists (CI).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.models.capture import CaptureState
from flowherd.producer.run.follow import LocalWorkers
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from tests.support.pipeline import CORPUS, SHARED_PCAPS, corpus_name, run_capture, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.corpus]

TSHARK = shutil.which("tshark") or "/usr/bin/tshark"
ENGINE = "fast"

#: captures where tshark's endpoints count inner IP headers of tunnels: why, per capture
EXCLUDED: dict[str, str] = {
    "tcpdump_geneve.pcap": "Geneve (UDP 6081) carries Ethernet + IPv4 30.0.0.1 <-> 30.0.0.2 "
    "in every frame; tshark counts those inner addresses too",
    "zeek_gre-aruba.pcap": "Aruba GRE carries 802.11 + IPv4 (10.37.36.92, 140.197.248.x, ...) "
    "in every frame; tshark counts those inner addresses too",
    "zeek_vxlan-encapsulated-http.pcap": "VXLAN (UDP 4789) carries Ethernet + IPv4 "
    "172.16.11.201 <-> 54.86.237.188 in every frame; tshark counts those inner addresses too",
}

CAPTURES = [c for c in CORPUS if c not in EXCLUDED]


def tshark_endpoints(path: str) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per address of tshark's IPv4 and IPv6 endpoint tables."""
    res = subprocess.run(
        [TSHARK, "-n", "-q", "-r", path, "-z", "endpoints,ip", "-z", "endpoints,ipv6"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # a truncated capture exits 2 after reading its complete records
    )
    out: dict[str, tuple[int, int]] = {}
    tables = 0
    for line in res.stdout.splitlines():
        if line.endswith(" Endpoints"):
            tables += 1
        f = line.split()
        if len(f) == 7 and all(x.isdigit() for x in f[1:]):
            assert f[0] not in out, f"{f[0]} listed twice"
            out[f[0]] = (int(f[1]), int(f[2]))
    assert tables == 2, res.stdout + res.stderr
    return out


@pytest.fixture(scope="module")
def merged(redis_url: str) -> dict[str, object]:
    """Every capture submitted once, with two workers, into a clean Redis."""
    if not CORPUS:
        pytest.skip("../shared/pcaps is not present")
    if not shutil.which(TSHARK):
        pytest.skip("tshark is not installed (scripts/install.sh --test installs it)")
    conn = Redis.from_url(redis_url)
    conn.flushall()
    store = Store.single(conn)
    settings = settings_for(redis_url, batch_packets=500, engine=ENGINE)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        return {
            f: run_capture(store, settings, [str(SHARED_PCAPS / f)], corpus_name(f, ENGINE), w)
            for f in CORPUS
        }


def flowherd_ip(redis_url: str, name: str) -> dict[str, tuple[int, int]]:
    res = CliRunner().invoke(
        reporter_main,
        ["stats", name, "--key", "ip", "-n", "0", "--format", "csv", "--redis-url", redis_url],
    )
    assert res.exit_code == 0, res.output
    rows = [line.split(",") for line in res.output.splitlines()[1:]]
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


@pytest.mark.parametrize("file", CAPTURES)
def test_ip_stats_equal_tshark_endpoints(merged: dict, redis_url: str, file: str) -> None:
    assert merged[file].state is CaptureState.COMPLETE  # type: ignore[attr-defined]
    ours = flowherd_ip(redis_url, corpus_name(file, ENGINE))
    theirs = tshark_endpoints(str(SHARED_PCAPS / file))
    assert ours == theirs


@pytest.mark.parametrize("file", sorted(EXCLUDED))
def test_excluded_captures_differ_only_by_inner_headers(
    merged: dict, redis_url: str, file: str
) -> None:
    """What tshark counts on an excluded capture is a superset of ours: every address we count
    it counts at least as often (the outer headers), plus inner addresses."""
    ours = flowherd_ip(redis_url, corpus_name(file, ENGINE))
    theirs = tshark_endpoints(str(SHARED_PCAPS / file))
    assert ours != theirs
    for addr, (p, b) in ours.items():
        assert addr in theirs and theirs[addr][0] >= p and theirs[addr][1] >= b, addr
