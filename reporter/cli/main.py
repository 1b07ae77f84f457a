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

from flowherd.console.cli import (
    HELP,
    OneLineGroup,
    handle_errors,
    open_backend,
    redis_options,
    settings_from,
)
from flowherd.console.show import out_console, records_left_text, show_status
from flowherd.models.flows import ts_text
from flowherd.models.report import RANK_BY, RankBy, View
from flowherd.reporter.analysis.heavy import ALL_RULE_FORMS, parse_rules
from flowherd.reporter.cli.captures import captures_cmd
from flowherd.reporter.cli.export import export_cmd
from flowherd.reporter.cli.hist import hist_cmd
from flowherd.reporter.cli.records import records_cmd
from flowherd.reporter.cli.serve import serve_cmd
from flowherd.reporter.cli.shared import FORMATS, community_seed_option, emit_rows, view_option
from flowherd.reporter.cli.stats import stats_cmd
from flowherd.reporter.cli.windows import persist_cmd, watch_cmd, windows_cmd
from flowherd.reporter.output.heavy_tables import heavy_table, tail_table
from flowherd.reporter.output.lines import Format, write_rows
from flowherd.reporter.output.ranked_lines import write_rows_ranked
from flowherd.reporter.output.render import (
    elephants_table,
    human_ts,
    rows_json,
    summary_table,
    with_community,
)
from flowherd.reporter.query import windows
from flowherd.reporter.query.report import report_with
from flowherd.reporter.query.rows import top_rows
from flowherd.reporter.table.order import parse_proto
from flowherd.reporter.where.apply import Where, filtered, where_option
from flowherd.store.captures import load_report, run_of, status
from flowherd.store.tables import iter_raw, table


@click.group(cls=OneLineGroup, context_settings=HELP)
@click.version_option(package_name="flowherd")
def main() -> None:
    """flowherd reporter: top-N flows, elephants, distributions and exports of a capture.

    Flows are unidirectional 5-tuples (--direction uni, the NetFlow view) or bidirectional
    conversations (--direction bi, tshark's -z conv view); both come from the same table.

    \b
    Examples:
      reporter captures
      reporter top day1 -n 20 --by rate --proto tcp
      reporter flows day1 --where 'proto tcp and dport 443 and bytes > 1M' > https.csv
      reporter top day1 --direction bi --format csv > top.csv
      reporter summary day1 --rule load:0.9 --rule bytes:10MB
      reporter hist day1 --top 100 -o sizes.pdf
      reporter persist day1 -n 10      # captures submitted with --window
      reporter stats day1 --key dport --by flows -n 20
      reporter export day1 -o day1.parquet
      reporter serve                   # a web view on http://127.0.0.1:8350/
    """


def _conn(redis_url: str | None, queue: str) -> Any:
    store, _, _ = open_backend(settings_from(redis_url, queue))
    return store


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
@view_option
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
@where_option
@community_seed_option
@redis_options
@handle_errors
def top_cmd(
    name: str,
    num: int,
    by: RankBy,
    view: View,
    proto: str | None,
    fmt: str,
    which: str | None,
    where: Where | None,
    seed: int,
    redis_url: str | None,
    queue: str,
) -> None:
    """The NUM largest flows of capture NAME.

    By bytes without --proto or --where this reads the ranking kept in Redis; other orders
    and filters scan the table, keeping NUM rows. Each row carries its Community ID.

    \b
    Examples:
      reporter top day1 -n 10 --by rate --where 'proto tcp and dport 443'
      reporter top day1 --direction bi --where 'net 10.0.0.0/8 and bytes >= 10MB'
      reporter top day1 --format csv --community-id-seed 1
    """
    try:
        p = parse_proto(proto) if proto else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--proto") from None
    conn = _conn(redis_url, queue)
    keys = run_of(conn, name)
    what = "conversations" if view == "bi" else "flows"
    if where is not None:
        what += f" where {where.text}"
    if which is None:
        rows = top_rows(conn, table(keys), num, by, view, p, where)
        rows = with_community(rows, seed) if seed else rows
        emit_rows(rows, fmt, f"{name}: top {len(rows)} {what} by {by}", view, seed)
        return
    per_window = [
        (s, top_rows(conn, table(keys, s), num, by, view, p, where))
        for s in windows.select(conn, keys, name, which)
    ]
    if seed:
        per_window = [(s, with_community(r, seed)) for s, r in per_window]
    if fmt == "json":
        items = [
            f'{{"window_start": "{ts_text(s)}", "rows": {rows_json(r)}}}' for s, r in per_window
        ]
        click.echo("[" + ",".join(items) + "]")
        return
    for s, r in per_window:
        if fmt == "csv":
            click.echo(f"# window {ts_text(s)}")
        title = f"{name}: top {len(r)} {what} by {by}, window {human_ts(s)}"
        emit_rows(r, fmt, title, view, seed)


