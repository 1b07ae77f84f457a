"""What the reporter's commands share: the output format and view choices, the Community ID
seed option, and row output in the three formats. Option values become typed values here
(``--direction`` arrives as a :data:`~flowherd.models.report.View` named ``view``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from flowherd.console.show import out_console
from flowherd.models.report import VIEWS, Row, View
from flowherd.reporter.output.render import rows_csv, rows_json, rows_table

#: ``--format`` of the row commands
FORMATS = click.Choice(["table", "json", "csv"])


def view_option(f: Any) -> Any:
    """``--direction uni|bi`` (default uni): the command receives it as ``view``."""
    return click.option(
        "--direction",
        "view",
        type=click.Choice(VIEWS),
        default="uni",
        show_default=True,
        help="uni: unidirectional 5-tuple flows (NetFlow's view); bi: conversations, both "
        "directions in one row (tshark's -z conv view).",
    )(f)


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


def emit_rows(rows: Sequence[Row], fmt: str, title: str, view: View, seed: int = 0) -> None:
    """Print ``rows`` as CSV (with the ``community_id`` column of ``seed``), JSON (the rows'
    own ``community_id``) or a table (with a community id column)."""
    if fmt == "csv":
        rows_csv(rows, sys.stdout, view=view, community_seed=seed)
    elif fmt == "json":
        click.echo(rows_json(rows))
    else:
        out_console().print(rows_table(rows, title, community=True))
