"""``reporter serve`` over HTTP: the JSON API equals the CLI's JSON, bad requests get a 4xx
with a message, /metrics has the capture's numbers, the token is required beyond loopback, and
no Redis password is ever shown. A real server process against the test Redis, with a capture
made by the real pipeline (the browser tests are in tests/reporter/test_web_browser.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from flowherd.models.capture import CaptureState
from flowherd.models.expiry import RecordsOut
from flowherd.models.state import MetaField, SnifferMember
from flowherd.producer.live.packet_socket import Counters
from flowherd.producer.live.sniff import drop_fields
from flowherd.producer.run.follow import LocalWorkers
from flowherd.store.backend import Store
from flowherd.store.captures import run_of, set_meta
from flowherd.store.expiry import Checkpoint, declare, save_checkpoint
from tests.support.helpers import RedisServer
from tests.support.pipeline import run_capture, settings_for
from tests.support.webserve import Server, cli_json, get, get_json, write_trace

pytestmark = [pytest.mark.redis, pytest.mark.e2e]
NAME = "webcap"
TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def capture(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A capture with 10 s windows through two real workers (the module's own Redis state:
    its tests do not use the flushing ``store`` fixture)."""
    conn = Redis.from_url(redis_url)
    conn.flushall()
    store = Store.single(conn)
    trace = tmp_path_factory.mktemp("web") / "web.pcap"
    write_trace(trace)
    settings = settings_for(redis_url, batch_packets=120, window=10.0)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        st = run_capture(store, settings, [str(trace)], NAME, w)
    assert st.state is CaptureState.COMPLETE and st.total_batches and st.total_batches > 1
    yield store
    conn.flushall()
    conn.close()


@pytest.fixture(scope="module")
def server(
    capture: Store, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("serve"), ["--redis-url", redis_url])
    yield s
    s.stop()
    assert "Traceback" not in s.output(), s.output()


def test_api_documents_equal_the_cli(server: Server, redis_url: str) -> None:
    listed = get_json(server.url + "api/captures")
    assert [c["name"] for c in listed] == [NAME]
    assert listed == cli_json(redis_url, "captures", "--json")
    for query, args in [
        ("", []),
        ("?n=5&by=packets", ["-n", "5", "--by", "packets"]),
        ("?n=7&by=rate&direction=bi", ["-n", "7", "--by", "rate", "--direction", "bi"]),
        ("?by=duration&proto=udp", ["--by", "duration", "--proto", "udp"]),
        ("?n=3&window=all", ["-n", "3", "--window", "all"]),
    ]:
        api = get_json(server.url + f"api/captures/{NAME}/top{query}")
        assert api == cli_json(redis_url, "top", NAME, "--format", "json", *args), query
        assert api  # something to compare
    assert get_json(server.url + f"api/captures/{NAME}/summary") == cli_json(
        redis_url, "summary", NAME, "--json"
    )
    rules = get_json(server.url + f"api/captures/{NAME}/summary?rule=top:3&rule=load:0.5")
    assert [e["rule"]["name"] for e in rules["elephants"]] == ["top3", "constant-load-0.5"]
    assert get_json(server.url + f"api/captures/{NAME}/windows") == cli_json(
        redis_url, "windows", NAME, "--json"
    )
    assert get_json(server.url + f"api/captures/{NAME}/persist?n=3") == cli_json(
        redis_url, "persist", NAME, "-n", "3", "--json"
    )
    st = get_json(server.url + f"api/captures/{NAME}")
    assert st == listed[0] == get_json(server.url + f"api/captures/{NAME}/status")


