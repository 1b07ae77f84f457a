"""``producer sniff`` on a real veth pair: exact per-flow counts, clean stops, clear errors.

Each capture test creates its own veth pair (IPv6 disabled on it, so the kernel sends nothing of
its own), runs ``producer sniff`` as a subprocess on one end, sends known frames from the other
with scapy, and reads the tables back through real RQ workers. Needs root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.deploy.local import local_url, stop_local_redis
from flowherd.models.batch import decode_batch
from flowherd.models.capture import CaptureInfo, CaptureState
from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import PayloadKeys
from flowherd.producer.cli.main import main
from flowherd.producer.cli.options import parse_duration
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from tests.conftest import ROOT
from tests.support.pipeline import uni_table

pytestmark = [pytest.mark.redis]  # the capture tests add root, and e2e when workers run
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (veth pairs)"
)

Flow = tuple[str, str, int, int, int]


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """A fresh veth pair (a, b), up, with IPv6 off (no router solicitations or MLD)."""
    tag = uuid.uuid4().hex[:8]
    a, b = f"fh{tag}a", f"fh{tag}b"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        for n in (a, b):
            Path(f"/proc/sys/net/ipv6/conf/{n}/disable_ipv6").write_text("1\n")
            subprocess.run(["ip", "link", "set", n, "up"], check=True)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)


def _frames(seed: int = 3) -> list[tuple[Flow, bytes]]:
    """Several flows (TCP/UDP, IPv4/IPv6, one 802.1Q-tagged, both directions of one), varied
    sizes, interleaved: (uni flow key, frame) pairs in sending order."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    rnd = random.Random(seed)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    flows: list[tuple[Flow, object]] = [
        (
            ("10.1.0.1", "10.1.0.2", 6, 40000, 80),
            eth / IP(src="10.1.0.1", dst="10.1.0.2") / TCP(sport=40000, dport=80),
        ),
        (
            ("10.1.0.2", "10.1.0.1", 6, 80, 40000),
            eth / IP(src="10.1.0.2", dst="10.1.0.1") / TCP(sport=80, dport=40000),
        ),
        (
            ("10.1.0.3", "10.1.0.4", 17, 5353, 53),
            eth / IP(src="10.1.0.3", dst="10.1.0.4") / UDP(sport=5353, dport=53),
        ),
        (
            ("fd00::1", "fd00::2", 6, 40001, 443),
            eth / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=40001, dport=443),
        ),
        (
            ("fd00::3", "fd00::4", 17, 4000, 4001),
            eth / IPv6(src="fd00::3", dst="fd00::4") / UDP(sport=4000, dport=4001),
        ),
        (
            ("10.2.0.1", "10.2.0.2", 17, 7000, 7001),
            eth / Dot1Q(vlan=7) / IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=7000, dport=7001),
        ),
    ]
    frames: list[tuple[Flow, bytes]] = []
    for key, hdr in flows:
        for _ in range(rnd.randint(30, 70)):
            frames.append((key, bytes(hdr / (b"x" * rnd.randint(0, 1400)))))  # type: ignore[operator]
    rnd.shuffle(frames)
    return frames


def _expected(frames: list[tuple[Flow, bytes]]) -> dict[Flow, list[int]]:
    """The uni table of ``frames``: packets and wire bytes per flow."""
    out: dict[Flow, list[int]] = {}
    for key, f in frames:
        v = out.setdefault(key, [0, 0])
        v[0] += 1
        v[1] += len(f)
    return out


