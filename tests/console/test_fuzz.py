"""Fuzzing every option of every command, every FLOWHERD_* setting and every web route and
parameter with the values a careless or hostile user types (issue 19).

Every command of ``producer``, ``workers`` and ``reporter`` (the click tree, walked) gets each of
its options and arguments in turn set to a nasty value, the others left as a working command
line has them (a real capture in the test Redis, a real trace file). The rules:

* exit status 0, 1 or 2, never a traceback or an exception escaping click;
* a failure (1 or 2) says so in at most one ``error:`` line on stderr, and nothing else on
  stderr for a usage error (2);
* each invocation ends within :data:`BOUND_S` seconds.

Every setting is fed the same values through the environment of ``reporter captures`` and
``producer submit``; every route of ``reporter serve`` (a real server process) gets each query
parameter, and its path parts, set to them: 2xx or 4xx, never 5xx, while Redis is up.

The fast core (``make test-core``) feeds :data:`CORE` (four values) to each; ``-m fuzz`` feeds
:data:`ALL` plus hypothesis-generated text (:data:`EXAMPLES` per option).
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from redis import Redis

from flowherd.deploy.local import stop_local_redis
from flowherd.models.settings import Settings
from flowherd.producer.cli.main import main as producer_main
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from flowherd.workers.cli import main as workers_main
from tests.support.inproc import merge_here
from tests.support.pipeline import settings_for
from tests.support.webserve import Server, get

pytestmark = [pytest.mark.redis, pytest.mark.timeout(600)]

NAME = "fuzzed"
BOUND_S = 20.0
UNREACHABLE = "redis://127.0.0.1:1/0"
#: the nastiest values: what the fast core feeds every option, setting and parameter
CORE = ["inf", "9" * 5000, "\u0663", "a\nb\x00\x1b[31m"]
#: and more of the same kind, under ``-m fuzz``
ALL = [
    *CORE,
    "",
    "nan",
    "-1",
    "1e400",
    "0.0000000001",
    "(" * 400 + "tcp" + ")" * 400,
    "x" * 10_000,
    "-",
    "0",
    "1",
    "-inf",
    str(2**63),
    str(2**64),
    "1e-400",
    "1ns",
    "٣s",
    "١٢٣",
    "½",
    "not " * 1000 + "tcp",
    "!" * 2000 + "tcp",
    "port " + "9" * 5000,
    "proto " + "0" * 4401,
    "\t",
    " ",
    "redis//:pw@127.0.0.1:1/0",
    "%s%n{}",
    "../../etc/passwd",
    "é" * 300,
]
EXAMPLES = 25
#: commands that would run until interrupted: they get an unreachable Redis, so that they stop
#: (exit 1) once their options are read
ENDLESS = {("reporter", "serve"), ("reporter", "watch"), ("workers", "run"), ("producer", "sniff")}
#: commands left out: they start or stop a private redis-server process of their own
LEFT_OUT = {("workers", "local-redis")}
ROOTS = {"producer": producer_main, "workers": workers_main, "reporter": reporter_main}


def commands() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every leaf command of the three CLIs, with its path (``("reporter", "top")``)."""

    def walk(
        path: tuple[str, ...], cmd: click.Command
    ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk((*path, name), sub)
        else:
            yield path, cmd

    for root, group in ROOTS.items():
        for path, cmd in walk((root,), group):
            if path not in LEFT_OUT:
                yield path, cmd


def params_of(cmd: click.Command) -> list[click.Parameter]:
    """The parameters that take a value (not flags, --help or --version)."""
    out = []
    for p in cmd.params:
        if isinstance(p, click.Option) and (p.is_flag or p.count or p.name in ("help", "version")):
            continue
        out.append(p)
    return out


CASES = [(path, p.name) for path, cmd in commands() for p in params_of(cmd)]


class Env:
    def __init__(self, redis_url: str, trace: Path, tmp: Path) -> None:
        self.redis_url, self.trace, self.tmp = redis_url, trace, tmp


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Env:
    """A capture ``fuzzed`` with 20 s windows, merged in this process, and its trace."""
    tmp = tmp_path_factory.mktemp("fuzz")
    sample = tmp / "sample.pcap"
    write_sample(sample, flows=40, seed=9)
    store = Store.single(Redis.from_url(redis_url))
    st_ = merge_here(store, settings_for(redis_url, window=20, queue="fuzzq"), [str(sample)], NAME)
    assert st_.packets > 0
    # what submit reads: one record, so that no --batch-packets or --max-in-flight can make it
    # wait for workers that this test does not run
    trace = tmp / "one.pcap"
    data = sample.read_bytes()
    trace.write_bytes(data[: 40 + struct.unpack_from("<I", data, 32)[0]])
    return Env(redis_url, trace, tmp)


def _positional(p: click.Argument, e: Env) -> list[str]:
    name = (p.name or "").lower()
    if name in ("files", "sources", "paths", "file"):
        return [str(e.trace)]
    if name in ("output", "path"):
        return ["out.bin"]
    return [NAME]


def argv(path: tuple[str, ...], cmd: click.Command, e: Env, fuzzed: str, value: str) -> list[str]:
    """A working command line for ``cmd`` with parameter ``fuzzed`` set to ``value``."""
    args: list[str] = list(path[1:])
    names = {p.name for p in cmd.params}
    for p in cmd.params:
        if not isinstance(p, click.Argument):
            continue
        if p.name == fuzzed:
            args += [value]
        else:
            args += _positional(p, e)
    url = UNREACHABLE if path in ENDLESS else e.redis_url
    if "redis_url" in names and fuzzed != "redis_url":
        args += ["--redis-url", url]
    if path == ("workers", "run") and fuzzed != "burst":
        args += ["--burst"]
    if path == ("producer", "submit"):
        args += ["--no-wait", "--replace"]
    if path[-1] == "export" and fuzzed not in ("output", "collector"):
        args += ["-o", "-", "--format", "csv"] if fuzzed != "fmt" else ["-o", "-"]
    if path[-1] == "hist" and fuzzed not in ("output",):
        args += ["-o", "h.svg"]
    if path[-1] == "stats" and fuzzed != "key_text":
        args += ["--key", "ip"]
    if path[-1] == "sniff" and fuzzed != "iface":
        args += ["-i", "nosuchif0"]
    if path in ENDLESS and fuzzed == "redis_url" and not value.strip():
        value = UNREACHABLE  # empty: the private Redis, and the command would run on
    opt = next((p for p in cmd.params if p.name == fuzzed and isinstance(p, click.Option)), None)
    if opt is not None:
        if (p := value) and p.startswith("/") and fuzzed not in ("where",):
            value = "." + value  # files land in the test's folder
        args += [opt.opts[0], value]
    return args


def check(root: str, args: list[str], env_vars: dict[str, str] | None = None) -> None:
    """The rules of the module docstring, for one invocation."""
    t0 = time.monotonic()
    if os.environ.get("FUZZ_LOG"):
        with open(os.environ["FUZZ_LOG"], "a") as log:
            log.write(f"{t0:.2f} {root} {[a[:40] for a in args]}\n")
    res = CliRunner().invoke(
        ROOTS[root], args, env={"FLOWHERD_CONNECT_TIMEOUT": "0", **(env_vars or {})}
    )
    took = time.monotonic() - t0
    TIMES.append((took, root, args[:8]))
    shown = [root, *(a[:60] for a in args)]
    assert res.exit_code in (0, 1, 2), (shown, res.exit_code, res.output[-2000:])
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        shown,
        repr(res.exception),
    )
    assert "Traceback" not in res.output, (shown, res.output[-2000:])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) <= 1, (shown, res.stderr[-2000:])
    if res.exit_code == 2:
        assert len(res.stderr.splitlines()) == 1, (shown, res.stderr[-2000:])
    if res.exit_code == 1:
        assert errors or "warning" in res.stderr, (shown, res.stderr[-2000:])
    assert took < BOUND_S, (shown, took)