def test_stats_api_equals_the_cli(server: Server, redis_url: str) -> None:
    for query, args in [
        ("?key=ip", ["--key", "ip"]),
        ("?key=dport&by=flows&n=5&direction=bi",
         ["--key", "dport", "--by", "flows", "-n", "5", "--direction", "bi"]),
        ("?key=net/24&by=packets&n=3&window=all", ["--key", "net/24", "--by", "packets", "-n", "3",
                                                   "--window", "all"]),
    ]:  # fmt: skip
        api = get_json(server.url + f"api/captures/{NAME}/stats{query}")
        assert api == cli_json(redis_url, "stats", NAME, "--format", "json", *args), query
        docs = api if isinstance(api, list) else [api]
        assert len(docs) >= (3 if "window" in query else 1)
        assert all(d["rows"] and d["totals"]["packets"] > 0 for d in docs), query
    ip = get_json(server.url + f"api/captures/{NAME}/stats?key=ip")
    assert ip["key"] == "ip" and ip["by"] == "bytes" and len(ip["rows"]) == 10
    assert sum(r["flows"] for r in ip["rows"]) > ip["totals"]["flows"]  # both endpoints count


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("api/captures/nope/top", 404, "no capture named 'nope'"),
        ("api/captures/nope", 404, "no capture named"),
        (f"api/captures/{NAME}/top?n=abc", 400, "n: 'abc' is not a whole number"),
        (f"api/captures/{NAME}/top?n=0", 400, "out of range"),
        (f"api/captures/{NAME}/top?by=size", 400, "by: 'size'"),
        (f"api/captures/{NAME}/top?direction=both", 400, "use uni or bi"),
        (f"api/captures/{NAME}/top?proto=tcpx", 400, "unknown protocol"),
        (f"api/captures/{NAME}/top?window=yesterday", 400, "--window takes latest"),
        (f"api/captures/{NAME}/top?window=1", 404, "no window containing"),
        (f"api/captures/{NAME}/summary?rule=huge", 400, "rule:"),
        (f"api/captures/{NAME}/persist?n=-1", 400, "not a whole number"),
        (f"api/captures/{NAME}/stats?key=mac", 400, "key: unknown key 'mac': use one of srcip"),
        (f"api/captures/{NAME}/stats?key=dport/8", 400, "key: dport takes no prefix length"),
        (f"api/captures/{NAME}/stats?key=net/40", 400, "IPv4 prefixes are /0 to /32"),
        (f"api/captures/{NAME}/stats", 400, "key: give one of srcip, dstip"),
        (f"api/captures/{NAME}/stats?key=ip&by=size", 400, "by: 'size': use one of bytes"),
        (f"api/captures/{NAME}/stats?key=ip&n=0", 400, "n: 0 is out of range"),
        (f"api/captures/{NAME}/stats?key=ip&direction=both", 400, "use uni or bi"),
        (f"api/captures/{NAME}/stats?key=ip&window=1", 404, "no window containing"),
        ("api/captures/nope/stats?key=ip", 404, "no capture named 'nope'"),
        ("api/captures/bad%20name/top", 404, "no capture named"),
        ("api/nothing", 404, "Not Found"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(
    server: Server, path: str, code: int, words: str
) -> None:
    status, headers, body = get(server.url + path)
    assert status == code, body
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert words in doc["error"] and doc["status"] == code
    assert b"Traceback" not in body


def test_pages_answer_errors_in_html(server: Server) -> None:
    status, headers, body = get(server.url + "captures/nope")
    assert status == 404 and headers["content-type"].startswith("text/html")
    assert b"no capture named &#39;nope&#39;" in body and b"Traceback" not in body
    status, _, body = get(server.url + f"captures/{NAME}?by=size")
    assert status == 400 and b"by: &#39;size&#39;" in body
    status, _, _ = get(server.url + f"captures/{NAME}/sizes.svg?direction=sideways")
    assert status == 400
    status, _, _ = get(server.url + "api/captures", data=b"x=1")  # read-only: no POST
    assert status == 405
    status, headers, body = get(server.url + f"captures/{NAME}")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    assert b"http://" not in body.replace(b"http://www.w3.org", b"")  # nothing from elsewhere


def test_capture_page_stats_section(server: Server, redis_url: str) -> None:
    status, _, body = get(server.url + f"captures/{NAME}?key=sport&key_by=flows&by=packets")
    assert status == 200
    assert b'<option value="sport" selected>' in body  # a key outside the selector's list
    assert b'<option value="flows" selected>' in body and b'data-key="sport"' in body
    assert b'name="key" value="sport"' in body  # the top's form keeps the section's choice
    doc = cli_json(redis_url, "stats", NAME, "--key", "sport", "--by", "flows", "--format", "json")
    for r in doc["rows"]:
        assert f'<tr data-key="{r["key"]}" data-packets="{r["packets"]}"'.encode() in body
    status, headers, body = get(server.url + f"captures/{NAME}/fragments/stats?key=proto")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'id="stats-table" data-key="proto"' in body
    status, _, body = get(server.url + f"captures/{NAME}?key=mac")
    assert status == 400 and b"key: unknown key &#39;mac&#39;" in body


def test_figures_are_svg(server: Server) -> None:
    for path in (f"captures/{NAME}/sizes.svg", f"captures/{NAME}/sizes.svg?direction=bi&top=5",
                 f"captures/{NAME}/timeline.svg"):  # fmt: skip
        status, headers, body = get(server.url + path)
        assert status == 200 and headers["content-type"] == "image/svg+xml", path
        assert body.lstrip().startswith(b"<?xml") and b"<svg" in body and len(body) > 10_000


def test_metrics_have_the_capture(server: Server, redis_url: str) -> None:
    status, headers, body = get(server.url + "metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }
    st = cli_json(redis_url, "captures", "--json")[0]
    cap = (("capture", NAME),)
    assert values["flowherd_captures", ()] == 1
    assert values["flowherd_capture_packets", cap] == st["packets"] > 0
    assert values["flowherd_capture_bytes", cap] == st["bytes"]
    assert values["flowherd_capture_flows", cap] == st["flows"]
    assert values["flowherd_capture_batches_done", cap] == st["total_batches"]
    assert values["flowherd_capture_batches_expected", cap] == st["total_batches"]
    assert values["flowherd_capture_state", (("capture", NAME), ("state", "complete"))] == 1
    assert values["flowherd_capture_state", (("capture", NAME), ("state", "processing"))] == 0


def _metric_values(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def test_sniffer_processes_on_the_page_in_the_json_and_the_metrics(
    server: Server, capture: Store, redis_url: str
) -> None:
    """The drop counters ``producer sniff --fanout 2`` records (here written into the capture's
    meta hash as the sniff writes them, one process killed): the status JSON carries them, the
    capture's page shows each process, /metrics has the totals and one series per process.
    Removed again at the end: the capture is the module's."""
    keys = run_of(capture, NAME)
    members = [
        SnifferMember(member=1, pid=4241, packets=1_234_567, drops=12),
        SnifferMember(member=2, pid=4242, packets=5, drops=0, state="died", signal="SIGKILL"),
    ]
    c = Counters(kernel_packets=1_234_572, kernel_drops=12, producer_drops=0)
    set_meta(capture, keys, **drop_fields(c, members))
    try:
        st = get_json(server.url + f"api/captures/{NAME}")
        assert st == cli_json(redis_url, "captures", "--json")[0]
        assert (st["kernel_packets"], st["kernel_drops"], st["producer_drops"]) == (
            1_234_572,
            12,
            0,
        )
        assert st["members"] == [m.model_dump() for m in members]
        for path in (f"captures/{NAME}", f"captures/{NAME}/fragments/status"):
            status, _, body = get(server.url + path)
            html = body.decode()
            assert status == 200 and "kernel dropped" in html, path
            assert 'id="kernel-drops" data-value="12">12</span>' in html, path
            assert 'id="kernel-packets" data-value="1234572">1,234,572</span>' in html, path
            assert (
                '<tr data-member="1" data-state="ok"><td>1</td><td>4241</td>'
                '<td class="num" data-value="1234567">1,234,567</td>'
                '<td class="num" data-value="12">12</td><td>ok</td></tr>'
            ) in html, path
            assert (
                '<tr data-member="2" data-state="died"><td>2</td><td>4242</td>'
                '<td class="num" data-value="5">5</td><td class="num" data-value="0">0</td>'
                '<td class="bad">died of SIGKILL</td></tr>'
            ) in html, path
        _, _, body = get(server.url + "metrics")
        values = _metric_values(body)
        cap = (("capture", NAME),)
        assert values["flowherd_capture_kernel_packets", cap] == 1_234_572
        assert values["flowherd_capture_kernel_drops", cap] == 12
        assert values["flowherd_capture_producer_drops", cap] == 0
        each = {
            (name, member): values[name, (("capture", NAME), ("member", member))]
            for name in (
                "flowherd_capture_member_kernel_packets",
                "flowherd_capture_member_kernel_drops",
                "flowherd_capture_member_died",
            )
            for member in ("1", "2")
        }
        assert each == {
            ("flowherd_capture_member_kernel_packets", "1"): 1_234_567,
            ("flowherd_capture_member_kernel_packets", "2"): 5,
            ("flowherd_capture_member_kernel_drops", "1"): 12,
            ("flowherd_capture_member_kernel_drops", "2"): 0,
            ("flowherd_capture_member_died", "1"): 0,
            ("flowherd_capture_member_died", "2"): 1,
        }
    finally:
        fields = (MetaField.KERNEL_PACKETS, MetaField.KERNEL_DROPS, MetaField.PRODUCER_DROPS,
                  MetaField.MEMBERS)  # fmt: skip
        set_meta(capture, keys, **dict.fromkeys(fields))
    assert "members" not in get(server.url + f"captures/{NAME}/fragments/status")[2].decode()
    left = _metric_values(get(server.url + "metrics")[2])  # a file capture: no such series
    assert not [k for k in left if "_member_" in k[0] or "drops" in k[0] or "kernel" in k[0]]


def _serve_fails(args: list[str], redis_url: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "flowherd.reporter", "serve", *args, "--redis-url", redis_url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_refuses_to_serve_beyond_loopback_without_a_token(
    capture: Store, redis_url: str, tmp_path: Path
) -> None:
    res = _serve_fails(["--host", "0.0.0.0", "--port", "0"], redis_url)
    assert res.returncode == 2
    assert (
        res.stderr.count("\n") == 1
        and "--token-file" in res.stderr
        and "Traceback" not in res.stderr
    )
    short = tmp_path / "short"
    short.write_text("abc\n")
    res = _serve_fails(["--host", "0.0.0.0", "--port", "0", "--token-file", str(short)], redis_url)
    assert res.returncode == 2 and "at least 16 characters" in res.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        res = _serve_fails(["--port", str(taken.getsockname()[1])], redis_url)
    assert res.returncode == 2 and res.stderr.startswith("error: cannot listen on 127.0.0.1:")
    assert res.stderr.count("\n") == 1


def test_missing_web_extra_is_one_line(redis_url: str) -> None:
    code = "import sys; sys.modules['uvicorn'] = None; from flowherd.reporter.cli.main import main; main()"
    cmd = [sys.executable, "-c", code, "serve", "--redis-url", redis_url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and res.stderr.count("\n") == 1
    assert "flowherd[web]" in res.stderr and "uvicorn" in res.stderr


def test_token_is_required_when_bound_elsewhere(
    capture: Store, redis_url: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    s = Server(
        tmp_path, ["--host", "0.0.0.0", "--token-file", str(token_file), "--redis-url", redis_url]
    )
    try:
        assert s.url.startswith("http://0.0.0.0:") and "token required" in s.output()
        base = "http://127.0.0.1:" + s.url.rsplit(":", 1)[1]
        for path in ("api/captures", f"api/captures/{NAME}/top", "metrics"):
            status, headers, body = get(base + path)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
            assert b"bearer token is required" in body
            status, _, _ = get(base + path, {"Authorization": "Bearer " + TOKEN[:-1] + "x"})
            assert status == 401
            status, _, _ = get(base + path, {"Authorization": "Bearer " + TOKEN})
            assert status == 200, path
        assert (
            get_json(base + "api/captures", {"Authorization": "Bearer " + TOKEN})[0]["name"] == NAME
        )
        status, _, body = get(base + "healthz")
        assert status == 200 and body == b"ok\n"
        status, _, body = get(base + f"captures/{NAME}")  # a browser: the sign-in form
        assert status == 401 and b'name="token"' in body and b'id="top-table"' not in body
        status, _, _ = get(base + "login", data=b"token=wrong&next=/")
        assert status == 401
        form = f"token={TOKEN}&next=/captures/{NAME}".encode()
        status, headers, _ = get(base + "login", data=form)
        assert status == 303 and headers["location"] == f"/captures/{NAME}"
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower()
        status, _, body = get(base + f"captures/{NAME}", {"Cookie": cookie})
        assert status == 200 and b'id="top-table"' in body
    finally:
        s.stop()


def test_redis_password_is_never_shown(tmp_path: Path) -> None:
    password = "s3cret-Pa55word-xyz"
    redis = RedisServer(tmp_path / "redis", password=password)
    redis.start()
    url_file = tmp_path / "url"
    url_file.write_text(redis.url)
    s = Server(tmp_path, ["--redis-url-file", str(url_file)])
    try:
        assert password not in s.output() and ":***@" in s.output()
        status, _, body = get(s.url)
        assert status == 200 and b":***@127.0.0.1" in body and password.encode() not in body
        redis.kill()
        for path in ("", "api/captures", "metrics"):
            status, _, body = get(s.url + path)
            assert status == 503, (path, body)
            assert b"Redis" in body and password.encode() not in body and b"Traceback" not in body
    finally:
        s.stop()
        redis.kill()
    assert password not in s.output()


def test_records_that_left_on_the_page_in_the_json_and_the_metrics(
    server: Server, capture: Store, redis_url: str
) -> None:
    """A live capture whose records leave as they expire (here its declaration and one shard's
    exporter checkpoint written as the sniff and `reporter records` write them): the page, the
    JSON and /metrics say what has left and what is open. Removed again at the end."""
    keys = run_of(capture, NAME)
    sk = keys.shard(0)
    declare(capture, keys, RecordsOut(dir="/var/lib/flows"))
    cp = Checkpoint(records=1234, packets=56_789, bytes=9_000_000, files=3, watermark=5)
    save_checkpoint(capture, sk, cp)
    capture.kv.hset(sk.open, mapping={b"k1": b"x", b"k2": b"y"})
    try:
        st = get_json(server.url + f"api/captures/{NAME}")
        assert st["records_left"] == {
            "to": "/var/lib/flows (ndjson)", "records": 1234, "packets": 56_789,
            "bytes": 9_000_000, "files": 3, "open": 2, "watermark_ns": 5, "late_packets": 0,
        }  # fmt: skip
        for path in (f"captures/{NAME}", f"captures/{NAME}/fragments/status"):
            html = get(server.url + path)[2].decode()
            assert 'id="records-left-count" data-value="1234">1,234</span> records' in html
            assert 'id="records-open" data-value="2">2</span> conversations open' in html
            assert "to /var/lib/flows (ndjson) in 3 files" in html
        values = _metric_values(get(server.url + "metrics")[2])
        cap = (("capture", NAME),)
        assert values["flowherd_capture_records_left", cap] == 1234
        assert values["flowherd_capture_records_left_packets", cap] == 56_789
        assert values["flowherd_capture_records_files", cap] == 3
        assert values["flowherd_capture_records_open", cap] == 2
    finally:
        set_meta(capture, keys, **{MetaField.RECORDS_OUT: None})
        capture.kv.delete(sk.expiry, sk.open)
    assert "records-left" not in get(server.url + f"captures/{NAME}/fragments/status")[2].decode()
    assert not [k for k in _metric_values(get(server.url + "metrics")[2]) if "records" in k[0]]