def _start(*args: str, new_session: bool = False) -> subprocess.Popen[str]:
    """``producer sniff ARGS`` as a subprocess; returns once it listens (its socket is bound)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowherd.producer", "sniff", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("listening on"):
            proc.args = [*proc.args, line]  # the line that says how frames are read
            return proc
    proc.wait(10)
    pytest.fail(f"producer sniff did not start (rc {proc.returncode}): {''.join(seen)}")


def _raw_sender(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    return s


def _meta(store: Store, name: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = store.kv.hgetall(run_of(store, name).meta)
    return {k.decode(): v.decode() for k, v in raw.items()}


@pytest.mark.root
@pytest.mark.e2e
@needs_root
@pytest.mark.timeout(90)
def test_counts_per_flow_equal_what_was_sent(
    store: Store, redis_url: str, veth: tuple[str, str]
) -> None:
    a, b = veth
    pairs = _frames()
    frames, expected = [f for _, f in pairs], _expected(pairs)
    q = f"t{uuid.uuid4().hex[:8]}"
    with LocalWorkers(redis_url, q, 2) as w:
        proc = _start(
            *f"-i {a} --redis-url {redis_url} --queue {q} --name live --count {len(frames)} --duration 60s --batch-packets 50 --flush-interval 200ms".split()
        )
        t0 = time.time_ns()
        with _raw_sender(b) as s:
            for f in frames:
                s.send(f)
        out, err = proc.communicate(timeout=30)
        t1 = time.time_ns()
        assert proc.returncode == 0, err
        assert f"captured {len(frames)} packets" in out
        st = follow(store, "live", poll=0.05, check=w.check)
    assert st.state is CaptureState.COMPLETE, st
    assert uni_table(store, "live") == expected
    assert st.packets == len(frames) and st.bytes == sum(map(len, frames))
    assert st.total_batches == st.batches_done and st.batches_done > 1
    assert st.first_ns is not None and st.last_ns is not None
    assert t0 <= st.first_ns <= st.last_ns <= t1  # kernel timestamps, integer ns
    meta = _meta(store, "live")
    assert (meta["kernel_packets"], meta["kernel_drops"], meta["producer_drops"]) == (
        str(len(frames)),
        "0",
        "0",
    )
    assert f"kernel dropped 0 of {len(frames):,} packets; producer dropped 0" in st.warnings


@pytest.mark.root
@pytest.mark.e2e
@needs_root
@pytest.mark.timeout(90)
def test_sigint_mid_traffic_loses_nothing_captured(
    store: Store, redis_url: str, veth: tuple[str, str]
) -> None:
    """SIGINT while frames still arrive: the capture holds exactly the frames sent up to the
    stop (a prefix of the sent sequence), as many as the kernel delivered to the socket."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    a, b = veth
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    cycle = [
        (
            (f"10.3.0.{i}", "10.3.0.100", 17, 1000 + i, 9),
            bytes(
                eth
                / IP(src=f"10.3.0.{i}", dst="10.3.0.100")
                / UDP(sport=1000 + i, dport=9)
                / (b"y" * (i * 97 % 1200))
            ),
        )
        for i in range(1, 8)
    ]
    noise = bytes(eth / IP(src="10.3.0.1", dst="10.3.0.100", proto=0) / (b"\x00" * 20))
    q = f"t{uuid.uuid4().hex[:8]}"
    sent: list[tuple[Flow, bytes]] = []
    with LocalWorkers(redis_url, q, 2) as w:
        proc = _start(
            *f"-i {a} --redis-url {redis_url} --queue {q} --name stop --duration 60s --flush-interval 200ms".split(),
            "--filter",
            "udp",
        )
        before_stop = 0
        with _raw_sender(b) as s:
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                for key, f in cycle:
                    s.send(f)
                    sent.append((key, f))
                s.send(noise)  # not UDP: the filter drops it
                if len(sent) == 7000:  # right after a burst: a backlog waits in the socket
                    before_stop = len(sent)
                    proc.send_signal(signal.SIGINT)
                if not 1400 <= len(sent) < 7000:  # paced, except for that burst
                    time.sleep(0.0005)  # the scenario: traffic at a rate the kernel keeps
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        st = follow(store, "stop", poll=0.05, check=w.check)
    assert st.state is CaptureState.COMPLETE, st
    meta = _meta(store, "stop")
    assert meta["kernel_drops"] == "0" and meta["producer_drops"] == "0", meta
    assert st.packets == int(meta["kernel_packets"])  # every frame the kernel delivered
    assert before_stop <= st.packets < len(sent), (before_stop, len(sent))  # mid-traffic
    assert uni_table(store, "stop") == _expected(sent[: st.packets])


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.e2e
@needs_root
@pytest.mark.timeout(120)
def test_embedded_ctrl_c_quiet_link_and_windows(veth: tuple[str, str], tmp_path: Path) -> None:
    """Private Redis and local workers; a quiet link still gets its batch queued within the flush
    interval; Ctrl-C to the whole process group (as a terminal sends it) still completes the
    capture and prints the report; --window/--keep reach the run."""
    a, b = veth
    pairs = _frames(seed=5)[:20]
    home = Path(os.environ["FLOWHERD_HOME"])
    proc = _start(
        *f"-i {a} --name quiet -w 1 --window 1s --keep 5 --flush-interval 0.2".split(),
        new_session=True,
    )
    try:
        store = Store.single(Redis.from_url(local_url(home)))
        with _raw_sender(b) as s:
            for _, f in pairs:
                s.send(f)
        deadline = time.monotonic() + 10
        while True:  # default batches hold 2,000 frames: only the flush interval queues these
            with contextlib.suppress(CaptureStateError):
                if store.kv.hget(run_of(store, "quiet").meta, "enqueued") not in (None, b"0"):
                    break
            assert time.monotonic() < deadline, "no batch queued within the flush interval"
            time.sleep(0.05)
        assert proc.poll() is None  # still sniffing
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert "10.1.0.1" in out and "Top" in out, out
        info = CaptureInfo.model_validate_json(store.kv.get(run_of(store, "quiet").info) or b"")
        assert (info.window_ns, info.keep_windows, info.sources) == (10**9, 5, [f"live:{a}"])
        st = follow(store, "quiet", poll=0.05)
        assert st.state is CaptureState.COMPLETE and st.packets == 20
        assert uni_table(store, "quiet") == _expected(pairs)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop_local_redis(home)


