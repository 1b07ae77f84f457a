"""``producer status``'s table (console/show.py): a live capture's drop counters, and one line per
sniffer process when ``--fanout`` ran several."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from flowherd.console.show import status_table
from flowherd.models.capture import CaptureState, CaptureStatus
from flowherd.models.state import SnifferMember


def _status(**live: Any) -> CaptureStatus:
    return CaptureStatus(
        name="fan",
        run="ab12cd34",
        state=CaptureState.COMPLETE,
        created_ns=1_700_000_000_000_000_000,
        sources=["live:eth0"],
        batches_enqueued=3,
        batches_done=3,
        batches_failed=0,
        total_batches=3,
        packets=1_234_560,
        bytes=99_000_000,
        counted_packets=1_234_560,
        counted_bytes=99_000_000,
        flows=40,
        not_counted={},
        first_ns=None,
        last_ns=None,
        **live,
    )


def _lines(st: CaptureStatus) -> list[str]:
    con = Console(file=io.StringIO(), width=160, record=True)
    con.print(status_table(st))
    return [" ".join(line.strip("│ ").split()) for line in con.export_text().splitlines()]


def test_status_prints_one_line_per_sniffer_process() -> None:
    st = _status(
        kernel_packets=1_234_572,
        kernel_drops=12,
        producer_drops=0,
        members=[
            SnifferMember(member=1, pid=4241, packets=1_234_567, drops=12),
            SnifferMember(member=2, pid=4242, packets=5, drops=0, state="died", signal="SIGKILL"),
        ],
    )
    lines = _lines(st)
    at = lines.index("drops │ kernel dropped 12 of 1,234,572 packets; producer dropped 0")
    assert lines[at + 1 : at + 3] == [
        "process 1 (pid 4241) │ 1,234,567 frames, 12 dropped by the kernel",
        "process 2 (pid 4242) │ 5 frames, 0 dropped by the kernel; died of SIGKILL",
    ]


def test_one_sniffer_process_gets_no_line_of_its_own_and_a_file_capture_no_drops() -> None:
    one = _status(
        kernel_packets=10,
        kernel_drops=0,
        producer_drops=2,
        members=[SnifferMember(member=1, pid=7, packets=10, drops=0)],
    )
    lines = _lines(one)
    assert "drops │ kernel dropped 0 of 10 packets; producer dropped 2" in lines
    assert not any("process 1" in x for x in lines)
    # recvmsg where the kernel gives no counters: the producer's own drops still show
    none = _lines(_status(producer_drops=0))
    assert "drops │ kernel drop counters unavailable; producer dropped 0" in none
    assert not any(x.startswith("drops") for x in _lines(_status()))
