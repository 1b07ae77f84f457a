"""Options shared by ``producer submit`` and ``producer sniff``, and the duration parser."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from flowherd.console.cli import remember
from flowherd.models import numbers
from flowherd.models.records import Timeouts

F = TypeVar("F", bound=Callable[..., Any])


def parse_duration(text: str) -> float:
    """Seconds in ``1.5``, ``500ms``, ``30s``, ``10m``, ``1h`` or ``1ns`` (the units of
    :func:`flowherd.models.numbers.duration_ns`): whole nanoseconds, 1 ns to 100 years;
    ValueError otherwise."""
    return numbers.seconds(text, "a duration such as 500ms, 30s, 10m or 1h")


def duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """click callback turning a duration option into seconds (a usage error when malformed)."""
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_OPTIONS: list[Callable[[F], F]] = [
    click.option(
        "--wait/--no-wait",
        default=None,
        help="Follow processing to the end and print the top flows "
        "[default: on with the private Redis, off with --redis-url].",
    ),
    click.option(
        "-w",
        "--workers",
        "num_workers",
        type=click.IntRange(1, 512),
        default=os.cpu_count() or 1,
        show_default="CPU count",
        help="Local worker processes to start (private Redis only).",
    ),
    click.option(
        "--top",
        "top_n",
        type=click.IntRange(1),
        default=10,
        show_default=True,
        help="Flows to print at the end with --wait.",
    ),
    click.option(
        "--engine",
        type=click.Choice(["scapy", "fast"]),
        envvar="FLOWHERD_ENGINE",
        default=None,
        help="How workers dissect: scapy (default), or fast: a header decoder for the common "
        "stacks that hands anything else to scapy, frame by frame; same results, ~30x faster.",
    ),
    click.option(
        "--batch-packets",
        type=click.IntRange(1, 1_000_000),
        envvar="FLOWHERD_BATCH_PACKETS",
        help="Records per batch job [default: 2000 with --engine scapy, 16000 with fast].",
    ),
    click.option(
        "--max-in-flight",
        type=click.IntRange(1),
        envvar="FLOWHERD_MAX_IN_FLIGHT",
        help="Batches queued but not yet merged before reading pauses [default 32].",
    ),
    click.option(
        "--window",
        callback=duration_option,
        metavar="DURATION",
        help="Also keep a flow table per tumbling window of DURATION (60, 30s, 5m), aligned on "
        "packet timestamps (see `reporter windows`, `reporter top --window`, `reporter persist`).",
    ),
    click.option(
        "--shards",
        type=click.IntRange(1, 1024),
        envvar="FLOWHERD_SHARDS",
        expose_value=False,
        callback=remember,
        help="Partitions of the flow table, each merged by its own atomic step and spread over "
        "a Redis Cluster's masters [default: 1 on one Redis, 16 on a cluster].",
    ),
    click.option(
        "--wait-replicas",
        type=click.IntRange(0, 16),
        envvar="FLOWHERD_WAIT_REPLICAS",
        expose_value=False,
        callback=remember,
        help="Replicas that must acknowledge every merge (Redis WAIT) before a batch counts as "
        "merged: no merged batch is lost when a master fails [default 0: asynchronous].",
    ),
    click.option(
        "--keep",
        "keep_windows",
        type=click.IntRange(1),
        help="Keep only the newest KEEP windows (bounds Redis memory of long captures).",
    ),
    click.option(
        "--idle-timeout",
        callback=duration_option,
        metavar="DURATION",
        help="Cut each conversation into flow records where its packets are DURATION or more "
        "apart (NetFlow/NFStream style; e.g. 120s). Off by default: one record per "
        "conversation. See docs/timeouts.md.",
    ),
    click.option(
        "--active-timeout",
        callback=duration_option,
        metavar="DURATION",
        help="Also start a new flow record once a packet comes DURATION or more after the "
        "record's first packet (e.g. 30m). Keeps about 15 bytes per packet in Redis until the "
        "capture is deleted.",
    ),
]


def timeouts_of(idle: float | None, active: float | None) -> Timeouts | None:
    """The flow timeouts of ``--idle-timeout`` and ``--active-timeout`` (seconds), or None when
    neither is given (conversations are not cut)."""
    if not idle and not active:
        return None
    return Timeouts(round(idle * 1e9) if idle else 0, round(active * 1e9) if active else 0)


def run_options(f: F) -> F:
    """Add the options of a capture run: --wait, --workers, --top, --engine, --batch-packets,
    --max-in-flight, --window, --keep, --idle-timeout, --active-timeout."""
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f
