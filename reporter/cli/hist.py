"""``reporter hist``: a capture's flow size distribution as a figure (histogram, CCDF with tail
fits, share of bytes), or the largest flows' bytes per window."""

from __future__ import annotations

import os
from typing import Any

import click

from flowherd.console.cli import (
    HELP,
    SafePath,
    handle_errors,
    open_backend,
    redis_options,
    settings_from,
)
from flowherd.console.outfile import open_binary
from flowherd.models.errors import CaptureStateError
from flowherd.models.report import View
from flowherd.reporter.analysis.elephants import DEFAULT_RULES, classify_dist
from flowherd.reporter.analysis.scan import bi_sizes, uni_sizes
from flowherd.reporter.analysis.sizes import SizeDist
from flowherd.reporter.analysis.tail import TopSizes, keeping, tail_fit
from flowherd.reporter.cli.shared import view_option
from flowherd.reporter.query import windows
from flowherd.reporter.where.apply import Where, filtered, where_option
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_raw, table


@click.command("hist", context_settings=HELP)
@click.argument("name")
@click.option(
    "--top",
    "top_n",
    type=click.IntRange(1),
    default=None,
    help="Histogram of the TOP largest flows only (the classic top-N plot).",
)
@view_option
@click.option(
    "-o",
    "--output",
    required=True,
    type=SafePath(dir_okay=False, allow_dash=True),
    help="Output file: .pdf, .png or .svg (- for stdout, with --format); see docs/outputs.md.",
)
@click.option(
    "--format",
    "plot_fmt",
    type=click.Choice(["pdf", "png", "svg"]),
    help="Figure format [default: from the output file's suffix].",
)
@click.option(
    "--timeline",
    is_flag=True,
    help="Bytes per window of the largest flows (stacked), beside the size histogram. Needs a "
    "capture made with --window.",
)
@click.option("--flows", "nflows", type=click.IntRange(1, 50), default=10, show_default=True,
              help="Flows drawn with --timeline.")  # fmt: skip
@where_option
@redis_options
@handle_errors
def hist_cmd(
    name: str,
    top_n: int | None,
    view: View,
    output: str,
    plot_fmt: str | None,
    timeline: bool,
    nflows: int,
    where: Where | None,
    redis_url: str | None,
    queue: str,
) -> None:
    """Plot the flow size distribution of capture NAME: a histogram of sizes (KB, log count
    axis) beside the CCDF of sizes, with its tail fits (Hill; a power law, tested against a
    lognormal: docs/heavy-hitters.md), and the cumulative share of bytes; with --timeline, the
    largest flows' bytes per window beside the histogram. --where plots the matching flows
    only (not with --timeline)."""
    from flowherd.console.extras import require

    require("matplotlib", "plot", "reporter hist")
    from flowherd.reporter.output.plots import FORMATS as PLOT_FORMATS
    from flowherd.reporter.output.plots import size_histogram_figure, timeline_figure

    suffix = os.path.splitext(output)[1].lower()
    if plot_fmt is None and suffix not in PLOT_FORMATS:
        raise click.BadParameter(
            f"use one of {', '.join(PLOT_FORMATS)}, or --format", param_hint="--output"
        )
    plot_fmt = plot_fmt or suffix[1:]
    if where is not None and timeline:
        raise click.UsageError("--where does not apply to --timeline: leave one out")
    conn, _, _ = open_backend(settings_from(redis_url, queue))
    keys = run_of(conn, name)
    t = table(keys)
    sizes_of = bi_sizes if view == "bi" else uni_sizes

    def sizes() -> Any:
        return sizes_of(filtered(iter_raw(conn, t), where, view))

    kept = TopSizes()  # the largest sizes, for the tail fit on the CCDF
    dist = SizeDist.of(keeping(sizes(), kept))  # one pass: exact counts per size bucket
    if not dist.n:
        matching = f" matching {where.text!r}" if where is not None else ""
        raise CaptureStateError(f"capture {name!r} has no flows{matching} to plot")
    rules, _ = classify_dist(dist, DEFAULT_RULES, sizes)
    if timeline:
        windows.select(conn, keys, name, "all")  # a clear error when there are none
        starts, series = windows.timeline(conn, keys, nflows)
        fig = timeline_figure(starts, series, dist, top_n, name, rules)
    else:
        fig = size_histogram_figure(dist, top_n, name, rules, fit=tail_fit(kept))
    with open_binary(output) as out:
        fig.savefig(out, format=plot_fmt)
    if output != "-":
        click.echo(f"wrote {output}", err=True)