TIMES: list[tuple[float, str, list[str]]] = []


def _in(tmp: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(tmp)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture
def cwd(tmp_path: Path) -> Iterator[Path]:
    """The test's folder as the working directory; afterwards any private redis-server a
    command started there (an empty FLOWHERD_REDIS_URL means "embedded") is stopped."""
    yield from (tmp_path for _ in _in(tmp_path))
    for sock in tmp_path.rglob("redis.sock"):
        stop_local_redis(sock.parent)


def _all(calls: Iterator[tuple[str, list[str], dict[str, str] | None]]) -> None:
    """:func:`check` each call; every failure reported at the end (at most 20 shown)."""
    failures: list[str] = []
    home = os.getcwd()
    for root, args, env_vars in calls:
        # each call in a folder of its own: what one writes (sample, synth, -o) is not read by
        # the next (a trace named "inf" that submit then reads)
        os.chdir(tempfile.mkdtemp(dir=home))
        try:
            check(root, args, env_vars)
        except AssertionError as exc:
            failures.append(str(exc)[:600])
        finally:
            os.chdir(home)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])


def _options(values: Sequence[str], e: Env) -> None:
    _all(
        (path[0], argv(path, cmd, e, p.name or "", v), None)
        for path, cmd in commands()
        for p in params_of(cmd)
        for v in values
    )


def test_every_option_of_every_command(env: Env, cwd: Path) -> None:
    _options(CORE, env)


SETTINGS = sorted(
    {f"FLOWHERD_{name.upper()}" for name in Settings.model_fields}
    | {
        e
        for _, cmd in commands()
        for p in cmd.params
        if isinstance(p, click.Option)
        for e in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])
    }
)


