"""``reporter stats``: packets, bytes and flows per IP, port, protocol, prefix or host pair."""

from __future__ import annotations

import math
import sys

import click

from flowherd.console.cli import HELP, handle_errors, open_backend, redis_options, settings_from
from flowherd.models import numbers
from flowherd.models.report import View
from flowherd.reporter.analysis.elephants import parse_size
from flowherd.reporter.analysis.stats import BY, KEY_FORMS, By, parse_key
from flowherd.reporter.cli.shared import view_option
from flowherd.reporter.output.stats import STATS_FORMATS, StatsFormat
from flowherd.reporter.query import windows
from flowherd.reporter.query.stats import write_stats
from flowherd.reporter.where.apply import Where, where_option
from flowherd.store.captures import run_of


def _threshold(text: str | None, by: str) -> float | None:
    if text is None:
        return None
    try:
        if by == "bytes":
            return parse_size(text)
        if by == "bps":
            return float(numbers.bit_rate(text, "a rate in bit/s (10M, 1Gbit/s)"))
        what = f"a number of {by} >= 0 (1000, 2.5k, 1M)"
        return float(numbers.scaled(text, numbers.COUNT_UNITS, what, whole=False))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threshold") from None


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
@view_option
@click.option("--format", "fmt", type=click.Choice(STATS_FORMATS), default="table",
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
    by: By,
    num: int | None,
    threshold: str | None,
    percentage: float | None,
    view: View,
    fmt: StatsFormat,
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
    if percentage is not None and not math.isfinite(percentage):  # click's range lets nan by
        raise click.BadParameter(
            f"{percentage} is not a number from 0 to 100", param_hint="--percentage"
        )
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
        sys.stdout, conn, keys, name, spec, by, n, view, fmt, starts, floor, percentage, where
    )
