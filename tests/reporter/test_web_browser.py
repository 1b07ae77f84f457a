"""The web view in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``scripts/install.sh --test``) driven by Selenium, against
``reporter serve`` and a capture made by the real pipeline.

The capture page's table holds the rows of ``reporter top --format json``, in every view the
page offers; the figures are drawn (a screenshot of each is far from blank; one is kept as
out/web-capture.png); clicking a column header ranks by it; the statistics by key hold the rows
of ``reporter stats --format json`` for the key and view chosen; and a capture merged while its
page is open shows its numbers moving without a reload.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from flowherd.models.capture import CaptureState
from flowherd.producer.run.follow import LocalWorkers
from flowherd.store.backend import Store
from tests.support.helpers import wait_until
from tests.support.pipeline import run_capture, settings_for, submit_with
from tests.support.webserve import Server, cli_json, write_trace

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.browser]
NAME = "browsed"
OUT = Path(__file__).resolve().parents[2] / "out"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def store(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The test Redis with one complete capture (10 s windows, two real workers); the module's
    own state: its tests do not use the flushing ``store`` fixture of conftest."""
    conn = Redis.from_url(redis_url)
    conn.flushall()
    s = Store.single(conn)
    trace = tmp_path_factory.mktemp("browser") / "b.pcap"
    write_trace(trace, flows=30, seed=11)
    settings = settings_for(redis_url, batch_packets=150, window=10.0)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        st = run_capture(s, settings, [str(trace)], NAME, w)
    assert st.state is CaptureState.COMPLETE
    yield s
    conn.flushall()
    conn.close()


@pytest.fixture(scope="module")
def server(
    store: Store, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("serve"), ["--redis-url", redis_url, "--refresh", "0.5"])
    yield s
    s.stop()
    assert "Traceback" not in s.output(), s.output()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium or chromedriver is missing: run scripts/install.sh --test")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1000", "--hide-scrollbars"):  # fmt: skip
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(120)
    yield d
    d.quit()


def _rows(driver: Any) -> list[dict[str, str]]:
    """The top table's rows as their data attributes, and their visible cells."""
    script = """return Array.from(document.querySelectorAll('#top-table tbody tr[data-bytes]'))
        .map(tr => Object.assign({cells: Array.from(tr.cells).map(c => c.textContent.trim())},
                                 tr.dataset));"""
    rows: list[dict[str, Any]] = driver.execute_script(script)
    return rows


def _as_cli(rows: list[dict[str, Any]], direction: str) -> list[tuple[Any, ...]]:
    if direction == "bi":
        return [(r["proto"], r["a"], r["aport"], r["b"], r["bport"], r["packets"], r["bytes"],
                 r["first"], r["last"]) for r in rows]  # fmt: skip
    return [(r["proto"], r["src"], r["sport"], r["dst"], r["dport"], r["packets"], r["bytes"],
             r["first"], r["last"]) for r in rows]  # fmt: skip


def _cli_rows(
    redis_url: str, direction: str, *args: str, name: str = NAME
) -> list[tuple[Any, ...]]:
    doc = cli_json(redis_url, "top", name, "--format", "json", "--direction", direction, *args)
    if direction == "bi":
        keys = (
            "proto",
            "a_addr",
            "a_port",
            "b_addr",
            "b_port",
            "packets",
            "bytes",
            "first_ns",
            "last_ns",
        )
    else:
        keys = ("proto", "src", "sport", "dst", "dport", "packets", "bytes", "first_ns", "last_ns")
    return [tuple(str(r[k]) for k in keys) for r in doc]


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    wait_until(
        lambda: driver.execute_script("return document.readyState") == "complete", 60, "the page"
    )


def test_capture_page_rows_equal_the_cli(driver: Any, server: Server, redis_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(driver, server.url + f"captures/{NAME}")
    assert (
        driver.execute_script("return document.getElementById('state').textContent") == "complete"
    )
    rows = _rows(driver)
    assert len(rows) == 20
    assert _as_cli(rows, "uni") == _cli_rows(redis_url, "uni")
    assert rows[0]["cells"][6] == f"{int(rows[0]['packets']):,}"  # packets shown as counted
    # the switches: conversations, then UDP only
    Select(driver.find_element(By.ID, "direction")).select_by_value("bi")
    driver.find_element(By.CSS_SELECTOR, "form.controls button").click()
    wait_until(lambda: "direction=bi" in driver.current_url, 60, "the bi view")
    assert _as_cli(_rows(driver), "bi") == _cli_rows(redis_url, "bi")
    Select(driver.find_element(By.ID, "proto")).select_by_value("udp")
    driver.find_element(By.CSS_SELECTOR, "form.controls button").click()
    wait_until(lambda: "proto=udp" in driver.current_url, 60, "the UDP view")
    udp = _rows(driver)
    assert udp and {r["proto"] for r in udp} == {"17"}
    assert _as_cli(udp, "bi") == _cli_rows(redis_url, "bi", "--proto", "udp")
    # the elephants of each rule and the windows are on the page too
    summary = cli_json(redis_url, "summary", NAME, "--json")
    shown = {e.get_attribute("data-rule"): int(e.get_attribute("data-flows"))
             for e in driver.find_elements(By.CSS_SELECTOR, "#elephants tr[data-rule]")}  # fmt: skip
    assert shown == {e["rule"]["name"]: e["flows"] for e in summary["elephants"]} and shown
    wins = cli_json(redis_url, "windows", NAME, "--json")
    starts = [
        int(e.get_attribute("data-start"))
        for e in driver.find_elements(By.CSS_SELECTOR, "#windows-table tr[data-start]")
    ]
    assert starts == [w["start_ns"] for w in wins] and len(starts) >= 3


def _stats_rows(driver: Any) -> list[tuple[str, ...]]:
    """The statistics table's rows: key, packets, bytes, flows and the shares shown."""
    script = """return Array.from(document.querySelectorAll('#stats-table tbody tr[data-key]'),
        tr => [tr.dataset.key, tr.dataset.packets, tr.dataset.bytes, tr.dataset.flows,
               tr.cells[3].textContent.trim(), tr.cells[5].textContent.trim(),
               tr.cells[7].textContent.trim()]);"""
    return [tuple(r) for r in driver.execute_script(script)]


def _cli_stats(redis_url: str, key: str, *args: str, name: str = NAME) -> list[tuple[str, ...]]:
    doc = cli_json(redis_url, "stats", name, "--key", key, "--format", "json", *args)
    return [(r["key"], str(r["packets"]), str(r["bytes"]), str(r["flows"]),
             f"{r['packets_pct']:.2f}%", f"{r['bytes_pct']:.2f}%", f"{r['flows_pct']:.2f}%")
            for r in doc["rows"]]  # fmt: skip


def test_stats_by_key_equal_the_cli(driver: Any, server: Server, redis_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def table_is(key: str, direction: str) -> bool:
        t = driver.find_element(By.ID, "stats-table")
        return bool(t.get_attribute("data-key") == key and
                    t.get_attribute("data-direction") == direction)  # fmt: skip

    _open(driver, server.url + f"captures/{NAME}")
    assert table_is("ip", "uni")
    rows = _stats_rows(driver)
    assert len(rows) == 10 and rows == _cli_stats(redis_url, "ip")
    Select(driver.find_element(By.ID, "stats-key")).select_by_value("dport")
    driver.find_element(By.CSS_SELECTOR, "#stats-form button").click()
    wait_until(lambda: "key=dport" in driver.current_url, 60, "the dport statistics")
    wait_until(lambda: table_is("dport", "uni"), 60, "the table of dport")
    dport = _stats_rows(driver)
    assert dport and dport != rows and dport == _cli_stats(redis_url, "dport")
    # the top's switch to conversations keeps the key and applies to the statistics too
    Select(driver.find_element(By.ID, "direction")).select_by_value("bi")
    driver.find_element(By.CSS_SELECTOR, "#top form.controls button").click()
    wait_until(lambda: "direction=bi" in driver.current_url, 60, "the bi view")
    wait_until(lambda: table_is("dport", "bi"), 60, "the table of dport, bi")
    bi = _stats_rows(driver)
    assert bi != dport and bi == _cli_stats(redis_url, "dport", "--direction", "bi")


def _plot_pixels(driver: Any, element_id: str) -> tuple[int, float]:
    """Distinct colours and the share of non-white pixels in a screenshot of the element."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    el = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView()", el)
    img = Image.open(io.BytesIO(el.screenshot_as_png)).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 24) or []
    white = sum(n for n, c in colours if min(c) >= 245)
    return len(colours), 1 - white / (img.width * img.height)


def test_figures_render(driver: Any, server: Server) -> None:
    _open(driver, server.url + f"captures/{NAME}")
    for img in ("plot-sizes", "plot-timeline"):
        wait_until(
            lambda img=img: driver.execute_script(
                "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0",
                img,
            ),
            120,
            f"{img} to load",
        )
        colours, inked = _plot_pixels(driver, img)
        assert colours > 50 and inked > 0.05, (img, colours, inked)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(height + 50, 8000))
    driver.execute_script("window.scrollTo(0, 0)")
    OUT.mkdir(exist_ok=True)
    driver.save_screenshot(str(OUT / "web-capture.png"))
    driver.set_window_size(1400, 1000)
    assert (OUT / "web-capture.png").stat().st_size > 50_000


def test_clicking_a_column_header_ranks_by_it(driver: Any, server: Server, redis_url: str) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, server.url + f"captures/{NAME}")
    for col in ("packets", "duration", "rate", "bytes"):
        driver.find_element(By.CSS_SELECTOR, f'#top-table a[data-sort="{col}"]').click()
        wait_until(lambda col=col: driver.find_element(By.ID, "top-table").get_attribute("data-by") == col,
                   60, f"the table ranked by {col}")  # fmt: skip
        rows = _rows(driver)
        assert _as_cli(rows, "uni") == _cli_rows(redis_url, "uni", "--by", col), col
        sorted_th = driver.find_element(By.CSS_SELECTOR, "#top-table th.sorted")
        assert sorted_th.get_attribute("aria-sort") == "descending" and col in sorted_th.text
        if col == "packets":
            counts = [int(r["packets"]) for r in rows]
            assert counts == sorted(counts, reverse=True)
            by_packets = rows
    assert _as_cli(_rows(driver), "uni") != _as_cli(by_packets, "uni")  # the orders differ


def test_live_capture_numbers_move(
    driver: Any, server: Server, store: Store, redis_url: str, tmp_path: Path
) -> None:
    trace = tmp_path / "live.pcap"
    packets = write_trace(trace, flows=20, seed=3)
    settings = settings_for(redis_url, batch_packets=40)
    submit_with(store, settings, trace, "live")  # every batch queued, no worker yet
    _open(driver, server.url + "captures/live")

    def shown() -> tuple[int, str]:  # read in one script: the refresh replaces the elements
        got = driver.execute_script(
            "return [document.getElementById('packets').dataset.value,"
            " document.getElementById('state').textContent.trim()]"
        )
        return int(got[0]), str(got[1])

    assert shown() == (0, "processing")
    assert not _rows(driver) and not _stats_rows(driver)
    driver.execute_script("window.sameDocument = true")
    with LocalWorkers(redis_url, settings.queue, 1) as w:
        wait_until(lambda: (w.check(), shown()[0] > 0)[1], 120, "the page's packets to move")
        wait_until(lambda: (w.check(), shown()[1] == "complete")[1], 120,
                   "the page to show the capture complete")  # fmt: skip
    assert driver.execute_script("return window.sameDocument === true")  # refreshed in place
    assert shown() == (packets, "complete")
    wait_until(lambda: len(_rows(driver)) == 20, 60, "the top table to fill")
    assert _as_cli(_rows(driver), "uni") == _cli_rows(redis_url, "uni", name="live")
    wait_until(lambda: len(_stats_rows(driver)) == 10, 60, "the statistics to fill")
    assert _stats_rows(driver) == _cli_stats(redis_url, "ip", name="live")
    _open(driver, server.url)
    names = driver.execute_script(
        "return Array.from(document.querySelectorAll('#captures tr[data-name]'), r => r.dataset.name)"
    )
    assert names == sorted([NAME, "live"])