@pytest.mark.root
@needs_root
@pytest.mark.timeout(30)
@pytest.mark.parametrize(("reader", "seen"), [("--ring", 10), ("--no-ring", 20)])
def test_loopback_forwards_each_frame_once(
    store: Store, redis_url: str, reader: str, seen: int
) -> None:
    """On lo the kernel shows every frame twice (out, then in); like libpcap, one is kept: the
    ring asks the kernel to leave outgoing copies out (PACKET_IGNORE_OUTGOING, so it counts
    10), the recvmsg socket skips them itself (the kernel counts 20). The batch holds each
    datagram's exact bytes, wire length, link type and a ns timestamp."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    q = f"t{uuid.uuid4().hex[:8]}"
    proc = _start(
        *f"-i lo --count 10 --duration 20s --no-wait --redis-url {redis_url} --queue {q} --name lo".split(),
        "--filter",
        f"udp dst port {port}",
        reader,
    )
    payloads = [bytes([65 + i]) * (i * 37) for i in range(10)]
    t0 = time.time_ns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for p in payloads:
            tx.sendto(p, ("127.0.0.1", port))
    out, err = proc.communicate(timeout=20)
    rx.close()
    assert proc.returncode == 0, err
    assert out == "captured 10 packets in 1 batches as 'lo'\n"
    assert f"kernel dropped 0 of {seen} packets; producer dropped 0" in err
    assert ("TPACKET_V3 ring" in proc.args[-1]) == (reader == "--ring")
    # either reader is one process: the meta hash lists it as the only member
    members = json.loads(_meta(store, "lo")["members"])
    assert members == [{"member": 1, "pid": proc.pid, "packets": seen, "drops": 0, "state": "ok"}]
    payload = store.queue.get(PayloadKeys(run_of(store, "lo").run).batch(0))
    assert isinstance(payload, bytes)
    recs = list(decode_batch(payload))
    assert [r.data[42:] for r in recs] == payloads
    assert (
        [r.wire_len for r in recs] == [len(r.data) for r in recs] == [42 + len(p) for p in payloads]
    )
    assert {r.linktype for r in recs} == {1}
    assert t0 <= recs[0].ts_ns <= recs[-1].ts_ns <= time.time_ns()


def test_errors_are_one_line() -> None:
    r = CliRunner().invoke(main, ["sniff", "-i", "fhnosuch0"])
    assert r.exit_code == 1
    assert r.stderr == "error: fhnosuch0: no such network interface (see `ip link`)\n"
    r = CliRunner().invoke(main, ["sniff", "-i", "lo", "-f", "tcp and and"])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: lo: invalid filter 'tcp and and': ")
    assert r.stderr.count("\n") == 1 and "syntax error" in r.stderr
    r = CliRunner().invoke(main, ["sniff", "-i", "lo", "--duration", "soon"])
    assert r.exit_code == 2 and "'soon' is not a duration" in r.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_without_privilege_says_so() -> None:
    cmd = [sys.executable, "-m", "flowherd.producer", "sniff", "-i", "lo"]
    if os.geteuid() == 0:  # root without CAP_NET_RAW
        cmd = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", *cmd]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr == "error: lo: capturing needs root or the CAP_NET_RAW capability (try sudo)\n"


def test_durations() -> None:
    assert [parse_duration(t) for t in ("1.5", "500ms", "30s", "10m", "2h", ".5s")] == [
        1.5,
        0.5,
        30.0,
        600.0,
        7200.0,
        0.5,
    ]
    for bad in ("", "0", "-1s", "5x", "1 day", "inf", "1e3", "9" * 400, "\u0663s", "0.1ns"):
        with pytest.raises(ValueError):
            parse_duration(bad)