@main.command(context_settings=HELP)
@click.argument("name")
@view_option
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
@where_option
@community_seed_option
@redis_options
@handle_errors
def flows(
    name: str,
    view: View,
    fmt: Format,
    order: str,
    where: Where | None,
    seed: int,
    redis_url: str | None,
    queue: str,
) -> None:
    """Every flow of capture NAME, for other programs: CSV, JSON or JSON lines.

    CSV columns are those of tshark-derived flow tables, then the flow's Community ID: uni
    src,dst,proto,sport,dport,packets,bytes,first_ts,last_ts,community_id; bi
    proto,a_addr,a_port,b_addr,b_port,frames_a_to_b,bytes_a_to_b,frames_b_to_a,bytes_b_to_a,frames,bytes,first_ts,last_ts,community_id
    (timestamps in epoch seconds with 9 decimals; community_id empty for ICMP, ICMPv6 and
    SCTP). For a ranked table on the terminal, use `reporter top`.

    \b
    Examples:
      reporter flows day1 > day1.uni.csv
      reporter flows day1 --direction bi --order rank > day1.bi.csv
      reporter flows day1 --where 'udp and port 53' --format jsonl | jq -c .community_id
    """
    conn = _conn(redis_url, queue)
    pairs = filtered(iter_raw(conn, table(run_of(conn, name))), where, view)
    if order == "rank":
        write_rows_ranked(pairs, sys.stdout, view, fmt, community_seed=seed)
    else:
        write_rows(pairs, sys.stdout, view, fmt, community_seed=seed)
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
    help=f"Rule(s) instead of the defaults, by size (elephants) or by duration, rate or "
    f"burstiness: {ALL_RULE_FORMS}. Repeatable; see docs/heavy-hitters.md.",
)
@where_option
@redis_options
@handle_errors
def summary(
    name: str,
    as_json: bool,
    rules: tuple[str, ...],
    where: Where | None,
    redis_url: str | None,
    queue: str,
) -> None:
    """Totals of capture NAME, the not-counted buckets, byte shares, elephant flows, the
    heavy hitters by duration and rate (tortoises, cheetahs) and a fit of the size tail
    (Hill; a power law against a lognormal). Rules given with --rule replace every default.

    \b
    Examples:
      reporter summary day1 --rule load:0.9 --rule duration:3sd --rule rate:10Mbit/s
      reporter summary day1 --rule porcupines      # burstiness: captures with --window
      reporter summary day1 --json | jq .tail.power_law

    With --where, every number is of the matching unidirectional flows: their packets,
    bytes, first and last packet, flows, shares and elephants (and the conversations they
    belong to); the not-counted buckets are left out."""
    try:
        chosen, heavy = parse_rules(rules)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rule") from None
    conn = _conn(redis_url, queue)
    keys = run_of(conn, name)
    report = load_report(conn, keys)
    st = status(conn, name)
    if (
        report is None
        or report.tail is None  # stored by a version without heavy hitters and tail fit
        or rules
        or where
        or report.summary.packets != st.packets
    ):
        report = report_with(conn, keys, st, chosen, heavy, where)
    if as_json:
        click.echo(report.model_dump_json(indent=1))
        return
    con = out_console()
    if not report.complete:
        show_status(con, st)
    if where is not None:
        con.print(f"flows where {where.text}", markup=False, highlight=False)
    con.print(summary_table(report.summary))
    if st.records_left is not None:
        con.print(
            f"records left: {records_left_text(st.records_left)} (the flows above are the "
            "conversations; the records that have left are in their files)",
            markup=False,
            highlight=False,
        )
    if report.elephants:
        con.print(elephants_table(report.elephants))
    if report.heavy:
        con.print(heavy_table(report.heavy))
    if report.tail is not None:
        con.print(tail_table(report.tail))
    for w in report.warnings:
        con.print(f"[yellow]warning:[/] {w}")


main.add_command(captures_cmd)
main.add_command(hist_cmd)
main.add_command(records_cmd)
main.add_command(windows_cmd)
main.add_command(persist_cmd)
main.add_command(watch_cmd)
main.add_command(export_cmd)
main.add_command(stats_cmd)
main.add_command(serve_cmd)
