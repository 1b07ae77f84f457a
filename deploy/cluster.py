"""A local Redis Cluster for tests, benchmarks and trying the cluster store on one host.

:func:`start_cluster` starts ``masters`` (and ``replicas`` per master) ``redis-server
--cluster-enabled yes`` processes on free loopback ports under one folder, joins them with
``redis-cli --cluster create`` and waits until every slot is served. Nothing here is used by
the producer, workers or reporter: they reach any cluster through ``redis+cluster://`` URLs.

    python -m flowherd.deploy.cluster /tmp/fh-cluster --masters 3 --replicas 1
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from flowherd.models.errors import BackendError

# Client ports come from 20000-22767 and bus ports (port + 10000) from 30000-32767: both below
# the kernel's ephemeral range (32768 up), so no outgoing connection can take one between the
# check here and the node's bind.
_PORT_LOW, _PORT_HIGH = 20000, 22767


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: frozenset[int] | set[int] = frozenset()) -> int:
    """A free port whose cluster bus port (port + 10000) is free too, neither in ``taken``."""
    rng = random.Random()
    for _ in range(10_000):
        port = rng.randint(_PORT_LOW, _PORT_HIGH)
        if port in taken or port + 10000 in taken:
            continue
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise BackendError("local cluster: no free port pair in 20000-22767 (+10000)")


@dataclass
class LocalCluster:
    """The processes of a local cluster; :meth:`stop` ends them."""

    folder: Path
    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    password: str | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node."""
        cred = f":{self.password}@" if self.password else ""
        nodes = ",".join(f"{self.host}:{p}" for p in self.ports)
        return f"redis+cluster://{cred}{nodes}"

    def client(self, port: int) -> Redis:
        return Redis(host=self.host, port=port, password=self.password, socket_timeout=5)

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters now."""
        out = []
        for p, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            try:
                if self.client(p).info("replication").get("role") == "master":
                    out.append(p)
            except Exception:  # a node being killed
                continue
        return sorted(out)

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crashed host)."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _start_node(
    folder: Path, port: int, password: str | None, host: str
) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise BackendError("redis-server is not installed: run scripts/install.sh")
    d = folder / str(port)
    d.mkdir(parents=True, exist_ok=True)
    args = [
        exe,
        "--port",
        str(port),
        "--bind",
        host,
        "--dir",
        str(d),
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
        "--save",
        "",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
        "--logfile",
        str(d / "redis.log"),
    ]
    if password:
        args += ["--requirepass", password, "--masterauth", password]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise BackendError(f"local cluster: {what} after {timeout:g}s")


def _start_answering(
    cl: LocalCluster, port: int, password: str | None, host: str, timeout: float
) -> int:
    """Start one node and wait until it answers; a node that exits at start (its port taken
    since it was chosen) is started again on another port. Returns the port it serves."""
    for _ in range(5):
        proc = cl.procs[port] = _start_node(cl.folder, port, password, host)
        deadline = time.monotonic() + timeout
        probe = Redis(
            host=host,
            port=port,
            password=password,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if probe.ping():
                    probe.close()
                    return port
            except Exception:
                pass
            time.sleep(0.05)
        probe.close()
        if proc.poll() is None:
            raise BackendError(f"local cluster: node {port} did not answer after {timeout:g}s")
        del cl.procs[port]
        taken = {q + d for q in cl.ports for d in (0, 10000)}
        port = _free_port(taken)
    raise BackendError("local cluster: five nodes in a row exited at start; see redis.log")


def start_cluster(
    folder: Path,
    masters: int = 3,
    replicas: int = 0,
    password: str | None = None,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
) -> LocalCluster:
    """Start and join a cluster of ``masters`` x (1 + ``replicas``) nodes; raise
    :class:`BackendError` when it does not come up within ``timeout`` seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    ports: list[int] = []
    for _ in range(masters * (1 + replicas)):
        ports.append(_free_port({q + d for q in ports for d in (0, 10000)}))
    cl = LocalCluster(folder, ports, password=password, host=host)
    try:
        for i, p in enumerate(ports):
            ports[i] = _start_answering(cl, p, password, host, timeout)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise BackendError("redis-cli is not installed: run scripts/install.sh")
        cmd = [cli, "--cluster", "create", *[f"{host}:{p}" for p in ports]]
        cmd += ["--cluster-replicas", str(replicas), "--cluster-yes"]
        env = {"REDISCLI_AUTH": password} if password else {}
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if res.returncode != 0:
            raise BackendError(f"redis-cli --cluster create failed: {res.stdout[-500:]}")
        _wait(
            lambda: all(cl.client(p).cluster("info")["cluster_state"] == "ok" for p in ports),
            timeout,
            "the cluster did not reach state ok",
        )
        if replicas:
            _wait(
                lambda: (
                    len(cl.masters()) == masters
                    and all(
                        cl.client(p).info("replication").get("master_link_status") == "up"
                        for p in ports
                        if p not in cl.masters()
                    )
                ),
                timeout,
                "the replicas did not sync",
            )
    except BaseException:
        cl.stop()
        raise
    return cl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start a local Redis Cluster until interrupted.")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--masters", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=0)
    ap.add_argument("--password-file", type=Path, help="a file holding the nodes' password")
    a = ap.parse_args(argv)
    pw = a.password_file.read_text().strip() if a.password_file else None
    try:
        cl = start_cluster(a.folder, a.masters, a.replicas, pw)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(cl.url.replace(f":{pw}@", ":***@") if pw else cl.url, flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cl.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
