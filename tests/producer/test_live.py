"""Live capture at scale, on a real veth pair with tcpreplay (root): the TPACKET_V3 ring and the
recvmsg fallback capture the shared corpus identically, ``--fanout 2`` is exact, and a fanout
process killed mid-capture is named while the others carry on."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowherd.models.capture import CaptureState, CaptureStatus
from flowherd.producer.run.follow import LocalWorkers
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from tests.support.helpers import invoke, pcap_bytes
from tests.support.pipeline import follow_for

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "pcaps"

pytestmark = [
    pytest.mark.redis,
    pytest.mark.root,
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("tcpreplay") or not shutil.which("ip"),
        reason="needs root, iproute2 and tcpreplay",
    ),
]


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """A quiet veth pair (sender end, capture end) with a jumbo MTU and IPv6 off."""
    tag = uuid.uuid4().hex[:8]
    a, b = f"fl{tag}a", f"fl{tag}b"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        for n in (a, b):
            Path(f"/proc/sys/net/ipv6/conf/{n}/disable_ipv6").write_text("1\n")
            subprocess.run(["ip", "link", "set", n, "mtu", "9000", "up"], check=True)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)


def _sniff(iface: str, name: str, redis_url: str, queue: str, *extra: str) -> subprocess.Popen[str]:
    """``producer sniff`` as a subprocess, returned once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowherd.producer", "sniff", "-i", iface, "--name", name,
         "--no-wait", "--no-promisc", "--redis-url", redis_url, "--queue", queue, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("listening on"):
            return proc
    proc.wait(10)
    pytest.fail(f"producer sniff did not start: {''.join(seen)}")


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _replay(iface: str, files: list[Path], pps: int, loops: int = 1) -> int:
    """Replay ``files`` onto ``iface``; the number of frames tcpreplay sent."""
    sent = 0
    for f in files:
        r = subprocess.run(
            ["tcpreplay", "-i", iface, "--pps", str(pps), "--loop", str(loops), "-q", str(f)],
            capture_output=True,
            text=True,
            check=True,
        )
        sent += int(re.search(r"Successful packets:\s+(\d+)", r.stdout)[1])  # type: ignore[index]
    return sent


def _table(redis_url: str, name: str) -> dict[tuple[str, ...], tuple[int, int]]:
    """``reporter flows NAME`` as {5-tuple: (packets, bytes)} (timestamps left out: live)."""
    r = CliRunner().invoke(reporter_main, ["flows", name, "--redis-url", redis_url])
    assert r.exit_code == 0, r.output
    rows = csv.DictReader(io.StringIO(r.output))
    return {
        (x["src"], x["dst"], x["proto"], x["sport"], x["dport"]): (
            int(x["packets"]),
            int(x["bytes"]),
        )
        for x in rows
    }


def _ethernet_corpus(limit: int = 20_000) -> list[Path]:
    """The Ethernet classic pcaps of the shared corpus of at most ``limit`` packets ([] when
    the corpus is absent)."""
    manifest = SHARED / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    out = []
    for line in manifest.read_text().splitlines()[1:]:
        f = line.split("\t")
        if f[5] == "EN10MB(1)" and f[9] == "pcap" and int(f[6]) <= limit:
            out.append(SHARED / f[0])
    return out


@pytest.mark.corpus
@pytest.mark.timeout(300)
def test_ring_and_recvmsg_capture_the_corpus_identically(
    veth: tuple[str, str], store: Store, redis_url: str
) -> None:
    """Both readers listen on one interface at once while every Ethernet capture of the shared
    corpus is replayed: the two capture tables are equal, flow for flow, and hold every frame
    tcpreplay sent (VLAN tags the veth strips are put back by both)."""
    files = _ethernet_corpus()
    if not files:
        pytest.skip("no shared corpus")
    a, b = veth
    q = f"t{uuid.uuid4().hex[:8]}"
    with LocalWorkers(redis_url, q, 2) as w:
        ring = _sniff(b, "ring", redis_url, q, "--ring")
        plain = _sniff(b, "plain", redis_url, q, "--no-ring")
        sent = _replay(a, files, pps=5000)
        time.sleep(0.5)
        for proc in (ring, plain):
            code, err = _stop(proc)
            assert code == 0, err
            assert "kernel dropped 0 of" in err and "producer dropped 0" in err, err
        for name in ("ring", "plain"):
            assert follow_for(store, name, 120, w).state is CaptureState.COMPLETE
    got_ring, got_plain = _table(redis_url, "ring"), _table(redis_url, "plain")
    assert got_ring == got_plain
    assert sum(p for p, _ in got_ring.values()) <= sent
    st = CliRunner().invoke(reporter_main, ["summary", "ring", "--json", "--redis-url", redis_url])
    assert st.exit_code == 0 and f'"packets": {sent},' in st.output, (sent, st.output[:300])


