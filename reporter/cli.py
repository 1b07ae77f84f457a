"""``reporter``: the flows of a capture, ranked, classified, exported and plotted.

reporter captures
reporter top trace -n 20 --by bytes --direction uni
reporter flows trace --direction bi --format csv > trace.bi.csv
reporter summary trace --json
reporter hist trace --top 100 -o sizes.pdf
"""

from __future__ import annotations

import sys
from typing import Any

import click

from console.cli import handle_errors, open_backend, redis_options, settings_from
from console.show import out_console, show_status
from models.errors import CaptureStateError
from models.flows import ts_text
from models.report import ConvRow, FlowRow
from reporter import windows
from reporter.build import stream_report
from reporter.cli_windows import persist_cmd, watch_cmd, windows_cmd
from reporter.elephants import DEFAULT_RULES, RULE_FORMS, classify_dist, parse_rule
from reporter.export import write_rows
from reporter.query import top_rows
from reporter.rank import RANK_BY, parse_proto
from reporter.ranked import write_rows_ranked
from reporter.render import (
    elephants_table,
    human_ts,
    rows_csv,
    rows_json,
    rows_table,
    summary_table,
)
from reporter.sizes import SizeDist
from reporter.stream import bi_sizes, uni_sizes
from store.captures import load_report, names, run_of, status
from store.tables import iter_raw, table

HELP = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
FORMATS = click.Choice(["table", "json", "csv"])
DIRECTION = click.Choice(["uni", "bi"])


@click.group(context_settings=HELP)
@click.version_option(package_name="flowherd")
def main() -> None:
    """flowherd reporter: top-N flows, elephants, distributions and exports of a capture.

    Flows are unidirectional 5-tuples (--direction uni, the NetFlow view) or bidirectional
    conversations (--direction bi, tshark's -z conv view); both come from the same table.

    \b
    Examples:
      reporter captures
      reporter top day1 -n 20 --by rate --proto tcp
      reporter top day1 --direction bi --format csv > top.csv
      reporter summary day1 --rule load:0.9 --rule bytes:10MB
      reporter hist day1 --top 100 -o sizes.pdf
      reporter persist day1 -n 10      # captures submitted with --window
    """


def _conn(redis_url: str | None, queue: str) -> Any:
    store, _, _ = open_backend(settings_from(redis_url, queue))
    return store


def _fresh_report(store: Any, keys: Any, st: Any, rules: list[Any]) -> Any:
    """The report computed now, in streaming passes; a capture still being merged can change
    between two passes: then say so."""
    import time

    try:
        return stream_report(st, lambda: iter_raw(store, table(keys)), time.time_ns(), rules=rules)
    except ValueError as exc:
        raise CaptureStateError(
            f"capture {st.name!r} changed while it was read ({exc}): it is still being merged; "
            "try again, or when it is complete"
        ) from None


def _emit(rows: list[FlowRow] | list[ConvRow], fmt: str, title: str, direction: str) -> None:
    if fmt == "csv":
        rows_csv(rows, sys.stdout, view="bi" if direction == "bi" else "uni")
    elif fmt == "json":
        click.echo(rows_json(rows))
    else:
        out_console().print(rows_table(rows, title))


