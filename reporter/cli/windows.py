"""``reporter windows``, ``reporter persist`` and ``reporter watch``: captures over time.

Each takes ``--where`` (:mod:`flowherd.reporter.where.apply`): ``windows`` then totals the matching
conversations of each window, ``persist`` and ``watch`` rank the matching flows only."""

from __future__ import annotations

import time

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flowherd.console.cli import HELP, handle_errors, open_backend, redis_options, settings_from
from flowherd.console.show import out_console
from flowherd.models.capture import CaptureStatus
from flowherd.models.flows import FlowStats, ts_text
from flowherd.models.keys import RunKeys
from flowherd.models.report import FlowRow, WindowSummary
from flowherd.reporter.analysis.distribution import human_bytes
from flowherd.reporter.output.render import human_ts, proto_name, rows_table
from flowherd.reporter.query import windows
from flowherd.reporter.query.rows import top_rows
from flowherd.reporter.where.apply import Where, filtered, where_option
from flowherd.store.backend import Store
from flowherd.store.captures import run_of, status
from flowherd.store.tables import iter_raw
from flowherd.store.tables import table as run_table


def _matching(conn: Store, keys: RunKeys, where: Where) -> list[WindowSummary]:
    """Each window's totals over its conversations that match ``where`` (bi view)."""
    out = []
    for w in windows.summaries(conn, keys):
        packets = nbytes = convs = 0
        for _, v in filtered(iter_raw(conn, run_table(keys, w.start_ns)), where, "bi"):
            st = FlowStats.unpack(v)
            packets, nbytes, convs = packets + st.packets, nbytes + st.bytes, convs + 1
        out.append(w.model_copy(update={"packets": packets, "bytes": nbytes, "flows": convs}))
    return out


@click.command("windows", context_settings=HELP)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@where_option
@redis_options
@handle_errors
def windows_cmd(
    name: str, as_json: bool, where: Where | None, redis_url: str | None, queue: str
) -> None:
    """List the tumbling windows of capture NAME with their totals (with --where: of the
    matching conversations, read from each window's table)."""
    conn, _, _ = open_backend(settings_from(redis_url, queue))
    keys = run_of(conn, name)
    rows = windows.summaries(conn, keys) if where is None else _matching(conn, keys, where)
    if as_json:
        click.echo("[" + ",".join(r.model_dump_json() for r in rows) + "]")
        return
    matching = "" if where is None else f", conversations where {where.text}"
    t = Table(title=f"{name}: {len(rows)} windows{matching}")
    for h in ("start (UTC)", "epoch", "packets", "bytes", "conversations"):
        t.add_column(h, justify="left" if h.startswith("start") else "right")
    for r in rows:
        t.add_row(
            human_ts(r.start_ns),
            ts_text(r.start_ns),
            f"{r.packets:,}",
            human_bytes(r.bytes),
            f"{r.flows:,}",
        )
    out_console().print(t)


@click.command("persist", context_settings=HELP)
@click.argument("name")
@click.option("-n", "num", type=click.IntRange(1), default=10, show_default=True,
              help="Top-N of each window that counts as an elephant.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@where_option
@redis_options
@handle_errors
def persist_cmd(
    name: str, num: int, as_json: bool, where: Where | None, redis_url: str | None, queue: str
) -> None:
    """Persistent elephants of capture NAME: the flows in the top NUM of the most windows
    (with --where: the top NUM of the matching flows of each window)."""
    conn, _, _ = open_backend(settings_from(redis_url, queue))
    keys = run_of(conn, name)
    windows.select(conn, keys, name, "all")  # a clear error when there are none
    if where is None:
        flows = windows.persistent(conn, keys, num)
    else:
        tops = {
            s: [r for r in top_rows(conn, run_table(keys, s), num, "bytes", "uni", None, where)
                if isinstance(r, FlowRow)]
            for s in windows.starts(conn, keys)
        }  # fmt: skip
        flows = windows.persistent_from(tops)
    total = len(windows.starts(conn, keys))
    if as_json:
        click.echo("[" + ",".join(f.model_dump_json() for f in flows) + "]")
        return
    t = Table(title=f"{name}: flows in the top {num} of its {total} windows")
    for h in ("source", "sport", "destination", "dport", "proto", "windows", "bytes", "in windows"):
        t.add_column(h, justify="right" if h in ("sport", "dport", "windows", "bytes") else "left")
    for f in flows:
        shown = ", ".join(human_ts(w)[11:19] for w in f.windows[:6]) + (
            " ..." if len(f.windows) > 6 else ""
        )
        cells = [f.src, str(f.sport), f.dst, str(f.dport), proto_name(f.proto)]
        t.add_row(*cells, f"{len(f.windows)}/{total}", human_bytes(f.bytes), shown)
    out_console().print(t)


def _watch_view(
    conn: Store,
    keys: RunKeys,
    name: str,
    num: int,
    prev: tuple[float, int, int] | None,
    where: Where | None = None,
) -> tuple[Group, tuple[float, int, int], CaptureStatus]:
    st = status(conn, name)
    now = time.monotonic()
    rate = ""
    if prev is not None and now > prev[0]:
        dt = now - prev[0]
        pps = (st.packets - prev[1]) / dt
        mbps = (st.bytes - prev[2]) * 8 / dt / 1e6
        rate = f"  {pps:,.0f} packets/s  {mbps:,.1f} Mbit/s"
    lag = st.batches_enqueued - st.batches_done - st.batches_failed
    head = Text(
        f"{name}  {st.state.value}  {st.packets:,} packets  {human_bytes(st.bytes)}{rate}  "
        f"lag: {lag} batches waiting  failed: {st.batches_failed}"
    )
    ws = windows.starts(conn, keys)
    what = "flows" if where is None else f"flows where {where.text}"
    if ws:
        rows = top_rows(conn, run_table(keys, ws[-1]), num, "bytes", "uni", None, where)
        title = f"top {len(rows)} {what} of the window starting {human_ts(ws[-1])}"
    else:
        rows = top_rows(conn, run_table(keys), num, "bytes", "uni", None, where)
        title = f"top {len(rows)} {what} of the whole capture (no windows)"
    table = rows_table(rows, title)
    return Group(head, table), (now, st.packets, st.bytes), st


@click.command("watch", context_settings=HELP)
@click.argument("name")
@click.option("-n", "num", type=click.IntRange(1), default=20, show_default=True)
@click.option("--interval", type=click.FloatRange(0.1), default=2.0, show_default=True,
              help="Seconds between refreshes.")  # fmt: skip
@click.option("--once", is_flag=True, help="Print one view and exit (for scripts).")
@where_option
@redis_options
@handle_errors
def watch_cmd(
    name: str,
    num: int,
    interval: float,
    once: bool,
    where: Where | None,
    redis_url: str | None,
    queue: str,
) -> None:
    """A view of capture NAME refreshed in place, like top: the current window's top flows,
    packets/s and bytes/s, and the workers' lag. Ctrl-C leaves; a finished capture exits."""
    conn, _, _ = open_backend(settings_from(redis_url, queue))
    keys = run_of(conn, name)
    con = out_console()
    view, prev, st = _watch_view(conn, keys, name, num, None, where)
    if once or not con.is_terminal:
        con.print(view)
        return
    with Live(view, console=con, refresh_per_second=4, screen=False) as live:
        while st.state.value not in ("complete", "failed", "aborted"):
            time.sleep(interval)
            view, prev, st = _watch_view(conn, keys, name, num, prev, where)
            live.update(view)
