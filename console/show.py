"""Human display of a capture's status and report (rich, to any console), for every CLI."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from flowherd.console.tables import elephants_table, rows_table, summary_table
from flowherd.console.units import human_bytes, human_ts
from flowherd.models.capture import CaptureState, CaptureStatus, RecordsLeft
from flowherd.models.report import Report
from flowherd.store.backend import Store
from flowherd.store.captures import load_report, run_of


def err_console() -> Console:
    """Standard error for progress and warnings: a warning stays one line even when stderr is
    not a terminal (rich would otherwise wrap it at 80 columns)."""
    return Console(stderr=True, soft_wrap=True)


def out_console() -> Console:
    """Standard output: the terminal's width on a TTY, wide enough for every column otherwise."""
    con = Console()
    return con if con.is_terminal else Console(width=200)


def status_table(st: CaptureStatus) -> Table:
    t = Table(title=f"Capture {st.name}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    total = "?" if st.total_batches is None else str(st.total_batches)
    t.add_row("state", st.state.value)
    t.add_row("sources", ", ".join(st.sources))
    t.add_row("submitted", human_ts(st.created_ns))
    t.add_row(
        "batches",
        f"{st.batches_enqueued} queued, {st.batches_done}/{total} merged, "
        f"{st.batches_failed} failed",
    )
    t.add_row("packets merged", f"{st.packets:,} ({human_bytes(st.bytes)})")
    t.add_row("rate", f"{st.rate_pps:,.0f} packets/s over {st.elapsed_s:,.1f} s since submission")
    t.add_row("counted in flows", f"{st.counted_packets:,} packets in {st.flows:,} conversations")
    for b, c in sorted(st.not_counted.items()):
        t.add_row(f"not counted: {b}", f"{c.packets:,} packets ({human_bytes(c.bytes)})")
    if st.first_ns is not None and st.last_ns is not None and st.last_ns > st.first_ns:
        t.add_row("trace time", f"{human_ts(st.first_ns)} .. {human_ts(st.last_ns)}")
    if st.kernel_packets is not None or st.producer_drops is not None:
        t.add_row("drops", drops_text(st))
    if len(st.members) > 1:
        for m in st.members:
            t.add_row(
                f"  {m.label}", f"[red]{m.describe()}[/]" if m.state == "died" else m.describe()
            )
    if st.records_left is not None:
        t.add_row("records left", records_left_text(st.records_left))
    for w in st.warnings:
        t.add_row("[yellow]warning[/]", w)
    for f in st.failures:
        t.add_row("[red]failed batch[/]", f)
    if st.parts_done:
        t.add_row("parts per shard", " ".join(str(n) for n in st.parts_done))
    for lost in st.lost_parts[:20]:
        t.add_row("[red]lost part[/]", lost)
    return t


def drops_text(st: CaptureStatus) -> str:
    """A live capture's drop counters: ``kernel dropped 12 of 2,400,000 packets; producer
    dropped 0``."""
    if st.kernel_packets is None:
        text = "kernel drop counters unavailable"
    else:
        text = f"kernel dropped {st.kernel_drops or 0:,} of {st.kernel_packets:,} packets"
    return f"{text}; producer dropped {st.producer_drops or 0:,}"


def records_left_text(r: RecordsLeft) -> str:
    """``12,345 records (1,234,567 packets, 1.2 GB) to /var/flows (ndjson) in 3 files; 2,001
    conversations open``."""
    files = f" in {r.files:,} file{'' if r.files == 1 else 's'}" if r.files else ""
    late = f"; {r.late_packets:,} late packets" if r.late_packets else ""
    return (
        f"{r.records:,} records ({r.packets:,} packets, {human_bytes(r.bytes)}) to {r.to}"
        f"{files}; {r.open:,} conversations open{late}"
    )


def show_status(console: Console, st: CaptureStatus) -> None:
    console.print(status_table(st))


def show_outcome(conn: Store, name: str, st: CaptureStatus, n: int) -> bool:
    """After following a capture: its report (or status when there is none) on standard output,
    and one error line when it did not complete. True when it completed."""
    report = load_report(conn, run_of(conn, name))
    if report is not None:
        show_report(out_console(), report, n)
    else:
        show_status(out_console(), st)
    if st.state is not CaptureState.COMPLETE:
        err_console().print(
            f"error: capture {name!r} is {st.state.value}: see `producer status {name}`",
            highlight=False,
            markup=False,
        )
        return False
    return True


def show_report(console: Console, report: Report, n: int = 10) -> None:
    """Summary, the top ``n`` unidirectional flows and the elephants of every rule."""
    console.print(summary_table(report.summary))
    console.print(
        rows_table(report.top_uni[:n], f"Top {min(n, len(report.top_uni))} flows by bytes")
    )
    console.print(elephants_table(report.elephants))
    if not report.complete:
        console.print(
            "[red]incomplete:[/] some batches are missing or failed; see `producer status`"
        )
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}")
