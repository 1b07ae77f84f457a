"""Hosts as Linux network namespaces on one bridge: real TCP between flowherd's processes, links
that can be pulled, hosts whose every process can be killed. Needs root and iproute2.

    with Lan(workdir) as lan:
        node = RedisNode(lan.add_host("redis"), password="s3cret")  # several per host: ports
        node.start()
        w = lan.add_host("worker1")
        w.popen([script("workers"), "run", "-n", "1"], env={"FLOWHERD_REDIS_URL": node.url})
        w.link(up=False)  # its cable pulled: TCP to it hangs, nothing is refused
        w.kill()          # SIGKILL every process of the host

Every run has its own names (namespaces ``flowherd-<pid>-<tag>-<role>``, bridge ``fhb<tag>``,
veths ``fh<tag><n>``) and a random private /24 that nothing on this machine routes, so parallel
runs never collide. The controlling process stays in the root namespace and reaches every host
through the bridge's address (``.1``). :meth:`Lan.close` (the context manager's exit, and a
finaliser at interpreter exit) kills every process of every host and deletes the namespaces and
the bridge; :func:`sweep_stale` removes what a run killed by SIGKILL left behind. Processes are
started with PR_SET_PDEATHSIG, so they are sent SIGTERM if the controlling process dies.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from flowherd.deploy.local import die_with_parent

_NS = re.compile(r"^flowherd-(\d+)-([0-9a-f]{6})-")


def available() -> str | None:
    """Why hosts cannot be built here (None when they can)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux (network namespaces, a bridge)"
    for exe in ("ip", "redis-server"):
        if shutil.which(exe) is None:
            return f"needs {exe}"
    return None


def script(name: str) -> str:
    """The console script ``name`` (workers, producer, reporter) of this Python environment."""
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name!r} not found: is flowherd installed?")
    return found


def ip(*args: str, check: bool = True) -> str:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def _ns_pids(ns: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", ns, check=False).split()]


def _kill_ns(ns: str, sig: int = signal.SIGKILL, wait: float = 5.0) -> None:
    """Send ``sig`` to every process of ``ns`` until none is left (SIGKILL) or once."""
    deadline = time.monotonic() + wait
    while pids := _ns_pids(ns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig != signal.SIGKILL or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _teardown(bridge: str, namespaces: list[str], veths: list[str]) -> None:
    for ns in namespaces:
        _kill_ns(ns)
        ip("netns", "del", ns, check=False)
    for dev in [*veths, bridge]:
        ip("link", "del", dev, check=False)  # gone with their namespace, normally


def sweep_stale() -> list[str]:
    """Delete the namespaces and bridges of runs whose process is gone; return their names."""
    swept = []
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NS.match(name)
        if not m or Path(f"/proc/{m[1]}").exists():
            continue
        _teardown(f"fhb{m[2]}", [name], [])
        swept.append(name)
    return swept


def _pick_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that overlaps no address or route of this machine."""
    text = ip("-4", "-o", "addr") + ip("-4", "route", "show", "table", "all")
    used = [
        ipaddress.ip_network(m, strict=False)
        for m in re.findall(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", text)
    ]
    rng = random.SystemRandom()
    for _ in range(1000):
        net = ipaddress.IPv4Network(f"10.{rng.randrange(64, 255)}.{rng.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free private /24 found")


@dataclass
class Host:
    """One host: a network namespace with one link (``eth0``) on the LAN's bridge."""

    lan: Lan
    role: str
    ns: str
    veth: str  # the bridge's end of the link
    addr: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def popen(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host (its own session), output to a log file in the LAN's
        log directory. ``env`` is added to this process's environment: secrets go there."""
        n = len(self.lan.logs)
        log = self.lan.logdir / f"{n:02d}-{self.role}-{Path(argv[0]).name}.log"
        self.lan.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                self.argv(argv),
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.procs.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` on this host to the end; its output captured."""
        return subprocess.run(
            self.argv(argv),
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    def pids(self) -> list[int]:
        """Every process living on this host."""
        return _ns_pids(self.ns)

    def kill(self, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to every process of the host (SIGKILL: until none is left)."""
        pids = self.pids()
        _kill_ns(self.ns, sig)
        for p in self.procs:
            if sig == signal.SIGKILL:
                p.wait(10)
        return pids

    def link(self, up: bool) -> None:
        """Plug (``up``) or pull this host's cable: the bridge's end of its link goes up or
        down, so its packets are dropped silently (no RST, no ICMP), as when a switch port or
        a host's network dies."""
        ip("link", "set", self.veth, "up" if up else "down")


class Lan:
    """A Linux bridge with hosts on it, in a private /24 (the bridge, for this process, is .1)."""

    def __init__(self, workdir: Path) -> None:
        self.tag = secrets.token_hex(3)
        #: logs of every process, and the data of Redis nodes: new for every LAN
        self.logdir = workdir / f"lan-{self.tag}"
        self.logdir.mkdir(parents=True)
        self.logs: list[Path] = []
        self.bridge = f"fhb{self.tag}"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._veths: list[str] = []
        self._close = weakref.finalize(self, _teardown, self.bridge, self._namespaces, self._veths)
        sweep_stale()
        self.subnet = _pick_subnet()
        self.gateway = str(self.subnet[1])
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, role: str) -> Host:
        n = len(self.hosts)
        ns = f"flowherd-{os.getpid()}-{self.tag}-{role}"
        veth = f"fh{self.tag}{n}"
        addr = str(self.subnet[10 + n])
        ip("netns", "add", ns)
        self._namespaces.append(ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._veths.append(veth)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        host = Host(self, role, ns, veth, addr)
        self.hosts[role] = host
        return host

    def close(self) -> None:
        """Kill every process of every host, delete the namespaces and the bridge (again: a
        no-op)."""
        for host in self.hosts.values():
            host.kill()
        self._close()

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisNode:
    """A redis-server on ``host``, on its own ``port`` and data directory, with a password
    (``requirepass``, written to a config file that only the owner reads, never on a command
    line) and the persistence of ``deploy/redis.conf``. Start several on one host (other ports)
    for several servers, e.g. the nodes of a Redis Cluster (``extra`` directives)."""

    def __init__(
        self, host: Host, port: int = 6379, password: str | None = None, extra: Sequence[str] = ()
    ) -> None:
        self.host, self.port = host, port
        self.password = password or secrets.token_hex(12)
        self.dir = host.lan.logdir / f"redis-{host.role}-{port}"
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host.addr}:{self.port}/0"

    def client(self, **kw: object) -> Redis:
        return Redis.from_url(self.url, **kw)

    def start(self, timeout: float = 15) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        conf.touch(mode=0o600)
        lines = [
            f"bind {self.host.addr}",
            f"port {self.port}",
            f"requirepass {self.password}",
            f"dir {self.dir}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            "loglevel warning",
            *self.extra,
        ]
        conf.write_text("\n".join(lines) + "\n")
        self.proc = self.host.popen([shutil.which("redis-server") or "redis-server", str(conf)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.host.role} exited: see {self.dir}")
            with contextlib.suppress(RedisError, OSError):
                c = self.client(socket_timeout=1, socket_connect_timeout=1)
                c.ping()
                c.close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.host.role} did not come up")