@main.command(context_settings=HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@redis_options
@handle_errors
def captures(as_json: bool, redis_url: str | None, queue: str) -> None:
    """List the captures known, with state and totals."""
    conn = _conn(redis_url, queue)
    sts = [status(conn, n) for n in names(conn)]
    if as_json:
        click.echo("[" + ",".join(s.model_dump_json() for s in sts) + "]")
        return
    from rich.table import Table

    from reporter.distribution import human_bytes

    t = Table(title="Captures")
    for h in ("name", "state", "batches", "packets", "bytes", "conversations"):
        t.add_column(h, justify="left" if h in ("name", "state") else "right")
    for s in sts:
        t.add_row(
            s.name,
            s.state.value,
            f"{s.batches_done}/{s.total_batches or '?'}",
            f"{s.packets:,}",
            human_bytes(s.bytes),
            f"{s.flows:,}",
        )
    out_console().print(t)


@main.command("top", context_settings=HELP)
@click.argument("name")
@click.option("-n", "num", type=click.IntRange(1), default=20, show_default=True)
@click.option(
    "--by",
    type=click.Choice(RANK_BY),
    default="bytes",
    show_default=True,
    help="Rank by bytes, packets, duration, or rate (bytes/s over the flow's duration).",
)
@click.option("--direction", type=DIRECTION, default="uni", show_default=True)
@click.option(
    "--proto", help="Only this protocol: tcp, udp, icmp, icmpv6, gre, esp, sctp or a number."
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option(
    "--window",
    "which",
    metavar="latest|all|TIME",
    help="Rank within tumbling windows instead of the whole capture: the latest window, every "
    "window, or the one containing TIME (epoch seconds). Needs a capture made with --window.",
)
@redis_options
@handle_errors
def top_cmd(
    name: str,
    num: int,
    by: str,
    direction: str,
    proto: str | None,
    fmt: str,
    which: str | None,
    redis_url: str | None,
    queue: str,
) -> None:
    """The NUM largest flows of capture NAME.

    By bytes without --proto this reads the ranking kept in Redis; other orders scan the table.
    """
    try:
        p = parse_proto(proto) if proto else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--proto") from None
    conn = _conn(redis_url, queue)
    keys = run_of(conn, name)
    what = "conversations" if direction == "bi" else "flows"
    if which is None:
        rows = top_rows(conn, table(keys), num, by, direction, p)  # type: ignore[arg-type]
        _emit(rows, fmt, f"{name}: top {len(rows)} {what} by {by}", direction)  # type: ignore[arg-type]
        return
    per_window = [
        (s, top_rows(conn, table(keys, s), num, by, direction, p))  # type: ignore[arg-type]
        for s in windows.select(conn, keys, name, which)
    ]
    if fmt == "json":
        items = [
            f'{{"window_start": "{ts_text(s)}", "rows": {rows_json(r)}}}'  # type: ignore[arg-type]
            for s, r in per_window
        ]
        click.echo("[" + ",".join(items) + "]")
        return
    for s, r in per_window:
        if fmt == "csv":
            click.echo(f"# window {ts_text(s)}")
        _emit(r, fmt, f"{name}: top {len(r)} {what} by {by}, window {human_ts(s)}", direction)  # type: ignore[arg-type]


@main.command(context_settings=HELP)
@click.argument("name")
@click.option("--direction", type=DIRECTION, default="uni", show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "jsonl"]),
    default="csv",
    show_default=True,
    help="csv (with a header), json (one array) or jsonl (one object per line).",
)
@click.option(
    "--order",
    type=click.Choice(["table", "rank"]),
    default="table",
    show_default=True,
    help="table: as stored, streamed shard by shard in memory that does not grow with the "
    "capture (the fastest); rank: largest first (bytes, then packets, then the key), sorted "
    "through temporary files in bounded memory.",
)
@redis_options
@handle_errors
def flows(
    name: str, direction: str, fmt: str, order: str, redis_url: str | None, queue: str
) -> None:
    """Every flow of capture NAME, for other programs: CSV, JSON or JSON lines.

    CSV columns are those of tshark-derived flow tables: uni
    src,dst,proto,sport,dport,packets,bytes,first_ts,last_ts; bi
    proto,a_addr,a_port,b_addr,b_port,frames_a_to_b,bytes_a_to_b,frames_b_to_a,bytes_b_to_a,frames,bytes,first_ts,last_ts
    (timestamps in epoch seconds with 9 decimals). For a ranked table on the terminal, use
    `reporter top`.

    \b
    Examples:
      reporter flows day1 > day1.uni.csv
      reporter flows day1 --direction bi --order rank > day1.bi.csv
      reporter flows day1 --format jsonl | jq -c 'select(.bytes > 1e6)'
    """
    conn = _conn(redis_url, queue)
    pairs = iter_raw(conn, table(run_of(conn, name)))
    view = "bi" if direction == "bi" else "uni"
    if order == "rank":
        write_rows_ranked(pairs, sys.stdout, view, fmt)  # type: ignore[arg-type]
    else:
        write_rows(pairs, sys.stdout, view, fmt)  # type: ignore[arg-type]
    if fmt == "json":
        sys.stdout.write("\n")


