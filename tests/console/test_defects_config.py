"""Settings and help text (issue 12): FLOWHERD_MAX_PAYLOAD is a validated setting, and no
``--help`` shows a password typed on the command line."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from flowherd.models.batch import MAX_BODY_BYTES
from flowherd.models.settings import Settings
from flowherd.producer.cli.main import main as producer_main
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.workers.cli import main as workers_main
from flowherd.workers.jobs import max_payload_bytes

#: A URL whose user-info holds a password (``redis://:secret@host``, ``rediss://u:pw@h``). The
#: grammar ``scheme://[user:password@]host`` is not one: it shows no password to type.
CREDENTIAL_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/@\[\]]*:[^\s/@\]]+@", re.IGNORECASE)


# ------------------------------------------------------------------ FLOWHERD_MAX_PAYLOAD


def test_max_payload_default_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWHERD_MAX_PAYLOAD", raising=False)
    assert Settings().max_payload == MAX_BODY_BYTES == max_payload_bytes()
    monkeypatch.setenv("FLOWHERD_MAX_PAYLOAD", "4096")
    assert Settings().max_payload == 4096 == max_payload_bytes()


@pytest.mark.parametrize("bad", ["abc", "", "4k", "0", "-1", "1023", str(MAX_BODY_BYTES + 1)])
def test_bad_max_payload_is_an_error_not_the_default(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("FLOWHERD_MAX_PAYLOAD", bad)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert [e["loc"] for e in info.value.errors()] == [("max_payload",)]
    with pytest.raises(ValidationError):
        max_payload_bytes()


def test_workers_run_refuses_a_bad_max_payload_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWHERD_MAX_PAYLOAD", "lots")
    monkeypatch.setenv("FLOWHERD_CONNECT_TIMEOUT", "0")
    args = ["run", "-n", "1", "--redis-url", "redis://127.0.0.1:1/0"]  # never reached
    res = CliRunner().invoke(workers_main, args, catch_exceptions=False)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: FLOWHERD_MAX_PAYLOAD='lots': "), lines


# ------------------------------------------------------------------ --help


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        for name, cmd in group.commands.items():
            yield from _commands(cmd, (*path, name))


def test_the_pattern_finds_credentials() -> None:
    for text in ("redis://:PASS@queue-host/0", "rediss://flowherd:s3cret@h:6380", "x://:a@b"):
        assert CREDENTIAL_URL.search(text), text
    for text in ("redis://queue-host/0", "unix:///run/redis.sock", "[user:password@]host"):
        assert not CREDENTIAL_URL.search(text), text
    assert not CREDENTIAL_URL.search("redis+cluster://[user:password@]host:port")


@pytest.mark.parametrize(
    "cli", [producer_main, workers_main, reporter_main], ids=["producer", "workers", "reporter"]
)
def test_no_help_shows_a_password(cli: click.Command) -> None:
    paths = list(_commands(cli))
    assert len(paths) > 2
    for path in paths:
        res = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False, terminal_width=200)
        assert res.exit_code == 0, (path, res.output)
        found = CREDENTIAL_URL.findall(res.output)
        assert not found, f"`{' '.join(path)} --help` shows a credential: {found}"


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["workers", "local-redis", "status"], {"FLOWHERD_HEARTBEAT": "1"}),
        (["producer", "status", "x"], {"FLOWHERD_BATCH_BYTES": "zz"}),
        (["reporter", "captures"], {"FLOWHERD_SHARDS": "0"}),
    ],
)
def test_bad_setting_is_one_line_in_every_command(argv: list[str], env: dict[str, str]) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / argv[0])
    res = subprocess.run(
        [exe, *argv[1:]], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2, res.stderr
    name = next(iter(env))
    assert res.stderr.startswith(f"error: {name}=") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr
