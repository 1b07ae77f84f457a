"""Heavy hitters beyond size end to end: a scapy capture with one long, one fast and one bursty
flow among short ones, through real RQ workers, read back with ``reporter summary`` and
``reporter hist``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowherd.models.capture import CaptureState
from flowherd.producer.run.follow import LocalWorkers
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from tests.support.pipeline import run_capture, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e]
T0 = 1_704_067_200.0
WINDOW = 5.0


def _write(path: Path) -> dict[str, int]:
    """The capture, and the bytes on the wire of each special flow (by name)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    pkts = []
    sizes: dict[str, int] = {}

    def send(name: str, src: str, sport: int, t: float, payload: int) -> None:
        p = Ether() / IP(src=src, dst="10.9.9.9") / UDP(sport=sport, dport=9) / Raw(b"x" * payload)
        p.time = T0 + t
        pkts.append(p)
        sizes[name] = sizes.get(name, 0) + len(p)

    for i in range(80):  # short flows: 3 packets, 0.2-0.98 s, a few hundred bytes
        for j in range(3):
            send(f"bg{i}", f"10.0.{i // 200}.{i % 200 + 1}", 1000 + i, i + j * (0.1 + i / 200), 100)
    for j in range(11):  # the tortoise: 100 s, slow
        send("tortoise", "10.1.0.1", 2000, j * 10.0, 60)
    for j in range(200):  # the cheetah: 200 full packets in 0.2 s
        send("cheetah", "10.1.0.2", 2001, 30.0 + j * 0.001, 1400)
    for j in range(300):  # the porcupine: one burst in one window, then a trickle for 20 s
        send("porcupine", "10.1.0.3", 2002, 50.0 + j * 0.003, 1400)
    for j in range(1, 21):
        send("porcupine", "10.1.0.3", 2002, 51.0 + j, 60)
    pkts.sort(key=lambda p: p.time)
    wrpcap(str(path), pkts)
    return sizes


def _cli(redis_url: str, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(reporter_main, [*args, "--redis-url", redis_url])
    return res.exit_code, res.output


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 3])
def test_tortoises_cheetahs_porcupines_from_the_cli(
    store: Store, redis_url: str, tmp_path: Path, workers: int
) -> None:
    path = tmp_path / "heavy.pcap"
    sizes = _write(path)
    settings = settings_for(redis_url, batch_packets=100, window=WINDOW)
    with LocalWorkers(redis_url, settings.queue, workers) as w:
        st = run_capture(store, settings, [str(path)], "heavy", w)
        flat = run_capture(store, settings_for(redis_url, settings.queue), [str(path)], "flat", w)
    assert st.state is CaptureState.COMPLETE and flat.state is CaptureState.COMPLETE

    code, out = _cli(redis_url, "summary", "heavy", "--json")  # the stored report: defaults
    assert code == 0, out
    rep = json.loads(out)
    assert [h["rule"]["name"] for h in rep["heavy"]] == ["tortoises", "cheetahs"]
    assert rep["tail"]["flows"] == 83 and rep["tail"]["complete"] is True

    rules = ["tortoises", "cheetahs", "porcupines", "duration:30s", "rate:1MB/s", "top:1"]
    args = [a for r in rules for a in ("--rule", r)]
    code, out = _cli(redis_url, "summary", "heavy", "--json", *args)
    assert code == 0, out
    rep = json.loads(out)
    got = {h["rule"]["name"]: (h["flows"], h["bytes"]) for h in rep["heavy"]}
    assert got == {
        "tortoises": (1, sizes["tortoise"]),  # 100 s, where the porcupine lasts 21 s
        "cheetahs": (1, sizes["cheetah"]),  # 1.4 MB/s; everything else is below 30 kB/s
        # the most bytes in one 5 s window: the burst, and the cheetah's whole 0.2 s
        "porcupines": (2, sizes["porcupine"] + sizes["cheetah"]),
        "duration-30s": (1, sizes["tortoise"]),
        "rate-1MB/s": (1, sizes["cheetah"]),
    }
    porc = next(h for h in rep["heavy"] if h["rule"]["name"] == "porcupines")
    assert porc["window_ns"] == WINDOW * 1e9 and porc["population"] == 83
    assert [e["rule"]["name"] for e in rep["elephants"]] == ["top1"]
    assert rep["elephants"][0]["bytes"] == sizes["porcupine"]

    code, text = _cli(redis_url, "summary", "heavy", "--rule", "porcupines", "--rule", "top:3")
    assert code == 0, text
    for words in ("Heavy hitters beyond size", "porcupines", "Elephant flows", "Tail of the"):
        assert words in text

    code, out = _cli(redis_url, "summary", "flat", "--rule", "burst:3sd")
    assert code == 1 and out.count("\n") == 1 and "no windows" in out, out
    code, out = _cli(redis_url, "summary", "flat", "--rule", "speed:3sd")
    assert code == 2 and "duration:Ksd" in out

    png = tmp_path / "sizes.png"
    code, out = _cli(redis_url, "hist", "heavy", "-o", str(png))
    assert code == 0, out
    assert png.stat().st_size > 10_000
