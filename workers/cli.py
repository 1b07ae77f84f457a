"""``workers``: run flowherd's RQ workers, and manage the embedded private Redis.

    workers run -n 4                      # 4 worker processes on this host
    workers run -n 4 --metrics-port 9350  # and their Prometheus metrics (docs/metrics.md)
    FLOWHERD_REDIS_URL_FILE=/etc/flowherd/redis-url workers run -n 8   # a shared Redis
    workers local-redis status|start|stop

The URL of a Redis with a password lives in a file only its users can read (mode 0600), named by
``FLOWHERD_REDIS_URL_FILE`` or ``--redis-url-file``: never on the command line, where ``ps`` and
the shell history show it.

Plain ``rq worker`` works too, with flowherd's serializer and job class (``RQ_REDIS_URL``, not
``-u``, keeps the URL out of the process list)::

    RQ_REDIS_URL="$(cat /etc/flowherd/redis-url)" rq worker \\
       --serializer rq.serializers.JSONSerializer \\
       --job-class flowherd.deploy.queueing.FlowherdJob -w flowherd.workers.worker.FlowherdWorker
       flowherd
"""

from __future__ import annotations

import os

import click
from rq.serializers import JSONSerializer

from flowherd.console.cli import (
    OneLineGroup,
    handle_errors,
    open_backend,
    redis_options,
    settings_from,
    setup_logging,
)
from flowherd.deploy.connect import redact
from flowherd.deploy.local import ensure_local_redis, is_running, local_url, stop_local_redis
from flowherd.deploy.queueing import FlowherdJob, make_queue
from flowherd.models.settings import Settings
from flowherd.workers import metrics
from flowherd.workers.worker import FlowherdPool, FlowherdWorker


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowherd")
def main() -> None:
    """flowherd workers: dissect queued batches with scapy and merge them into flow tables.

    Start as many as you like, on any host that reaches the same Redis: results are identical
    whatever their number.
    """


@main.command()
@click.option(
    "-n",
    "--num",
    type=click.IntRange(1, 512),
    default=os.cpu_count() or 1,
    show_default="CPU count",
    help="Worker processes to start.",
)
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar="FLOWHERD_METRICS_PORT",
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics of all NUM workers on http://HOST:PORT/metrics: packets, "
    "bytes, batches by outcome, dissect and merge seconds, queue depth (docs/metrics.md) "
    "[env FLOWHERD_METRICS_PORT]. Default: no metrics.",
)
@click.option(
    "--metrics-host",
    envvar="FLOWHERD_METRICS_HOST",
    default="0.0.0.0",
    show_default=True,
    metavar="HOST",
    help="Address the metrics endpoint listens on (127.0.0.1: this host only) "
    "[env FLOWHERD_METRICS_HOST].",
)
@click.option("-v", "--verbose", count=True, help="-v: one log line per job; -vv: debug.")
@redis_options
@handle_errors
def run(
    num: int,
    burst: bool,
    metrics_port: int | None,
    metrics_host: str,
    verbose: int,
    redis_url: str | None,
    queue: str,
) -> None:
    """Run NUM worker processes on this host until interrupted (Ctrl-C stops them cleanly).

    Each process is an RQ worker that does not fork per job and only runs flowherd's own job
    functions; a dead process is replaced, and a batch it was processing goes back on the queue
    within about FLOWHERD_HEARTBEAT + FLOWHERD_MAINTENANCE_INTERVAL seconds (20 + 15).

    \b
    Examples:
      workers run -n 8                          # 8 processes, private Redis
      FLOWHERD_REDIS_URL_FILE=/etc/flowherd/redis-url workers run -n 8 --metrics-port 9350
      curl -s localhost:9350/metrics | grep flowherd_packets_total
    """
    setup_logging(verbose)
    settings = settings_from(redis_url, queue)  # a bad FLOWHERD_* value: one line, exit 2
    store, url, embedded = open_backend(settings)  # checks the store is reachable
    conn = store.queue
    if settings.store_url:  # the pool's worker processes build their store from it
        os.environ["FLOWHERD_STORE_URL"] = settings.store_url
    where = "private Redis" if embedded else redact(url)
    click.echo(f"starting {num} worker(s) on queue {queue!r} at {where}", err=True)
    os.environ["FLOWHERD_DIE_WITH_PARENT"] = "1"  # the pool's workers end if the pool dies
    pool = FlowherdPool(
        [queue],
        connection=conn,
        num_workers=num,
        worker_class=FlowherdWorker,
        serializer=JSONSerializer,
        job_class=FlowherdJob,
    )
    level = {0: "WARNING", 1: "INFO"}.get(verbose, "DEBUG")
    if metrics_port is None:
        pool.start(burst=burst, logging_level=level)
        return
    q = make_queue(conn, queue)
    with metrics.endpoint(metrics_host, metrics_port, q, lambda: pool.number_of_active_workers):
        click.echo(f"metrics on http://{metrics_host}:{metrics_port}/metrics", err=True)
        pool.start(burst=burst, logging_level=level)


@main.command("local-redis")
@click.argument("action", type=click.Choice(["status", "start", "stop"]), default="status")
@handle_errors
def local_redis(action: str) -> None:
    """Show, start or stop the private redis-server used when no --redis-url is given.

    Its data (append-only file) lives under $FLOWHERD_HOME (default
    ~/.local/share/flowherd) and survives a stop.
    """
    home = Settings().home
    if action == "start":
        click.echo(ensure_local_redis(home))
    elif action == "stop":
        click.echo("stopped" if stop_local_redis(home) else "not running")
    else:
        state = "running" if is_running(home) else "not running"
        click.echo(f"{state}: {local_url(home)} (data in {home / 'redis'})")
