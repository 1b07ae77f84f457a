"""What the reporter's row commands share: the Community ID seed option and row output in the
three formats."""

from __future__ import annotations

import sys
from typing import Any

import click

from flowherd.console.show import out_console
from flowherd.models.report import ConvRow, FlowRow
from flowherd.reporter.output.render import rows_csv, rows_json, rows_table


def community_seed_option(f: Any) -> Any:
    """``--community-id-seed N`` (0-65535, default 0): the command receives ``seed``."""
    return click.option(
        "--community-id-seed",
        "seed",
        type=click.IntRange(0, 0xFFFF),
        default=0,
        show_default=True,
        help="Seed of each flow's Community ID (the community_id column/field): use the seed "
        "of the tools whose records you join (Zeek, Suricata...). See docs/community-id.md.",
    )(f)


def emit_rows(
    rows: list[FlowRow] | list[ConvRow], fmt: str, title: str, direction: str, seed: int = 0
) -> None:
    """Print ``rows`` as CSV (with the ``community_id`` column of ``seed``), JSON (the rows'
    own ``community_id``) or a table (with a community id column)."""
    if fmt == "csv":
        rows_csv(rows, sys.stdout, view="bi" if direction == "bi" else "uni", community_seed=seed)
    elif fmt == "json":
        click.echo(rows_json(rows))
    else:
        out_console().print(rows_table(rows, title, community=True))
