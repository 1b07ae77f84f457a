"""``reporter export``: a capture's flows as CSV, NDJSON or Parquet files, or as IPFIX over UDP.

The formats and columns are in :mod:`flowherd.reporter.output.files` and ``docs/exports.md``; the
IPFIX encoding in :mod:`flowherd.reporter.output.ipfix`. This module reads the table, opens files
and
sockets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Any

import click

from flowherd.console.cli import HELP, handle_errors, open_backend, redis_options, settings_from
from flowherd.console.hostport import parse_hostport
from flowherd.console.outfile import open_binary, open_text
from flowherd.models.community import flow_community_id
from flowherd.models.errors import FlowherdError
from flowherd.models.report import View
from flowherd.reporter.cli.shared import community_seed_option
from flowherd.reporter.output import files as exports
from flowherd.reporter.output import ipfix
from flowherd.reporter.query import windows
from flowherd.reporter.where.apply import Where, filtered, where_option
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_raw, table


def send_udp(messages: Iterable[bytes], host: str, port: int, rate: float) -> None:
    """Send each message as one datagram to ``host:port``, at most ``rate`` per second (0: as
    fast as the socket takes them). UDP has no backpressure: a collector that cannot keep up
    drops datagrams silently, hence the pacing."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as exc:
        raise FlowherdError(f"IPFIX collector {host}:{port}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as s:
        try:
            s.connect(addr)
            start = time.monotonic()
            for i, m in enumerate(messages):
                if rate > 0:
                    ahead = start + i / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                s.send(m)
        except OSError as exc:  # e.g. ECONNREFUSED: an ICMP port unreachable came back
            raise FlowherdError(
                f"IPFIX collector {host}:{port}: {exc.strerror or exc} "
                "(is a collector listening there?)"
            ) from None


def _pairs(name: str, window: str | None, redis_url: str | None, queue: str) -> Iterable[Any]:
    conn, _, _ = open_backend(settings_from(redis_url, queue))
    keys = run_of(conn, name)
    if window is None:
        return iter_raw(conn, table(keys))
    if window == "all":
        raise click.BadParameter("export one window: latest or a TIME", param_hint="--window")
    (start,) = windows.select(conn, keys, name, window)
    return iter_raw(conn, table(keys, start))


def _write_file(
    rows: Iterable[tuple[Any, ...]], schema: exports.Schema, fmt: str, path: str, group: int
) -> int:
    """Write to ``path`` by the rules of :mod:`flowherd.console.outfile` (``-``: stdout; a
    regular file appears whole or not at all; a FIFO or device is written into)."""
    if fmt == "parquet":
        exports.arrow_schema(schema)  # a missing pyarrow fails before the scan starts
        with open_binary(path) as out:
            return exports.write_parquet(rows, schema, out, row_group=group)
    writer = exports.write_csv if fmt == "csv" else exports.write_ndjson
    with open_text(path) as text:
        return writer(rows, schema, text)


@click.command("export", context_settings=HELP)
@click.argument("name")
@click.option(
    "-o", "--output", metavar="FILE", help="Write to FILE (- for stdout); see docs/outputs.md."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(exports.FORMATS),
    help="File format; by default from FILE's suffix: .csv, .ndjson/.jsonl, .parquet/.pq.",
)
@click.option("--direction", type=click.Choice(["uni", "bi"]), default="uni", show_default=True)
@click.option(
    "--window",
    metavar="latest|TIME",
    help="Export one tumbling window (the latest, or the one containing epoch TIME) instead "
    "of the whole capture. Needs a capture made with --window.",
)
@click.option("--row-group", type=click.IntRange(1), default=exports.ROW_GROUP,
              show_default=True, help="Parquet rows per row group (memory).")  # fmt: skip
@click.option("--ipfix", "collector", metavar="HOST:PORT",
              help="Send uni flows as IPFIX over UDP to a collector instead.")  # fmt: skip
@click.option("--ipfix-rate", type=click.FloatRange(0), default=2000.0, show_default=True,
              help="IPFIX messages per second at most (0: unpaced). UDP has no backpressure: "
              "a collector that falls behind drops datagrams silently.")  # fmt: skip
@click.option("--ipfix-mtu", type=click.IntRange(200, 65507), default=ipfix.DEFAULT_MTU,
              show_default=True, help="Largest IPFIX message, in octets.")  # fmt: skip
@click.option("--ipfix-domain", type=click.IntRange(0, 2**32 - 1), default=1,
              show_default=True, help="IPFIX observation domain id.")  # fmt: skip
@click.option("--ipfix-template-every", type=click.IntRange(1), default=64, show_default=True,
              help="Repeat the templates every N messages (and every 60 s).")  # fmt: skip
@where_option
@community_seed_option
@redis_options
@handle_errors
def export_cmd(
    name: str,
    output: str | None,
    fmt: str | None,
    direction: View,
    window: str | None,
    row_group: int,
    collector: str | None,
    ipfix_rate: float,
    ipfix_mtu: int,
    ipfix_domain: int,
    ipfix_template_every: int,
    where: Where | None,
    seed: int,
    redis_url: str | None,
    queue: str,
) -> None:
    """Export every flow of capture NAME, streamed in bounded memory: to a file (CSV, NDJSON or
    Parquet; the columns are in docs/exports.md) or, with --ipfix, to an IPFIX collector.

    \b
    Examples:
      reporter export day1 -o day1.parquet
      reporter export day1 -o day1.bi.ndjson --direction bi
      reporter export day1 -o - --format csv | head
      reporter export day1 --window latest -o last.csv
      reporter export day1 -o web.parquet --where 'tcp and port 443'
      reporter export day1 --ipfix 127.0.0.1:4739         # e.g. nfcapd -p 4739 -w DIR
    """
    if (output is None) == (collector is None):
        raise click.UsageError("give -o FILE or --ipfix HOST:PORT (one of them)")
    if collector is not None:
        if direction != "uni":
            raise click.BadParameter("IPFIX exports unidirectional flows", param_hint="--direction")
        host, port = parse_hostport(collector)
        enc = ipfix.Encoder(ipfix_domain, ipfix_mtu, ipfix_template_every)
        recs = ipfix.flow_records(filtered(_pairs(name, window, redis_url, queue), where, "uni"))
        send_udp(enc.messages(recs, lambda: int(time.time())), host, port, ipfix_rate)
        click.echo(
            f"sent {enc.records:,} flows in {enc.sent:,} IPFIX messages to {host}:{port}",
            err=True,
        )
        return
    assert output is not None
    fmt = fmt or exports.format_of(output)
    if fmt is None:
        raise click.BadParameter(
            "cannot tell the format from the name: use .csv, .ndjson or .parquet, or --format",
            param_hint="--output",
        )
    cid = exports.Extra(
        exports.Column("community_id", "str", nullable=True),
        lambda a, b, p, ap, bp: flow_community_id(a, b, p, ap, bp, seed),
    )
    schema = (exports.UNI if direction == "uni" else exports.BI).with_extras([cid])
    pairs = filtered(_pairs(name, window, redis_url, queue), where, direction)
    rows = exports.records(pairs, direction, extras=[cid])
    n = _write_file(rows, schema, fmt, output, row_group)
    if output != "-":
        click.echo(f"wrote {n:,} {'flows' if direction == 'uni' else 'conversations'} to "
                   f"{output}", err=True)  # fmt: skip
