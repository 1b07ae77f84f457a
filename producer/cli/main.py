"""``producer``: submit traces to flowherd and follow them.

producer submit trace.pcap                  # private Redis + local workers, prints top flows
FLOWHERD_REDIS_URL_FILE=/etc/flowherd/redis-url producer submit --name day1 a.pcap.gz b.pcapng
producer status day1
producer submit --resume day1 a.pcap.gz b.pcapng   # after the producer was killed
producer retry day1                                # re-run failed batches
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from flowherd.console.cli import (
    HELP,
    OneLineGroup,
    SafePath,
    capture_name_option,
    handle_errors,
    open_backend,
    redis_options,
    settings_from,
    setup_logging,
)
from flowherd.console.outfile import open_binary
from flowherd.console.show import out_console, show_status
from flowherd.deploy.queueing import make_queue
from flowherd.producer.cli.options import run_options, timeouts_of
from flowherd.producer.cli.shell import Shell, exit_with_outcome, name_of_files, run_shell
from flowherd.producer.cli.sniff import sniff_command
from flowherd.producer.cli.synth import synth_command
from flowherd.producer.readers.sources import expand, is_pattern
from flowherd.producer.run.gaps import batches, missing, settings_of
from flowherd.producer.run.resume import resume
from flowherd.producer.run.retry import retry
from flowherd.producer.run.submit import submit
from flowherd.producer.run.writer import Progress as SubmitProgress
from flowherd.producer.run.writer import ProgressFn
from flowherd.store.captures import run_of, status

T = TypeVar("T")


@click.group(cls=OneLineGroup, context_settings=HELP)
@click.version_option(package_name="flowherd")
def main() -> None:
    """flowherd producer: read packet traces as raw records and queue them for the workers.

    Without --redis-url (or FLOWHERD_REDIS_URL) everything runs on this machine: a private
    redis-server under $FLOWHERD_HOME and local worker processes are started for you. A shared
    Redis with a password: keep its URL in a file only you can read and name that file with
    FLOWHERD_REDIS_URL_FILE (or --redis-url-file), so the password shows neither in `ps` nor
    in the shell history.

    \b
    Examples:
      producer submit trace.pcap.gz                   # analyse here, print the top flows
      producer submit --engine fast --window 60 day1.pcapng
      producer submit --idle-timeout 120s --active-timeout 30m day1.pcap   # flow records
      FLOWHERD_REDIS_URL_FILE=/etc/flowherd/redis-url producer submit --name day1 a.pcap b.pcap
      producer sniff -i eth0 -f 'tcp or udp' --window 10s --duration 5m
      producer status day1
      producer submit --resume day1 a.pcap b.pcap     # after the producer was killed
    """


@main.command("submit", context_settings=HELP)
@click.argument("files", nargs=-1, required=True, type=SafePath(dir_okay=True))
@click.option(
    "--name",
    callback=capture_name_option,
    help="Capture name (default: the first file's name without suffixes).",
)
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="Directories among FILES: their subdirectories' captures too.",
)
@click.option("--replace", is_flag=True, help="Overwrite an existing capture of that name.")
@click.option(
    "--strict",
    is_flag=True,
    default=None,
    help="Abort at the first corrupt block of a file [default: keep the records before it, "
    "warn and exit 1, like a truncated file].",
)
@click.option("--compress/--no-compress", default=None, help="zlib-compress batch payloads.")
@click.option(
    "--resume",
    "resume_name",
    metavar="NAME",
    help="Continue capture NAME after its producer stopped (killed, interrupted, or Redis "
    "lost batches): FILES must be its files, in the same order; only the batches Redis lacks "
    "are sent. The capture's own batch size, engine, windows and queue are used.",
)
@run_options
@click.option("-v", "--verbose", count=True, help="-v: progress logs; -vv: debug.")
@redis_options
@handle_errors
def submit_cmd(
    files: tuple[str, ...],
    name: str | None,
    recursive: bool,
    replace: bool,
    strict: bool | None,
    wait: bool | None,
    num_workers: int,
    top_n: int,
    batch_packets: int | None,
    max_in_flight: int | None,
    compress: bool | None,
    engine: str | None,
    window: float | None,
    keep_windows: int | None,
    idle_timeout: float | None,
    active_timeout: float | None,
    resume_name: str | None,
    verbose: int,
    redis_url: str | None,
    queue: str,
) -> None:
    """Submit FILES (pcap, pcapng; gzip/bzip2/xz compressed) as one capture.

    Each of FILES is a capture file, a directory (its capture files, ordered by first
    timestamp; other files are skipped with a warning), a quoted glob pattern ('day1/*.pcap',
    ordered likewise) or an http:// or https:// URL, streamed (a cut connection goes on with
    an HTTP Range request where the server allows it).

    Records are read in file order, packed into batches and queued, at most --max-in-flight at
    a time; while Redis is out of memory (maxmemory) reading pauses. Exit status: 0 ok; 1
    unreadable input, a truncated file (its complete records are counted), failed batches or
    Redis errors; 2 usage error.
    """
    if resume_name and (name or replace):
        raise click.UsageError("--resume NAME names the capture: leave out --name and --replace")
    if resume_name and (idle_timeout or active_timeout):
        raise click.UsageError("--resume keeps the capture's own timeouts: leave them out")
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
        strict=strict or None,
    )
    found = expand(files, recursive)
    for w in found.warnings():
        click.echo(f"warning: {w}", err=True)
    sources = found.sources
    cap_name = resume_name or name or name_of_files(sources if is_pattern(files[0]) else files)
    adjust = (lambda conn, s: settings_of(conn, cap_name, s)) if resume_name else None
    with run_shell(settings, wait, num_workers, adjust) as sh:
        conn, settings = sh.conn, sh.settings
        if resume_name:
            done = _with_progress(sh, lambda cb: resume(conn, sources, cap_name, settings, cb))
            prog = done.progress
            resent = f"re-sent {batches(done.resent)}" if done.resent else "re-sent none"
            summary = f"resumed {cap_name!r}: {resent}, sent {done.new} more; {done.total} batches"
        else:
            q = make_queue(conn.queue, settings.queue)
            t = timeouts_of(idle_timeout, active_timeout)
            _, prog = _with_progress(
                sh,
                lambda cb: submit(
                    conn, q, sources, cap_name, settings, replace, cb, t, checked=found.checked
                ),
            )
            summary = f"submitted {prog.packets} packets in {prog.batches} batches as {cap_name!r}"
        for w in prog.warnings:
            sh.err.print(f"[yellow]warning:[/] {w}")
        sh.done(summary, ok=not prog.warnings)
        st = sh.follow(cap_name)
    exit_with_outcome(sh, cap_name, st, top_n, ok=not prog.warnings)


def _with_progress(sh: Shell, fn: Callable[[ProgressFn], T]) -> T:
    """``fn(update)`` with a reading progress bar on a terminal; ``update`` also checks that
    the local workers are alive."""
    with Progress(
        TextColumn("[bold]reading[/] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn(
            "{task.fields[packets]:,} pkts  {task.fields[batches]} batches {task.fields[note]}"
        ),
        TimeElapsedColumn(),
        console=sh.err,
        transient=True,
        disable=not sh.err.is_terminal,
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
                note=f"(waiting for {p.waiting_for or 'workers'})" if p.waiting else "",
            )
            sh.check()

        return fn(update)


@main.command("status", context_settings=HELP)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@redis_options
@handle_errors
def status_cmd(name: str, as_json: bool, redis_url: str | None, queue: str) -> None:
    """Show the state of capture NAME: batches queued/done/failed, packets, bytes, warnings."""
    conn, _, _ = open_backend(settings_from(redis_url, queue))
    st = status(conn, name)
    gaps = missing(conn, run_of(conn, name), st)
    note = f"missing: {gaps.describe(name)}" if gaps else None
    if as_json:
        if note:
            st = st.model_copy(update={"warnings": [*st.warnings, note]})
        click.echo(st.model_dump_json(indent=1))
    else:
        out = out_console()
        show_status(out, st)
        if note:
            out.print(f"[red]{note}[/]", markup=True, highlight=False)


@main.command("retry", context_settings=HELP)
@click.argument("name")
@redis_options
@handle_errors
def retry_cmd(name: str, redis_url: str | None, queue: str) -> None:
    """Re-run the failed batches of capture NAME.

    Their payloads are still in Redis (only a merge deletes one), so no files are needed:
    failed batch jobs go back on the capture's queue, batches whose job was lost get a new
    one, and the report is queued if every batch is merged but no report is coming. Batches
    that Redis itself lost need `producer submit --resume NAME FILES...`. Workers must be
    running (`workers run`). Exit status: 0 ok (also when there was nothing to retry); 1 lost
    batches remain, or an error.
    """
    settings = settings_from(redis_url, queue)
    conn, _, _ = open_backend(settings)
    r = retry(conn, name, settings)
    parts = []
    if r.requeued:
        parts.append(f"requeued failed {batches(r.requeued)}")
    if r.orphans:
        parts.append(f"queued jobs for {batches(r.orphans)}")
    if r.report:
        parts.append("queued the report")
    click.echo(f"{name}: " + ("; ".join(parts) if parts else "nothing to retry"))
    if r.lost:
        click.echo(
            f"error: {batches(r.lost)} of {name!r} {'was' if len(r.lost) == 1 else 'were'} "
            f"lost by Redis; send again with `producer submit --resume {name} FILES...`",
            err=True,
        )
        sys.exit(1)


@main.command(context_settings=HELP)
@click.argument("output", type=SafePath(dir_okay=False, allow_dash=True))
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
    type=click.IntRange(0, 262144),
    default=128,
    show_default=True,
    help="Captured bytes per frame (0: whole frames); wire lengths are kept.",
)
@handle_errors
def sample(output: str, flows: int, seed: int, snaplen: int) -> None:
    """Write a synthetic sample trace to OUTPUT: heavy-tailed (Pareto) flow sizes, TCP and UDP,
    IPv4 and IPv6, 60 seconds, as a classic pcap. Deterministic for a given --seed.

    It is built in memory; for MAWI-like traces of any size, written in constant memory with
    their exact totals, see `producer synth`."""
    from flowherd.producer.traces.sample import write_sample

    with open_binary(output) as out:
        truth = write_sample(out, flows=flows, seed=seed, snaplen=snaplen)
    packets = sum(v[0] for v in truth.values())
    click.echo(f"wrote {output}: {packets:,} packets in {len(truth):,} flows", err=True)


main.add_command(sniff_command)
main.add_command(synth_command)
