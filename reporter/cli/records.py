"""``reporter records``: a live capture's flow records leave Redis as they expire, into rotating
files and/or to an IPFIX collector (:mod:`flowherd.reporter.query.expire`)."""

from __future__ import annotations

import logging
import sys
import threading
import time

import click

from flowherd.console.cli import (
    HELP,
    handle_errors,
    open_backend,
    redis_options,
    settings_from,
    setup_logging,
)
from flowherd.console.signals import stop_on_signals
from flowherd.console.units import human_bytes
from flowherd.models.errors import CaptureStateError
from flowherd.models.expiry import END
from flowherd.models.numbers import seconds
from flowherd.models.records import Timeouts
from flowherd.reporter.query.expire import Exporter, StepResult
from flowherd.store.captures import load
from flowherd.store.expiry import records_out
from flowherd.store.lock import ExportLock, RunLock

log = logging.getLogger(__name__)


def _interval(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return seconds(value, "an interval", lo_ns=50_000_000, hi_ns=60_000_000_000)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("records", context_settings=HELP)
@click.argument("name")
@click.option(
    "--interval",
    default="1s",
    callback=_interval,
    metavar="DURATION",
    show_default=True,
    help="How often records that are over leave Redis.",
)
@click.option("-v", "--verbose", count=True, help="-v: a log line per step; -vv: debug.")
@redis_options
@handle_errors
def records_cmd(
    name: str, interval: float, verbose: int, redis_url: str | None, queue: str
) -> None:
    """Write the flow records of live capture NAME as they expire, until the capture ends.

    For a capture made by `producer sniff` with --records-dir or --ipfix (and --idle-timeout
    or --active-timeout): sniff runs this command beside the capture, so it is needed only to
    finish the work of one that was killed. It carries on from its last step: every record
    leaves exactly once, in files that appear whole or not at all (the capture's
    --records-format, one new file at least every --records-rotate), and at the end every
    record still open is written. Ctrl-C stops it cleanly; run it again to carry on.

    \b
    Examples:
      reporter records sniff-eth0-20261206T101500Z
      reporter records day1 -v --redis-url redis://flows.example:6379/0

    Exit status: 0 when the capture ended and every record left; 1 when its producer stopped
    without closing it (its records were still all written) or on errors; 130 interrupted.
    """
    setup_logging(verbose)
    settings = settings_from(redis_url, queue)
    store, _, _ = open_backend(settings)
    keys, _, meta = load(store, name)
    out = records_out(meta)
    if out is None:
        raise CaptureStateError(
            f"capture {name!r} keeps its records in Redis (it was not captured with "
            "--records-dir or --ipfix): use `reporter flows` or `reporter export`"
        )
    t = Timeouts(meta.idle_ns, meta.active_ns)
    stop = threading.Event()
    with ExportLock(store, keys, name) as lock, stop_on_signals(stop):
        ex = Exporter(store, keys, name, out, t, settings.home)
        try:
            res = _follow(ex, lock, interval, stop)
        finally:
            ex.close()
    total = ex.totals()
    where = out.where
    files = f" in {total.files:,} file{'' if total.files == 1 else 's'}" if out.dir else ""
    click.echo(
        f"{name}: {total.records:,} records ({total.packets:,} packets, "
        f"{human_bytes(total.bytes)}) left to {where}{files}",
        err=True,
    )
    if res is None:
        raise CaptureStateError(f"capture {name!r} was deleted or replaced meanwhile")
    if res.frontier.watermark < END:
        click.echo(
            f"stopped with {ex.open_count:,} conversations open: run `reporter records {name}` "
            "to carry on",
            err=True,
        )
        sys.exit(130)
    if res.frontier.gone:
        click.echo(
            f"warning: the producer of {name!r} stopped without closing it (killed or "
            "aborted): the records of every batch it queued were written",
            err=True,
        )
        sys.exit(1)


def _follow(
    ex: Exporter, lock: RunLock, interval: float, stop: threading.Event
) -> StepResult | None:
    while True:
        lock.renew()
        t0 = time.monotonic()
        res = ex.step()
        if res is None:
            return None
        fr = res.frontier
        log.info(
            "event=records_step batches=%d watermark=%d records=%d open=%d files=%s",
            fr.upto,
            fr.watermark,
            res.records,
            ex.open_count,
            ",".join(f.name for f in res.files) or "-",
        )
        if fr.watermark >= END or stop.is_set():
            return res
        stop.wait(max(0.0, interval - (time.monotonic() - t0)))