def _trace(path: Path, flows: int = 200, per_flow: int = 25) -> None:
    """A classic pcap of ``flows`` TCP/UDP flows, interleaved."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    frames = []
    for i in range(flows):
        ip = IP(src=f"10.{i // 250}.{i % 250}.1", dst="10.200.0.1")
        l4 = UDP(sport=1000 + i, dport=53) if i % 3 == 0 else TCP(sport=1000 + i, dport=443)
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        frames += [bytes(eth / ip / l4 / (b"x" * ((i * 7 + k) % 900))) for k in range(per_flow)]
    frames.sort(key=lambda f: (len(f) * 7919 + f[29]) % 1009)  # interleaved, deterministic
    recs = [(1_700_000_000 + n // 1000, n % 1000, len(f), f) for n, f in enumerate(frames)]
    path.write_bytes(pcap_bytes(recs))


@pytest.mark.timeout(300)
def test_fanout_two_processes_are_exact(
    veth: tuple[str, str], store: Store, redis_url: str, tmp_path: Path
) -> None:
    """``--fanout 2`` (hash): two ring processes feed one capture whose table equals the same
    trace submitted as a file, flow for flow; drops are reported per process."""
    trace = tmp_path / "t.pcap"
    _trace(trace)
    a, b = veth
    q = f"t{uuid.uuid4().hex[:8]}"
    with LocalWorkers(redis_url, q, 2) as w:
        proc = _sniff(b, "fan", redis_url, q, "--fanout", "2")
        sent = _replay(a, [trace], pps=20000)
        time.sleep(0.5)
        code, err = _stop(proc)
        assert code == 0, err
        assert re.search(r"by sniffer process 1: 0 of [\d,]+, 2: 0 of [\d,]+", err), err
        st = follow_for(store, "fan", 120, w)
        assert st.state is CaptureState.COMPLETE
        r = invoke(["submit", str(trace), "--name", "file", "--no-wait", "--redis-url", redis_url,
                    "--queue", q])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert follow_for(store, "file", 120, w).state is CaptureState.COMPLETE
    live, offline = _table(redis_url, "fan"), _table(redis_url, "file")
    assert sum(p for p, _ in live.values()) == sent == 200 * 25
    assert live == offline
    # each process's kernel counters, recorded with the capture: they sum to what was sent
    members = _members_recorded(store, "fan", st)
    assert [(m["state"], m["drops"]) for m in members] == [("ok", 0), ("ok", 0)]
    assert "signal" not in members[0] and "signal" not in members[1]
    assert all(m.packets > 0 for m in st.members)  # the hash spread 200 flows over both
    assert len({m.pid for m in st.members} | {proc.pid}) == 3  # two processes of their own
    assert (st.kernel_packets, st.kernel_drops, st.producer_drops) == (sent, 0, 0)
    text = _status_text(redis_url, "fan")
    assert "kernel dropped 0 of 5,000 packets; producer dropped 0" in text, text
    for m in st.members:
        row = rf"process {m.member} \(pid {m.pid}\)\s*│\s*{m.packets:,} frames, 0 dropped by the kernel"
        assert re.search(row, text), text


def _members_recorded(store: Store, name: str, st: CaptureStatus) -> list[dict[str, object]]:
    """The meta hash's ``members`` field as stored (JSON), checked against the status: one
    entry per sniffer process whose kernel counters sum to the capture's."""
    raw = store.kv.hget(run_of(store, name).meta, "members")
    assert raw is not None
    members: list[dict[str, object]] = json.loads(raw)
    assert [m.model_dump(exclude_none=True) for m in st.members] == members
    assert [m["member"] for m in members] == list(range(1, len(members) + 1))
    assert sum(m.packets for m in st.members) == st.kernel_packets
    assert sum(m.drops for m in st.members) == st.kernel_drops
    return members


def _status_text(redis_url: str, name: str) -> str:
    r = invoke(["status", name, "--redis-url", redis_url])
    assert r.exit_code == 0, r.output
    return r.output


def _children(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids]


@pytest.mark.timeout(300)
def test_fanout_process_killed_is_named_and_the_others_carry_on(
    veth: tuple[str, str], store: Store, redis_url: str, tmp_path: Path
) -> None:
    trace = tmp_path / "t.pcap"
    _trace(trace, flows=100, per_flow=20)
    a, b = veth
    q = f"t{uuid.uuid4().hex[:8]}"
    with LocalWorkers(redis_url, q, 2) as w:
        proc = _sniff(b, "killed", redis_url, q, "--fanout", "2", "--fanout-mode", "lb")
        members = [
            p
            for p in _children(proc.pid)
            if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert len(members) == 2, members
        first = _replay(a, [trace], pps=20000)
        victim = members[-1]
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.5)
        second = _replay(a, [trace], pps=20000)
        time.sleep(0.5)
        code, err = _stop(proc)
        assert code == 1, err
        died = rf"sniffer process \d of 2 \(pid {victim}\) died of signal 9 \(SIGKILL\)"
        assert re.search(died + "; the others carried on", err), err
        st = follow_for(store, "killed", 120, w)
    assert st.state is CaptureState.COMPLETE
    # the survivor kept capturing after the kill (what the killed process held unsent is lost)
    assert first < st.packets <= first + second
    assert any("died of signal 9" in x for x in st.warnings)
    # the killed process is marked died of SIGKILL (with at least the frames it handed over);
    # the survivor ok
    recorded = _members_recorded(store, "killed", st)
    (dead,) = [m for m in recorded if m["state"] == "died"]
    assert (dead["pid"], dead["drops"], dead["signal"]) == (victim, 0, "SIGKILL"), recorded
    assert st.kernel_packets is not None and st.kernel_packets >= st.packets  # none unaccounted
    ok = [m for m in st.members if m.state == "ok"]
    assert len(ok) == 1 and ok[0].signal is None and ok[0].pid != victim
    assert ok[0].packets >= second  # the survivor took every frame sent after the kill
    text = _status_text(redis_url, "killed")
    assert re.search(
        rf"pid {victim}\)\s*│\s*[\d,]+ frames, 0 dropped by the kernel; died of SIGKILL", text
    ), text
