"""Values a careless or hostile user types, and the one-line answers they get (issue 19):
outputs that are links, FIFOs or devices; deep and huge filters; infinite windows and
timeouts; mistyped URLs with passwords; a FLOWHERD_HOME that is a file."""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from flowherd.deploy.connect import redact, scrub, until_reached
from flowherd.models import numbers
from flowherd.models.settings import Settings
from flowherd.producer.cli.main import main as producer_main
from flowherd.producer.cli.options import parse_duration
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.analysis.stats import parse_key
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.reporter.where.parse import MAX_DEPTH, WhereError, parse
from flowherd.workers.cli import main as workers_main
from tests.support.inproc import merge_here
from tests.support.pipeline import settings_for

PASSWORD = "Hunter2secret"
NAME = "hard"


def run(cli: object, args: Sequence[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)  # type: ignore[arg-type]


def one_error(res: Result, code: int) -> str:
    """The one line a failed command printed on stderr (no traceback), with exit ``code``."""
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


@pytest.fixture(scope="module")
def merged(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Capture ``hard``, 20 s windows, merged in this process."""
    from redis import Redis

    from flowherd.store.backend import Store

    conn = Redis.from_url(redis_url)
    path = tmp_path_factory.mktemp("hard") / "hard.pcap"
    write_sample(path, flows=60, seed=3)
    st = merge_here(Store.single(conn), settings_for(redis_url, window=20), [str(path)], NAME)
    assert st.packets > 0
    return redis_url


# --- 1, 2: outputs ----------------------------------------------------------------------------


@pytest.mark.redis
def test_export_writes_through_a_symlink(merged: str, tmp_path: Path) -> None:
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    res = run(reporter_main, ["export", NAME, "-o", str(link), "--redis-url", merged])
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("src,dst,")


@pytest.mark.redis
@pytest.mark.skipif(os.geteuid() != 0, reason="a device node of our own needs root")
def test_export_never_replaces_a_device(merged: str, tmp_path: Path) -> None:
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    res = run(
        reporter_main, ["export", NAME, "-o", str(dev), "--format", "csv", "--redis-url", merged]
    )
    assert res.exit_code == 0, res.output
    assert stat.S_ISCHR(dev.lstat().st_mode)
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # /dev/full: writes fail
    res = run(
        reporter_main, ["export", NAME, "-o", str(full), "--format", "csv", "--redis-url", merged]
    )
    assert "No space left on device" in one_error(res, 1)
    assert stat.S_ISCHR(full.lstat().st_mode)


@pytest.mark.redis
def test_export_into_a_fifo(merged: str, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    res = run(
        reporter_main, ["export", NAME, "-o", str(fifo), "--format", "csv", "--redis-url", merged]
    )
    reader.join(30)
    assert res.exit_code == 0, res.output
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and got[0].startswith(b"src,dst,")


@pytest.mark.redis
def test_export_to_stdout_and_parquet_to_stdout(merged: str) -> None:
    res = run(reporter_main, ["export", NAME, "-o", "-", "--format", "csv", "--redis-url", merged])
    assert res.exit_code == 0 and res.stdout.startswith("src,dst,"), res.output


@pytest.mark.redis
def test_export_under_a_file_is_one_line(merged: str, tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("x")
    res = run(
        reporter_main,
        ["export", NAME, "-o", str(tmp_path / "FILE" / "x.csv"), "--redis-url", merged],
    )
    assert "Not a directory" in one_error(res, 1)
    res = run(
        reporter_main,
        ["export", NAME, "-o", str(tmp_path), "--format", "csv", "--redis-url", merged],
    )
    assert "is a directory" in one_error(res, 1)


def test_sample_and_synth_write_stdout_and_through_links(tmp_path: Path) -> None:
    res = CliRunner().invoke(producer_main, ["sample", "-", "--flows", "5"])
    assert res.exit_code == 0 and res.stdout_bytes[:4] == b"\xd4\xc3\xb2\xa1", res.output
    target = tmp_path / "t.pcap"
    (tmp_path / "l.pcap").symlink_to(target)
    res = CliRunner().invoke(producer_main, ["synth", str(tmp_path / "l.pcap"), "--packets", "50"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "l.pcap").is_symlink() and target.stat().st_size > 24


# --- 3, 4: filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["(" * 400 + "tcp" + ")" * 400, "not " * 1000 + "tcp", "!" * 2000 + "tcp"],
    ids=["parens", "not", "bang"],
)
def test_deep_filters_name_the_limit(text: str) -> None:
    with pytest.raises(WhereError, match=f"deeper than {MAX_DEPTH} levels"):
        parse(text)
    assert parse("(" * MAX_DEPTH + "tcp" + ")" * MAX_DEPTH)


@pytest.mark.parametrize(
    "text", ["port " + "9" * 5000, "proto " + "0" * 4401, "bytes > " + "9" * 5000, "first > 1e400"]
)
def test_huge_numbers_in_filters_are_one_line(text: str) -> None:
    with pytest.raises(WhereError) as exc:
        parse(text)
    assert len(str(exc.value)) < 300


@pytest.mark.redis
def test_deep_filter_on_the_command_line(merged: str) -> None:
    res = run(reporter_main, ["top", NAME, "--where", "!" * 2000 + "tcp", "--redis-url", merged])
    assert f"deeper than {MAX_DEPTH}" in one_error(res, 2)


# --- 5, 6, 7: windows and timeouts ------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "nan", "9" * 5000, "١٢"])
def test_window_selection_is_one_line(merged: str, value: str) -> None:
    for cmd in (
        ["top", NAME],
        ["stats", NAME, "--key", "ip"],
        ["export", NAME, "-o", "-", "--format", "csv"],
    ):
        res = run(reporter_main, [*cmd, "--window", value, "--redis-url", merged])
        assert "--window" in one_error(res, 1) or "Invalid value" in res.stderr


@pytest.mark.parametrize("opt", ["--window", "--idle-timeout", "--active-timeout"])
@pytest.mark.parametrize("value", ["9" * 400, "inf", "1e400", "0.0000000001", "٣s"])
def test_submit_durations_are_usage_errors(opt: str, value: str, tmp_path: Path) -> None:
    res = run(producer_main, ["submit", str(tmp_path / "none.pcap"), opt, value])
    assert opt in one_error(res, 2)


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "9" * 5000])
def test_window_setting_is_a_usage_error(value: str, tmp_path: Path) -> None:
    res = run(
        producer_main, ["submit", str(tmp_path / "none.pcap")], env={"FLOWHERD_WINDOW": value}
    )
    assert "FLOWHERD_WINDOW" in one_error(res, 2)


def test_one_nanosecond_is_one_nanosecond_however_written() -> None:
    assert parse_duration("1ns") == parse_duration("0.000000001") == 1e-9
    with pytest.raises(ValueError):
        parse_duration("0.0000000001")
    assert Settings(window="30s").window == 30.0  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["inf", "1e300", "nan", "86401"])
def test_connect_timeout_is_bounded(value: str) -> None:
    t0 = time.monotonic()
    res = run(
        reporter_main,
        ["captures", "--redis-url", "redis://127.0.0.1:1/0"],
        env={"FLOWHERD_CONNECT_TIMEOUT": value},
    )
    assert "FLOWHERD_CONNECT_TIMEOUT" in one_error(res, 2)
    assert time.monotonic() - t0 < 10
    with pytest.raises(ValueError):
        until_reached(lambda: 1, math.inf, "x", (), ())


# --- 8: secrets -------------------------------------------------------------------------------

BAD_URLS = [
    f"redis//:{PASSWORD}@127.0.0.1:16399/0",
    f"redis:/:{PASSWORD}@127.0.0.1:16399/0",
    f"redis::{PASSWORD}@127.0.0.1:16399/0",
    f"redis://:{PASSWORD}@127.0.0.1:1/0 extra",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_mistyped_url_never_shows_its_password(url: str, tmp_path: Path) -> None:
    assert PASSWORD not in redact(url) and PASSWORD not in scrub(f"error: {url}")
    url_file = tmp_path / "url"
    url_file.write_text(url)
    for cli, args in [
        (producer_main, ["submit", str(tmp_path / "none.pcap"), "--redis-url", url]),
        (producer_main, ["status", "x", "--redis-url-file", str(url_file)]),
        (workers_main, ["run", "--burst", "--redis-url", url]),
        (reporter_main, ["serve", "--port", "0", "--redis-url", url]),
        (reporter_main, ["captures", "--redis-url-file", str(url_file)]),
    ]:
        res = run(cli, args, env={"FLOWHERD_CONNECT_TIMEOUT": "0"})
        assert res.exit_code in (1, 2), (args, res.output)
        assert PASSWORD not in res.output, (args, res.output)


def test_scrub_hides_credentials_and_password_parameters() -> None:
    text = f"redis://app:{PASSWORD}@h:1/0 and rediss://h/0?db=1&password={PASSWORD}&x=1"
    assert PASSWORD not in scrub(text) and "//***@h:1/0" in scrub(text)
    assert redact(f"redis://h/0?password={PASSWORD}") == "redis://h/0?password=***"


def test_a_database_that_is_not_a_number_is_refused() -> None:
    res = run(reporter_main, ["captures", "--redis-url", "redis://127.0.0.1:1/abc"])
    assert "database number" in one_error(res, 1)


# --- 9, and the smaller ones ------------------------------------------------------------------


@pytest.mark.parametrize("home", ["/dev/null", "/dev/null/sub"])
def test_a_home_that_is_no_directory(home: str) -> None:
    res = run(reporter_main, ["captures"], env={"FLOWHERD_HOME": home, "FLOWHERD_REDIS_URL": None})  # type: ignore[dict-item]
    assert f"FLOWHERD_HOME={home}" in one_error(res, 1)


@pytest.mark.parametrize("name", ["<script>", "abc\n", "", "-x", "a" * 101])
def test_a_bad_capture_name_is_a_usage_error(name: str, tmp_path: Path) -> None:
    res = run(producer_main, ["submit", str(tmp_path / "none.pcap"), "--name", name])
    line = one_error(res, 2)
    assert "--name" in line and "FLOWHERD_NAME" not in line


def test_a_bad_setting_names_the_option_unless_the_environment_set_it(tmp_path: Path) -> None:
    res = run(producer_main, ["submit", str(tmp_path / "n.pcap"), "--keep", "2000000000"])
    line = one_error(res, 2)
    assert "FLOWHERD_" not in line and "keep" in line


@pytest.mark.parametrize("text", ["net/٣", "net/3,٦٤", "net/" + "9" * 5000, "srcnet/33"])
def test_keys_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError):
        parse_key(text)
    assert parse_key("net/3").v4 == 3


def test_numbers_refuse_what_python_would_take() -> None:
    for text in ["٣", "inf", "nan", "1e3", "-1", "+1", "1_000", "0x10", "9" * 41, "1.5.2", "½"]:
        with pytest.raises(numbers.NumberError):
            numbers.count(text)
    assert numbers.count("2k", units=True) == 2000
    assert numbers.size("64KiB") == 65536
    assert numbers.duration_ns("1.5min") == 90 * 10**9
    assert numbers.bit_rate("1MB/s") == 8 * 10**6
    assert numbers.epoch_ns("1704067200.5") == 1704067200_500_000_000
    with pytest.raises(numbers.NumberRangeError):
        numbers.epoch_ns("1" * 20)


@pytest.mark.redis
def test_web_parameters_with_huge_numbers(merged: str) -> None:
    from flowherd.reporter.web.docs import BadParam, int_param, parse_top

    with pytest.raises(BadParam):
        int_param({"n": "9" * 5000}, "n", 20, 1, 1000)
    with pytest.raises(BadParam):
        int_param({"n": "١٢"}, "n", 20, 1, 1000)
    assert parse_top({"n": "12"}).n == 12


def test_found_by_the_fuzz_suite(tmp_path: Path) -> None:
    """A snaplen beyond pcap's field, a NUL in a path, and synth to stdout (which must stay
    open for what follows)."""
    res = run(producer_main, ["sample", str(tmp_path / "s.pcap"), "--snaplen", str(2**63)])
    assert "--snaplen" in one_error(res, 2)
    res = run(producer_main, ["submit", "a\x00b"])
    assert "NUL" in one_error(res, 2) or "null byte" in res.stderr
    res = CliRunner().invoke(producer_main, ["synth", "-", "--packets", "20"])
    assert res.exit_code == 0 and res.stdout_bytes[:4] == b"\xd4\xc3\xb2\xa1", res.output
