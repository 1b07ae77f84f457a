"""Who may touch the queues: Redis with a password, with an ACL user, and over TLS works for
every command and for workers; credentials never show in output, logs, process titles or
--help."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.deploy.connect import connect
from flowherd.producer.cli.main import main as producer_main
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from flowherd.store.captures import status
from flowherd.workers.cli import main as workers_main
from tests.support.helpers import RedisServer, wait_until
from tests.support.pipeline import assert_exact, truth_text, uni_table

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Pa55-w0rd-xyzzy"
CLIS = {"producer": producer_main, "reporter": reporter_main, "workers": workers_main}


def _invoke(cli: click.Group, args: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner(env=env).invoke(cli, args, catch_exceptions=False)


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


class Workers:
    """`workers run -v` as a process, given the URL by environment (as `producer` does)."""

    def __init__(self, url: str, queue: str, log: Path, num: int = 2) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowherd.workers",
                "run",
                "-n",
                str(num),
                "-v",
                "--queue",
                queue,
            ],
            cwd=ROOT,
            env={**os.environ, "FLOWHERD_REDIS_URL": url},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )

    def cmdlines(self) -> list[str]:
        out = []
        for pid in _descendants(self.proc.pid):
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
        return out

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.log.read_text(errors="replace")


def _end_to_end(url: str, tmp_path: Path, secret: str) -> None:
    """Every command against ``url``: submit --wait, status, retry, the reporter, workers;
    nothing that any of them prints, logs or shows as a process title holds ``secret``."""
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=60, seed=51)
    q = ["--redis-url", url, "--queue", "authq"]
    w = Workers(url, "authq", tmp_path / "workers.log")
    outputs = []
    try:

        def started() -> list[str] | None:  # the pool and its 2 workers
            titles = w.cmdlines()
            return titles if len(titles) >= 3 else None

        titles = wait_until(started, 60, "the pool and its 2 worker processes")
        res = _invoke(producer_main, ["submit", str(path), "--wait", "-v", *q])
        outputs.append(res.output)
        assert res.exit_code == 0, res.output
        assert "Top 10 flows by bytes" in res.output
        for cli, args in (
            (producer_main, ["status", "t"]),
            (reporter_main, ["captures"]),
            (reporter_main, ["top", "t", "-n", "3"]),
            (reporter_main, ["summary", "t", "--json"]),
        ):
            res = _invoke(cli, [*args, *q])
            outputs.append(res.output)
            assert res.exit_code == 0, res.output
        res = _invoke(producer_main, ["retry", "t", *q])
        outputs.append(res.output)
        assert res.exit_code == 1 and "is complete: nothing to retry" in res.output
    finally:
        log = w.stop()
    store = Store.single(connect(url))
    st = status(store, "t")
    assert_exact(store, "t", st, truth)
    assert uni_table(store, "t") == truth_text(truth)
    assert "batch_merged" in log  # the workers did the work, and logged it
    for text in [*outputs, log, *titles]:
        assert secret not in text


def test_password(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "r", password=SECRET)
    srv.start()
    try:
        _end_to_end(srv.url, tmp_path, SECRET)
        wrong = srv.url.replace(SECRET, "wrong-guess")
        res = _invoke(producer_main, ["status", "t", "--redis-url", wrong])
        assert res.exit_code == 1 and "wrong-guess" not in res.output
        assert res.output.startswith("error: Redis at redis://***@127.0.0.1:")
        assert "refused the connection" in res.output and len(res.output.splitlines()) == 1
        res = _invoke(
            producer_main, ["status", "t", "--redis-url", srv.url.replace(f":{SECRET}@", "")]
        )
        assert res.exit_code == 1 and "refused the connection" in res.output
    finally:
        srv.kill()


def test_acl_user(tmp_path: Path) -> None:
    """A user limited to flowherd's and RQ's keys and channels, without the dangerous
    commands (INFO given back for the producer's memory check); the default user is off."""
    srv = RedisServer(tmp_path / "r", password=SECRET, user="flowherd")
    srv.start()
    try:
        admin = Redis.from_url(srv.admin_url)
        admin.execute_command(
            "ACL", "SETUSER", "flowherd", "on", f">{SECRET}", "~fh:*", "~rq:*", "&rq:*",
            "+@all", "-@dangerous", "+info",
        )  # fmt: skip
        admin.execute_command("ACL", "SETUSER", "default", "off")
        _end_to_end(srv.url, tmp_path, SECRET)
        res = _invoke(producer_main, ["status", "t", "--redis-url", srv.admin_url])
        assert res.exit_code == 1 and "refused the connection" in res.output
    finally:
        srv.kill()


def _tls_files(d: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    d.mkdir()
    run = {"cwd": d, "check": True, "capture_output": True, "timeout": 60}
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
         "-out", "ca.pem", "-days", "1", "-subj", "/CN=flowherd-test-ca"], **run,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key",
         "-out", "srv.csr", "-subj", "/CN=127.0.0.1"], **run,
    )  # fmt: skip
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "srv.pem", "-days", "1", "-extfile", "ext"], **run,
    )  # fmt: skip
    return d / "srv.pem", d / "srv.key", d / "ca.pem"


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    exe = shutil.which("redis-server")
    if shutil.which("openssl") is None or exe is None:
        pytest.skip("openssl or redis-server missing")
    files = _tls_files(tmp_path / "tls")
    probe = subprocess.run(
        [exe, "--port", "0", "--tls-port", "0", "--tls-cert-file", str(files[0]),
         "--tls-key-file", str(files[1]), "--test-memory", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if "not supported" in (probe.stdout + probe.stderr).lower():
        pytest.skip("this redis-server was built without TLS")
    yield files


def test_tls_with_password(tmp_path: Path, tls_files: tuple[Path, Path, Path]) -> None:
    srv = RedisServer(tmp_path / "r", password=SECRET, tls=tls_files)
    srv.start()
    try:
        assert srv.url.startswith("rediss://")
        _end_to_end(srv.url, tmp_path, SECRET)
        plain = f"redis://:{SECRET}@127.0.0.1:{srv.port}/0"
        os.environ["FLOWHERD_CONNECT_TIMEOUT"] = "1"
        try:
            res = _invoke(producer_main, ["status", "t", "--redis-url", plain])
        finally:
            del os.environ["FLOWHERD_CONNECT_TIMEOUT"]
        assert res.exit_code == 1 and SECRET not in res.output
    finally:
        srv.kill()


def test_help_never_shows_credentials() -> None:
    env = {"FLOWHERD_REDIS_URL": f"redis://user:{SECRET}@queue-host:6379/0"}
    for name, cli in CLIS.items():
        ctx = click.Context(cli)
        commands = [[]] + [[c] for c in cli.list_commands(ctx)]
        for sub in commands:
            res = _invoke(cli, [*sub, "--help"], env=env)
            assert res.exit_code == 0, (name, sub, res.output)
            assert SECRET not in res.output, (name, sub)