@main.command(context_settings=HELP)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--rule",
    "rules",
    multiple=True,
    metavar="RULE",
    help=f"Elephant rule(s) instead of the defaults: {RULE_FORMS}. Repeatable.",
)
@redis_options
@handle_errors
def summary(
    name: str, as_json: bool, rules: tuple[str, ...], redis_url: str | None, queue: str
) -> None:
    """Totals of capture NAME, the not-counted buckets, byte shares and elephant flows."""
    try:
        chosen = [parse_rule(r) for r in rules] or list(DEFAULT_RULES)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rule") from None
    conn = _conn(redis_url, queue)
    keys = run_of(conn, name)
    report = load_report(conn, keys)
    st = status(conn, name)
    if report is None or rules or report.summary.packets != st.packets:
        report = _fresh_report(conn, keys, st, chosen)
    if as_json:
        click.echo(report.model_dump_json(indent=1))
        return
    con = out_console()
    if not report.complete:
        show_status(con, st)
    con.print(summary_table(report.summary))
    con.print(elephants_table(report.elephants))
    for w in report.warnings:
        con.print(f"[yellow]warning:[/] {w}")


@main.command(context_settings=HELP)
@click.argument("name")
@click.option(
    "--top",
    "top_n",
    type=click.IntRange(1),
    default=None,
    help="Histogram of the TOP largest flows only (the classic top-N plot).",
)
@click.option("--direction", type=DIRECTION, default="uni", show_default=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file: .pdf, .png or .svg.",
)
@click.option(
    "--timeline",
    is_flag=True,
    help="Bytes per window of the largest flows (stacked), beside the size histogram. Needs a "
    "capture made with --window.",
)
@click.option("--flows", "nflows", type=click.IntRange(1, 50), default=10, show_default=True,
              help="Flows drawn with --timeline.")  # fmt: skip
@redis_options
@handle_errors
def hist(
    name: str,
    top_n: int | None,
    direction: str,
    output: str,
    timeline: bool,
    nflows: int,
    redis_url: str | None,
    queue: str,
) -> None:
    """Plot the flow size distribution of capture NAME: a histogram of sizes (KB, log count
    axis) beside the CCDF of sizes and the cumulative share of bytes; with --timeline, the
    largest flows' bytes per window beside the histogram."""
    from reporter.plots import FORMATS as PLOT_FORMATS
    from reporter.plots import save_figure, size_histogram_figure, timeline_figure

    if not output.lower().endswith(PLOT_FORMATS):
        raise click.BadParameter(f"use one of {', '.join(PLOT_FORMATS)}", param_hint="--output")
    conn = _conn(redis_url, queue)
    keys = run_of(conn, name)
    t = table(keys)
    sizes_of = bi_sizes if direction == "bi" else uni_sizes
    dist = SizeDist.of(sizes_of(iter_raw(conn, t)))  # one pass: exact counts per size bucket
    if not dist.n:
        raise CaptureStateError(f"capture {name!r} has no flows to plot")
    rules, _ = classify_dist(dist, DEFAULT_RULES, lambda: sizes_of(iter_raw(conn, t)))
    if timeline:
        windows.select(conn, keys, name, "all")  # a clear error when there are none
        starts, series = windows.timeline(conn, keys, nflows)
        fig = timeline_figure(starts, series, dist, top_n, name, rules)
    else:
        fig = size_histogram_figure(dist, top_n, name, rules)
    path = save_figure(fig, output)
    click.echo(f"wrote {path}", err=True)


main.add_command(windows_cmd)
main.add_command(persist_cmd)
main.add_command(watch_cmd)
