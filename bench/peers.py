"""The tools flowherd is compared with, timed on the same trace: tshark's conversation tables and
NFStream's flow meter.

    tshark -n -r TRACE -q -z conv,tcp -z conv,udp
    NFStreamer(source=TRACE, statistical_analysis=False, n_dissections=0,
               idle_timeout=HUGE, active_timeout=HUGE)

NFStream runs in a child process (its meters are processes of their own) with its timeouts
pushed beyond any trace's span and no DPI, so it does the same job as the others: one record per
bidirectional conversation. It comes from the optional ``bench`` extra
(``pip install -e '.[bench]'``); without it the NFStream row says so and the rest still runs.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: seconds: beyond any trace's span, so no flow is ever split by a timeout
HUGE_TIMEOUT = 10**7

_NFSTREAM = f"""
import sys
from nfstream import NFStreamer
n = 0
for _ in NFStreamer(source=sys.argv[1], statistical_analysis=False, n_dissections=0,
                    idle_timeout={HUGE_TIMEOUT}, active_timeout={HUGE_TIMEOUT}):
    n += 1
print(n)
"""


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and its waited-for children so far: a
    figure the other programs on a shared machine disturb less than wall time."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def tshark_conv(trace: Path) -> dict[str, float | int | str | None]:
    """Wall seconds of tshark's TCP and UDP conversation tables over ``trace``."""
    exe = shutil.which("tshark")
    if exe is None:
        return {"tool": "tshark", "seconds": None, "error": "tshark is not installed"}
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = subprocess.run(
        [exe, "-n", "-r", str(trace), "-q", "-z", "conv,tcp", "-z", "conv,udp"],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    # conversation lines hold "<->"; the two tables' headers do not
    convs = sum(1 for line in out.stdout.splitlines() if "<->" in line)
    return {
        "tool": "tshark",
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "conversations": convs,
    }


def nfstream_flows(trace: Path) -> dict[str, float | int | str | None]:
    """Wall seconds of NFStream metering ``trace`` (timeouts off, no DPI, no statistics)."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _NFSTREAM, str(trace)], capture_output=True, text=True
    )
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["failed"])[-1]
        return {"tool": "nfstream", "seconds": None, "error": last}
    flows = int(out.stdout.strip().splitlines()[-1])
    return {
        "tool": "nfstream",
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "conversations": flows,
    }
