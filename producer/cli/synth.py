"""``producer synth``: write a MAWI-like header-only trace of any size (see
flowherd.producer.traces.mawi)."""

from __future__ import annotations

import os
import time

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from flowherd.console.cli import HELP, SafePath, handle_errors
from flowherd.console.outfile import open_binary
from flowherd.console.show import err_console
from flowherd.producer.cli.options import duration_option
from flowherd.producer.traces.mawi import SCALES, TraceSpec, Truth, write_trace

_SCALE_HELP = "; ".join(
    f"{name}: {s.packets:,} packets, {s.flows:,} flows, {s.duration_s:g} s"
    for name, s in SCALES.items()
)


def spec_for(
    scale: str, packets: int | None, flows: int | None, duration: float | None, **kw: object
) -> TraceSpec:
    """The scale's spec with the options given; --packets or --flows alone keep its packets per
    flow. UsageError if there would be fewer packets than flows."""
    base = SCALES[scale]
    per_flow = base.packets / base.flows
    if packets is not None and flows is None:
        flows = max(1, round(packets / per_flow))
    if flows is not None and packets is None:
        packets = round(flows * per_flow)
    packets, flows = packets or base.packets, flows or base.flows
    if packets < flows:
        raise click.UsageError(f"--packets ({packets:,}) must be at least --flows ({flows:,})")
    fields = {"packets": packets, "flows": flows, "duration_s": duration or base.duration_s}
    return TraceSpec(**fields, **kw)


@click.command("synth", context_settings=HELP)
@click.argument("output", type=SafePath(dir_okay=False, allow_dash=True))
@click.option(
    "--scale", type=click.Choice(list(SCALES)), default="tiny", show_default=True, help=_SCALE_HELP
)
@click.option(
    "--packets",
    type=click.IntRange(1),
    help="Packets to aim for: the heavy tail lands within a few percent [default: the scale's].",
)
@click.option(
    "--flows",
    type=click.IntRange(1, 1 << 35),
    help="Conversations, exactly [default: the scale's; with --packets alone, 1 per 10 packets].",
)
@click.option(
    "--duration",
    callback=duration_option,
    metavar="DURATION",
    help="Time the trace spans (90, 30s, 15m) [default: the scale's].",
)
@click.option("--seed", type=click.IntRange(0), default=1, show_default=True)
@click.option("--snaplen", type=click.IntRange(64, 1514), default=96, show_default=True)
@click.option(
    "--v6-share",
    type=click.FloatRange(0, 1),
    default=0.18,
    show_default=True,
    help="The share of flows over IPv6.",
)
@click.option("--nanosecond", is_flag=True, help="Nanosecond timestamps (pcap magic a1b23c4d).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the exact totals on stdout as JSON (the spec, packets, bytes, flows_uni, "
    "flows_bi, per protocol, the largest flows).",
)
@handle_errors
def synth_command(
    output: str,
    scale: str,
    packets: int | None,
    flows: int | None,
    duration: float | None,
    seed: int,
    snaplen: int,
    v6_share: float,
    nanosecond: bool,
    as_json: bool,
) -> None:
    """Write a MAWI-like header-only trace to OUTPUT, streaming, in constant memory.

    Like a sample of the MAWI backbone archive: a classic pcap of Ethernet frames captured at
    --snaplen bytes, each record keeping its whole wire length; IPv4 and IPv6; TCP with both
    directions, UDP, ICMP; heavy-tailed flow sizes (a few elephants carry most bytes); flows
    interleaved in time. gzip-compressed (level 1) when OUTPUT ends in .gz. The same options
    write the same bytes. The exact totals, what `reporter summary` must find, are printed at
    the end (all of them with --json). About 0.5-1.5 M packets/s on one core; large is
    about 1 GB.

    \b
    Examples:
      producer synth mawi.pcap.gz                          # tiny: ~20 k packets, 2,000 flows
      producer synth --scale large /data/mawi-large.pcap.gz  # ~50 M packets, 5 M flows
      producer synth --packets 2000000 --duration 15m t.pcap.gz  # 200,000 flows
      producer synth --scale small --json t.pcap.gz > t.truth.json
      producer submit --engine fast t.pcap.gz              # then compare with t.truth.json
    """
    if as_json and output == "-":
        raise click.UsageError("--json prints on stdout: write the trace to a file, not -")
    spec = spec_for(
        scale,
        packets,
        flows,
        duration,
        seed=seed,
        snaplen=snaplen,
        v6_share=v6_share,
        nanosecond=nanosecond,
    )
    err = err_console()
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]writing[/]"),
        BarColumn(),
        TextColumn("{task.completed:,} / ~{task.total:,} packets"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("", total=spec.packets)
        with open_binary(output) as out:
            gz = output.endswith(".gz")
            truth = write_trace(out, spec, lambda n: bar.update(task, completed=n), gz=gz)
    seconds = time.perf_counter() - t0
    click.echo(summary_line(output, truth, seconds), err=True)
    if as_json:
        click.echo(truth.model_dump_json(indent=1))


def summary_line(output: str, t: Truth, seconds: float) -> str:
    try:
        size = f" ({os.path.getsize(output) / 1e6:,.1f} MB)" if os.path.isfile(output) else ""
    except OSError:
        size = ""
    return (
        f"wrote {output}{size}: {t.packets:,} packets, {t.bytes:,} bytes on the wire, "
        f"{t.flows_bi:,} conversations ({t.flows_uni:,} unidirectional flows), "
        f"{t.ipv6_packets / t.packets:.0%} IPv6; {seconds:.1f} s, "
        f"{t.packets / max(seconds, 1e-9):,.0f} packets/s"
    )
