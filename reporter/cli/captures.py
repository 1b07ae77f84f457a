"""``reporter captures``: the captures known, with state and totals."""

from __future__ import annotations

import click
from rich.table import Table

from flowherd.console.cli import HELP, handle_errors, open_backend, redis_options, settings_from
from flowherd.console.show import out_console
from flowherd.reporter.analysis.distribution import human_bytes
from flowherd.store.captures import names, status


@click.command("captures", context_settings=HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@redis_options
@handle_errors
def captures_cmd(as_json: bool, redis_url: str | None, queue: str) -> None:
    """List the captures known, with state and totals."""
    conn, _, _ = open_backend(settings_from(redis_url, queue))
    sts = [status(conn, n) for n in names(conn)]
    if as_json:
        click.echo("[" + ",".join(s.model_dump_json() for s in sts) + "]")
        return
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