def _settings(values: Sequence[str], e: Env) -> None:
    def calls() -> Iterator[tuple[str, list[str], dict[str, str] | None]]:
        for var in SETTINGS:
            for v in values:
                env_vars = {var: v.replace("\0", "")}  # no environment holds a NUL
                if var not in ("FLOWHERD_REDIS_URL", "FLOWHERD_REDIS_URL_FILE"):
                    env_vars["FLOWHERD_REDIS_URL"] = e.redis_url
                yield "reporter", ["captures"], env_vars
                submit = ["submit", str(e.trace), "--no-wait", "--replace", "--name", "fz"]
                yield "producer", submit, env_vars

    _all(calls())


def test_every_setting(env: Env, cwd: Path) -> None:
    assert {"FLOWHERD_WINDOW", "FLOWHERD_CONNECT_TIMEOUT", "FLOWHERD_HOME"} <= set(SETTINGS)
    _settings(CORE, env)


#: every route of the web view, with the parameters its handlers read
ROUTES = [
    "/",
    "/fragments/captures",
    "/captures/{name}",
    "/captures/{name}/fragments/{part}",
    "/captures/{name}/sizes.svg",
    "/captures/{name}/timeline.svg",
    "/api/captures",
    "/api/captures/{name}",
    "/api/captures/{name}/status",
    "/api/captures/{name}/top",
    "/api/captures/{name}/summary",
    "/api/captures/{name}/windows",
    "/api/captures/{name}/persist",
    "/api/captures/{name}/stats",
    "/metrics",
    "/healthz",
    "/login",
]
QUERY = ["n", "by", "direction", "proto", "window", "key", "key_by", "rule", "flows", "next"]
PARTS = ["top", "summary", "windows", "stats", "status"]


@pytest.fixture(scope="module")
def server(env: Env) -> Iterator[Server]:
    s = Server(env.tmp, ["--redis-url", env.redis_url])
    yield s
    s.stop()
    assert "Traceback" not in s.output(), s.output()[-3000:]


def _url(base: str, route: str, name: str = NAME, part: str = "top", **query: str) -> str:
    q = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
    path = route.replace("{name}", q(name)).replace("{part}", q(part))
    return base.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")


def _answer(url: str) -> None:
    status, _, body = get(url)
    assert status < 500, (url[:300], status, body[:300])


def _routes(values: Sequence[str], base: str) -> None:
    for route in ROUTES:
        for v in values:
            for param in QUERY:
                _answer(_url(base, route, **{param: v}))
            if "{name}" in route:
                _answer(_url(base, route, name=v))
            if "{part}" in route:
                _answer(_url(base, route, part=v))


def test_every_route_and_parameter(server: Server) -> None:
    _routes(CORE, server.url)


# --- the larger run: -m fuzz ------------------------------------------------------------------

#: options whose valid values size the work (a trace of millions of flows takes its time):
#: generated values would time the generator, not find a defect; the fixed values still run
SIZES_OF_WORK: dict[tuple[str, ...], tuple[str, ...]] = {
    ("synth",): ("flows", "packets", "scale", "duration"),
    ("sample",): ("flows",),
}
#: a failing example is reported as found: shrinking one that takes seconds per call can run
#: for many minutes
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
#: hypothesis' settings of the generated runs: no example database, no shrinking
GENERATED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    phases=NO_SHRINK,
)

_text = st.one_of(
    st.sampled_from(ALL),
    st.text(max_size=60),
    st.from_regex(r"[0-9\u0660-\u0669.eE+-]{1,50}[a-zA-Zµ/%]{0,6}", fullmatch=True),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(repr),
)


@pytest.mark.fuzz
def test_every_option_all_values(env: Env, cwd: Path) -> None:
    _options(ALL, env)


@pytest.mark.fuzz
@pytest.mark.parametrize(
    ("path", "fuzzed"), CASES, ids=["-".join((*p[1:], f or "")) for p, f in CASES]
)
def test_every_option_generated(env: Env, cwd: Path, path: tuple[str, ...], fuzzed: str) -> None:
    if fuzzed in SIZES_OF_WORK.get(path[1:], ()):
        pytest.skip("a valid value sets how much work the command does (seconds per million)")
    cmd = dict(commands())[path]

    @GENERATED
    @given(_text)
    def one(value: str) -> None:
        check(path[0], argv(path, cmd, env, fuzzed, value))

    one()


@pytest.mark.fuzz
def test_every_setting_all_values(env: Env, cwd: Path) -> None:
    _settings(ALL, env)


@pytest.mark.fuzz
def test_every_route_all_values(server: Server) -> None:
    _routes(ALL, server.url)


@pytest.mark.fuzz
@pytest.mark.parametrize("route", ROUTES)
def test_every_route_generated(server: Server, route: str) -> None:
    @GENERATED
    @given(st.sampled_from(QUERY), _text)
    def one(param: str, value: str) -> None:
        _answer(_url(server.url, route, **{param: value}))
        if "{name}" in route:
            _answer(_url(server.url, route, name=value))

    one()
