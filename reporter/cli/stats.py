"""``reporter stats``: packets, bytes and flows per IP, port, protocol, prefix or host pair."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO, cast

import click
from rich.table import Table

from flowherd.console.cli import handle_errors, open_backend, redis_options, settings_from
from flowherd.console.show import out_console
from flowherd.models.errors import CaptureStateError
from flowherd.models.flows import ts_text
from flowherd.models.keys import RunKeys
from flowherd.reporter.analysis.elephants import parse_size
from flowherd.reporter.analysis.stats import (
    BY,
    KEY_FORMS,
    By,
    KeySpec,
    StatRow,
    Totals,
    View,
    key_stats,
    parse_key,
)
from flowherd.reporter.output.render import human_bytes, human_ts
from flowherd.reporter.query import windows
from flowherd.reporter.where.apply import Where, filtered, where_option
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_raw, table

HELP = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
COLUMNS = (
    "key", "packets", "bytes", "flows", "packets_pct", "bytes_pct", "flows_pct",
    "pps", "bps", "first_ts", "last_ts",
)  # fmt: skip


def _cells(r: StatRow) -> list[Any]:
    return [
        r.key, r.packets, r.bytes, r.flows,
        f"{r.packets_pct:.6f}", f"{r.bytes_pct:.6f}", f"{r.flows_pct:.6f}",
        f"{r.pps:.3f}", f"{r.bps:.3f}", ts_text(r.first_ns), ts_text(r.last_ns),
    ]  # fmt: skip


def _json_row(r: StatRow) -> str:
    c = _cells(r)
    d = dict(zip(COLUMNS, c, strict=True))
    for f in ("packets_pct", "bytes_pct", "flows_pct", "pps", "bps"):
        d[f] = float(d[f])
    return json.dumps(d)


def _head(name: str, spec: KeySpec, by: str, direction: str, tot: Totals) -> dict[str, Any]:
    return {
        "name": name,
        "key": str(spec),
        "by": by,
        "direction": direction,
        "totals": {"packets": tot.packets, "bytes": tot.bytes, "flows": tot.flows},
    }


def _write_json(out: TextIO, head: dict[str, Any], rows: Iterator[StatRow]) -> None:
    out.write(json.dumps(head)[:-1] + ', "rows": [')
    for i, r in enumerate(rows):
        out.write(("," if i else "") + _json_row(r))
    out.write("]}")


def _print_table(title: str, tot: Totals, rows: Iterator[StatRow], what: str) -> None:
    t = Table(title=title)
    for h in (what, "flows", "%", "packets", "%", "bytes", "%", "pps", "bit/s"):
        t.add_column(h, justify="left" if h == what else "right")
    for r in rows:
        t.add_row(
            r.key,
            f"{r.flows:,}",
            f"{r.flows_pct:.2f}",
            f"{r.packets:,}",
            f"{r.packets_pct:.2f}",
            human_bytes(r.bytes),
            f"{r.bytes_pct:.2f}",
            f"{r.pps:,.1f}",
            f"{r.bps:,.0f}",
        )
    t.caption = f"of {tot.flows:,} flows, {tot.packets:,} packets, {human_bytes(tot.bytes)}"
    out_console().print(t)


def _threshold(text: str | None, by: str) -> float | None:
    if text is None:
        return None
    try:
        if by == "bytes":
            return parse_size(text)
        x = float(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threshold") from None
    if x != x or x < 0:
        raise click.BadParameter(f"must be a number >= 0, not {text!r}", param_hint="--threshold")
    return x


@click.command("stats", context_settings=HELP)
@click.argument("name")
@click.option("--key", "key_text", required=True, metavar="KEY",
              help=f"What to count by: {KEY_FORMS}. N is an IPv4 prefix length (IPv6 "
              "addresses get /64); net/N,M sets IPv6's to M. ip, port and net/N count both "
              "endpoints of each flow.")  # fmt: skip
@click.option("--by", type=click.Choice(BY), default="bytes", show_default=True,
              help="Order (and --threshold/--percentage) by this figure. pps and bps are "
              "packets and bits per second over the key's active span "
              "(first to last).")  # fmt: skip
@click.option("-n", "num", type=click.IntRange(0), default=None,
              help="Show the N best keys; 0: all. Default 10, or all with --threshold or "
              "--percentage.")  # fmt: skip
@click.option("--threshold", metavar="X",
              help="Only keys whose --by figure is at least X (bytes take units: "
              "10MB, 1GiB).")  # fmt: skip
@click.option("--percentage", type=click.FloatRange(0, 100), metavar="P",
              help="Only keys with at least P percent of the capture's --by total.")  # fmt: skip
@click.option("--direction", type=click.Choice(["uni", "bi"]), default="uni", show_default=True,
              help="uni: a flow is one direction (NetFlow, nfdump); bi: one conversation, whose "
              "source is the endpoint that sent first.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)  # fmt: skip
@click.option("--window", "which", metavar="latest|all|TIME",
              help="Within tumbling windows instead of the whole capture: the latest window, "
              "every window, or the one containing TIME (epoch seconds).")  # fmt: skip
@where_option
@redis_options
@handle_errors
def stats_cmd(
    name: str,
    key_text: str,
    by: str,
    num: int | None,
    threshold: str | None,
    percentage: float | None,
    direction: str,
    fmt: str,
    which: str | None,
    where: Where | None,
    redis_url: str | None,
    queue: str,
) -> None:
    """Statistics of capture NAME by KEY: packets, bytes, flows and their shares of the
    capture, and rates, per address, port, protocol, prefix or address pair (nfdump -s,
    SiLK rwstats, tshark -z endpoints).

    CSV columns: key,packets,bytes,flows,packets_pct,bytes_pct,flows_pct,pps,bps,first_ts,
    last_ts. Shares are percents of the flows, packets and bytes counted (for ip, port and net
    they add up to 200: each flow counts for both endpoints); with --where, of the matching
    flows'.

    \b
    Examples:
      reporter stats day1 --key srcip                    # top 10 sources by bytes
      reporter stats day1 --key dport --by flows -n 20
      reporter stats day1 --key ip -n 0 --format csv     # every address (tshark -z endpoints)
      reporter stats day1 --key net/16 --percentage 5    # /16s (IPv6 /64) with >= 5% of bytes
      reporter stats day1 --key pair --direction bi --by packets
      reporter stats day1 --key proto --window all --format json
      reporter stats day1 --key dstip --where 'proto tcp and dport 443'
    """
    try:
        spec = parse_key(key_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from None
    if threshold is not None and percentage is not None:
        raise click.UsageError("give --threshold or --percentage, not both")
    if percentage is not None and by in ("pps", "bps"):
        raise click.BadParameter(
            f"a share of {by} means nothing: use --threshold", param_hint="--percentage"
        )
    floor = _threshold(threshold, by)
    n = num if num is not None else (0 if floor is not None or percentage is not None else 10)
    conn, _, _ = open_backend(settings_from(redis_url, queue))
    keys = run_of(conn, name)
    starts = None if which is None else list(windows.select(conn, keys, name, which))
    write_stats(
        sys.stdout, conn, keys, name, spec, by, n, direction, fmt, starts, floor, percentage, where
    )


def write_stats(
    out: TextIO,
    conn: Store,
    keys: RunKeys,
    name: str,
    spec: KeySpec,
    by: str,
    n: int,
    direction: str,
    fmt: str = "json",
    starts: list[int] | None = None,
    floor: float | None = None,
    percentage: float | None = None,
    where: Where | None = None,
) -> None:
    """Write what ``reporter stats`` prints in ``fmt`` to ``out``: the statistics of capture
    ``name`` (run ``keys``) by ``spec``, of the whole capture (``starts`` None) or of each
    window starting at ``starts`` (JSON: a list of documents). The web view's stats API
    answers this JSON."""
    view = cast(View, direction)
    if fmt == "json" and starts is not None:
        out.write("[")
    wins: list[int | None] = [None] if starts is None else list(starts)
    for i, start in enumerate(wins):
        pairs = filtered(iter_raw(conn, table(keys, start)), where, view)
        try:
            with key_stats(pairs, spec, view, cast(By, by), n, floor, percentage) as (tot, rows):
                _emit(out, fmt, i, start, name, spec, by, direction, tot, rows)
        except OSError as exc:
            raise CaptureStateError(
                f"cannot write temporary files for the statistics: {exc}"
            ) from None
    if fmt == "json":
        out.write("]\n" if starts is not None else "\n")


def _emit(
    out: TextIO,
    fmt: str,
    i: int,
    start: int | None,
    name: str,
    spec: KeySpec,
    by: str,
    direction: str,
    tot: Totals,
    rows: Iterator[StatRow],
) -> None:
    if fmt == "csv":
        if start is not None:
            out.write(f"# window {ts_text(start)}\n")
        w = csv.writer(out, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(_cells(r) for r in rows)
    elif fmt == "json":
        head = _head(name, spec, by, direction, tot)
        if start is not None:
            out.write("," if i else "")
            head["window_start"] = ts_text(start)
        _write_json(out, head, rows)
    else:
        when = "" if start is None else f", window {human_ts(start)}"
        _print_table(f"{name}: {spec} by {by} ({direction}){when}", tot, rows, str(spec))
