"""``producer``: submit traces to flowherd and follow them.

producer submit trace.pcap                  # private Redis + local workers, prints top flows
producer submit --redis-url redis://host/0 --name day1 a.pcap.gz b.pcapng
producer status day1
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click
from redis import Redis
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from deploy.clitools import handle_errors, open_redis, redis_options, settings_from, setup_logging
from deploy.queueing import make_queue
from models.capture import CaptureState, CaptureStatus
from models.keys import RunKeys
from models.settings import Settings
from producer.follow import LocalWorkers, follow
from producer.run import Progress as SubmitProgress
from producer.sniff import sniff_command
from producer.submit import default_name, submit
from reporter.show import out_console, show_report, show_status
from reporter.store import load_report, run_of, status

HELP = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=HELP)
@click.version_option(package_name="flowherd")
def main() -> None:
    """flowherd producer: read packet traces as raw records and queue them for the workers.

    Without --redis-url (or FLOWHERD_REDIS_URL) everything runs on this machine: a private
    redis-server under $FLOWHERD_HOME and local worker processes are started for you.
    """


@main.command("submit", context_settings=HELP)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--name", help="Capture name (default: the first file's name without suffixes).")
@click.option("--replace", is_flag=True, help="Overwrite an existing capture of that name.")
@click.option(
    "--wait/--no-wait",
    default=None,
    help="Follow processing to the end and print the top flows "
    "[default: on with the private Redis, off with --redis-url].",
)
@click.option(
    "-w",
    "--workers",
    "num_workers",
    type=click.IntRange(1, 512),
    default=os.cpu_count() or 1,
    show_default="CPU count",
    help="Local worker processes to start (private Redis only).",
)
@click.option(
    "--top",
    "top_n",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Flows to print at the end with --wait.",
)
@click.option(
    "--batch-packets",
    type=click.IntRange(1, 1_000_000),
    envvar="FLOWHERD_BATCH_PACKETS",
    help="Records per batch job [default: 2000 with --engine scapy, 16000 with fast].",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1),
    envvar="FLOWHERD_MAX_IN_FLIGHT",
    help="Batches queued but not yet merged before reading pauses [default 32].",
)
@click.option("--compress/--no-compress", default=None, help="zlib-compress batch payloads.")
@click.option(
    "--engine",
    type=click.Choice(["scapy", "fast"]),
    envvar="FLOWHERD_ENGINE",
    default=None,
    help="How workers dissect: scapy (default), or fast: a header decoder for the common "
    "stacks that hands anything else to scapy, frame by frame; same results, ~30x faster.",
)
@click.option(
    "--window",
    type=click.FloatRange(min=0.001),
    metavar="SECONDS",
    help="Also keep a flow table per tumbling window of SECONDS, aligned on packet timestamps "
    "(see `reporter windows`, `reporter top --window`, `reporter persist`).",
)
@click.option(
    "--keep",
    "keep_windows",
    type=click.IntRange(1),
    help="Keep only the newest KEEP windows (bounds Redis memory of long captures).",
)
@click.option("-v", "--verbose", count=True)
@redis_options
@handle_errors
def submit_cmd(
    files: tuple[str, ...],
    name: str | None,
    replace: bool,
    wait: bool | None,
    num_workers: int,
    top_n: int,
    batch_packets: int | None,
    max_in_flight: int | None,
    compress: bool | None,
    engine: str | None,
    window: float | None,
    keep_windows: int | None,
    verbose: int,
    redis_url: str | None,
    queue: str,
) -> None:
    """Submit FILES (pcap, pcapng; gzip/bzip2/xz compressed) as one capture.

    Records are read in file order, packed into batches and queued, at most --max-in-flight at
    a time. Exit status: 0 ok; 1 unreadable input, a truncated file (its complete records are
    counted), failed batches or Redis errors; 2 usage error.
    """
    setup_logging(verbose)
    settings = settings_from(
        redis_url,
        queue,
        batch_packets=batch_packets,
        max_in_flight=max_in_flight,
        compress=compress,
        engine=engine,
        window=window,
        keep_windows=keep_windows,
    )
    err = Console(stderr=True)
    conn, url, embedded = open_redis(settings)
    cap_name = name or default_name(files)
    wait = embedded if wait is None else wait
    workers = LocalWorkers(url, settings.queue, num_workers) if embedded else None
    try:
        _, prog = _submit_with_progress(conn, files, cap_name, settings, replace, err, workers)
        for w in prog.warnings:
            err.print(f"[yellow]warning:[/] {w}")
        if not wait:
            click.echo(
                f"submitted {prog.packets} packets in {prog.batches} batches as {cap_name!r}"
            )
            sys.exit(1 if prog.warnings else 0)
        st = _follow_with_progress(conn, cap_name, err, workers)
    finally:
        if workers:
            workers.stop()
    report = load_report(conn, run_of(conn, cap_name))
    out = out_console()
    if report is not None:
        show_report(out, report, top_n)
    else:
        show_status(out, st)
    if st.state is not CaptureState.COMPLETE:
        click.echo(
            f"error: capture {cap_name!r} is {st.state.value}: see `producer status {cap_name}`",
            err=True,
        )
        sys.exit(1)
    sys.exit(1 if prog.warnings else 0)


def _submit_with_progress(
    conn: Redis,
    files: Sequence[str],
    name: str,
    settings: Settings,
    replace: bool,
    err: Console,
    workers: LocalWorkers | None,
) -> tuple[RunKeys, SubmitProgress]:
    queue = make_queue(conn, settings.queue)
    with Progress(
        TextColumn("[bold]reading[/] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn(
            "{task.fields[packets]:,} pkts  {task.fields[batches]} batches {task.fields[note]}"
        ),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("", total=None, packets=0, batches=0, note="")

        def update(p: SubmitProgress) -> None:
            bar.update(
                task,
                description=os.path.basename(p.source),
                completed=p.position,
                total=p.size or None,
                packets=p.packets,
                batches=p.batches,
                note="(waiting for workers)" if p.waiting else "",
            )
            if workers:
                workers.check()

        return submit(conn, queue, files, name, settings, replace, update)


def _follow_with_progress(
    conn: Redis, name: str, err: Console, workers: LocalWorkers | None
) -> CaptureStatus:
    with Progress(
        TextColumn("[bold]merging[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("", total=None)
        return follow(
            conn,
            name,
            on_update=lambda st: bar.update(
                task, completed=st.batches_done, total=st.total_batches
            ),
            check=workers.check if workers else None,
        )


@main.command("status", context_settings=HELP)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@redis_options
@handle_errors
def status_cmd(name: str, as_json: bool, redis_url: str | None, queue: str) -> None:
    """Show the state of capture NAME: batches queued/done/failed, packets, bytes, warnings."""
    conn, _, _ = open_redis(settings_from(redis_url, queue))
    st = status(conn, name)
    if as_json:
        click.echo(st.model_dump_json(indent=1))
    else:
        show_status(out_console(), st)


@main.command(context_settings=HELP)
@click.argument("output", type=click.Path(dir_okay=False))
@click.option(
    "--flows",
    type=click.IntRange(1, 8_000_000),
    default=3000,
    show_default=True,
    help="Conversations in the trace (about 23 packets each on average).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--snaplen",
    type=click.IntRange(0),
    default=128,
    show_default=True,
    help="Captured bytes per frame (0: whole frames); wire lengths are kept.",
)
@handle_errors
def sample(output: str, flows: int, seed: int, snaplen: int) -> None:
    """Write a synthetic sample trace to OUTPUT: heavy-tailed (Pareto) flow sizes, TCP and UDP,
    IPv4 and IPv6, 60 seconds, as a classic pcap. Deterministic for a given --seed."""
    from producer.sample import write_sample

    truth = write_sample(output, flows=flows, seed=seed, snaplen=snaplen)
    packets = sum(v[0] for v in truth.values())
    click.echo(f"wrote {output}: {packets:,} packets in {len(truth):,} flows", err=True)


main.add_command(sniff_command)
