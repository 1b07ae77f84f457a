"""The host scenarios that ``tests/deploy/test_hosts.py`` asserts and ``bench/hosts.py`` times,
run on a :class:`flowherd.lab.fleet.Fleet`: one host for reference, a capture spread over the
worker hosts, a worker host killed, a link that flaps, a stop while Redis is unreachable.
Tables are compared as ``reporter flows --format csv --order rank`` prints them, byte for byte.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowherd.deploy.queueing import make_queue
from flowherd.lab.fleet import Fleet, capture_status, wait_for
from flowherd.lab.hosts import Lan, RedisNode
from flowherd.models.capture import CaptureState


@dataclass
class Outcome:
    """What a scenario found; ``bench/hosts.py`` prints it, the tests assert on it."""

    scenario: str
    state: str = ""
    #: the uni and bi CSVs equal the one-host run's, byte for byte
    identical: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    def line(self) -> str:
        same = f"identical={self.identical} " if self.state else ""
        times = " ".join(f"{k}={v:.1f}s" for k, v in self.seconds.items())
        facts = " ".join(f"{k}={v}" for k, v in self.facts.items())
        return f"{self.scenario:<26} {self.state or '-':<9} {same}{times} {facts}"


def one_host(lan: Lan, pcap: Path, port: int = 6380) -> tuple[bytes, bytes, float]:
    """The reference: Redis, producer, one worker and reporter all on the Redis host (its own
    redis-server on ``port``). Returns the uni and bi CSVs and the seconds to complete."""
    host = lan.hosts["redis"]
    node = RedisNode(host, port)
    node.start()
    fleet = Fleet(lan, node, host, [host], queue="onehost")
    fleet.start_workers()
    try:
        fleet.wait_workers()
        t0 = time.monotonic()
        fleet.submit(pcap, "ref", host)
        st = fleet.follow("ref")
        took = time.monotonic() - t0
        assert st.state is CaptureState.COMPLETE, st
        uni, bi = fleet.tables("ref", host)
    finally:
        proc = fleet.procs[host.role]
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if node.proc is not None:
            node.proc.terminate()
    return uni, bi, took


def spread(fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes], name: str = "spread") -> Outcome:
    """(1) One worker on each host: the tables equal the one-host run's."""
    out = Outcome("spread over hosts")
    fleet.start_workers()
    fleet.wait_workers()
    t0 = time.monotonic()
    fleet.submit(pcap, name)
    st = fleet.follow(name)
    out.seconds["complete"] = time.monotonic() - t0
    out.state = st.state.value
    out.identical = fleet.tables(name) == ref
    fleet.settled(fleet.hosts)
    jobs = {r: sum(w.successful_job_count for w in ws) for r, ws in fleet.live_workers().items()}
    out.facts.update(batches=st.total_batches, packets=st.packets, jobs=jobs)
    return out


def host_killed(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes], name: str = "killed"
) -> Outcome:
    """(2) Every process of one worker host SIGKILLed while it runs a batch."""
    out = Outcome("worker host killed")
    fleet.start_workers()
    fleet.wait_workers()
    victim = fleet.hosts[0]
    fleet.submit(pcap, name)
    jid, _ = fleet.freeze_busy(victim)
    killed = victim.kill()
    t_kill = time.monotonic()
    st = fleet.follow(name)
    out.seconds["complete_after_kill"] = time.monotonic() - t_kill
    out.state = st.state.value
    out.identical = fleet.tables(name) == ref
    out.seconds["settled"] = fleet.settled(fleet.hosts[1:])
    job = make_queue(fleet.conn(), fleet.queue).fetch_job(jid)
    reran = job is not None and job.get_status() == "finished" and (job.retries_left or 0) < 3
    out.facts.update(
        killed_processes=len(killed), killed_batch_reran=reran, left_on_host=len(victim.pids())
    )
    return out


def link_flap(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes], down: float = 15, name: str = "flap"
) -> Outcome:
    """(3) One worker host's link down for ``down`` seconds while it runs a batch, then up."""
    out = Outcome(f"worker link down {down:g}s")
    fleet.start_workers()
    fleet.wait_workers()
    victim = fleet.hosts[0]
    fleet.submit(pcap, name)
    _, pid = fleet.freeze_busy(victim)
    victim.link(up=False)
    os.kill(pid, signal.SIGCONT)
    t_down = time.monotonic()
    conn = fleet.conn()
    while (waited := time.monotonic() - t_down) < down:  # the outage itself; progress meanwhile
        if "complete_while_down" not in out.seconds and (
            capture_status(conn, name).state is CaptureState.COMPLETE
        ):
            out.seconds["complete_while_down"] = waited
        time.sleep(0.1)
    victim.link(up=True)
    t_up = time.monotonic()
    st = fleet.follow(name)
    out.state = st.state.value
    fleet.settled(fleet.hosts)
    out.seconds["settled_after_up"] = time.monotonic() - t_up
    out.identical = fleet.tables(name) == ref
    out.facts["victim_pool_alive"] = fleet.procs[victim.role].poll() is None
    return out


def sigterm_unreachable(
    fleet: Fleet, pcap: Path, ref: tuple[bytes, bytes], busy: bool, name: str = "term"
) -> Outcome:
    """(4) SIGTERM to ``workers run`` while its host's link is down (idle, or mid-batch: then
    another host finishes the capture, exactly)."""
    out = Outcome(f"SIGTERM, link down, {'busy' if busy else 'idle'}")
    victim, other = fleet.hosts[0], fleet.hosts[1]
    fleet.start_workers([victim, other] if busy else [victim])
    fleet.wait_workers([victim, other] if busy else [victim])
    pid = 0
    if busy:
        fleet.submit(pcap, name)
        _, pid = fleet.freeze_busy(victim)
    victim.link(up=False)
    if pid:
        os.kill(pid, signal.SIGCONT)
    pool = fleet.procs[victim.role]
    t0 = time.monotonic()
    pool.send_signal(signal.SIGTERM)
    try:
        wait_for("workers run gone", lambda: pool.poll() is not None and not victim.pids(), 30)
        out.seconds["stopped"] = time.monotonic() - t0
    except AssertionError:
        out.seconds["stopped"] = float("inf")  # still running after 30 s
    out.facts.update(exit_code=pool.poll(), left_on_host=len(victim.pids()))
    victim.kill()
    victim.link(up=True)
    if busy:
        st = fleet.follow(name)
        out.state = st.state.value
        out.identical = fleet.tables(name) == ref
    return out
