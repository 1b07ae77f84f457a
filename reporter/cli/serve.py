"""``reporter serve``: the web view, JSON API and capture metrics over HTTP (the ``web`` extra).

The command itself imports no web framework: without the extra it says so in one line.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import click

from flowherd.console.cli import HELP, handle_errors, open_backend, redis_options, settings_from
from flowherd.console.extras import require
from flowherd.deploy.connect import redact
from flowherd.reporter.web.access import AccessError, check_bind, read_token

#: the modules of the ``web`` extra
WEB_MODULES = ("starlette", "uvicorn", "jinja2", "prometheus_client")


def require_web() -> None:
    """One line naming the extra when a module of it is missing. (Figures also need the
    ``plot`` extra, which ``web`` pulls in; without matplotlib a figure's URL answers 501,
    naming the extra.)"""
    for mod in WEB_MODULES:
        require(mod, "web", "reporter serve")


def _warm_plots() -> None:
    """Import matplotlib while the server starts (seconds, the first time), not on the first
    page that shows a figure."""
    with contextlib.suppress(ImportError):
        import flowherd.reporter.output.plots  # noqa: F401


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or one line saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
    except OSError as exc:
        raise AccessError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@click.command("serve", context_settings=HELP)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="FLOWHERD_WEB_HOST",
    help="Address to listen on. Anything but loopback needs --token-file [env FLOWHERD_WEB_HOST].",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8350,
    show_default=True,
    envvar="FLOWHERD_WEB_PORT",
    help="Port (0: any free one, printed) [env FLOWHERD_WEB_PORT].",
)
@click.option(
    "--token-file",
    metavar="PATH",
    envvar="FLOWHERD_WEB_TOKEN_FILE",
    help="A file holding the bearer token every request must carry (Authorization: Bearer "
    "TOKEN; browsers sign in once at /login) [env FLOWHERD_WEB_TOKEN_FILE].",
)
@click.option(
    "--refresh",
    type=click.FloatRange(0.2, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between the pages' live refreshes.",
)
@redis_options
@handle_errors
def serve_cmd(
    host: str,
    port: int,
    token_file: str | None,
    refresh: float,
    redis_url: str | None,
    queue: str,
) -> None:
    """A read-only web view of the captures, their JSON and their metrics.

    \b
    Pages:    /                      the captures: state, progress, totals (live)
              /captures/NAME         status, top-N (sortable by bytes, packets, duration,
                                     rate; uni/bi; protocol), summary, elephants by each
                                     rule, size histogram, CCDF and byte share, windows
    JSON:     /api/captures, /api/captures/NAME, .../top?n=20&by=bytes&direction=uni&proto=tcp,
              .../summary, .../windows, .../persist?n=10 (as the CLIs' --format json)
    Metrics:  /metrics (Prometheus gauges per capture); liveness: /healthz

    \b
    Examples:
      reporter serve                                  # http://127.0.0.1:8350/
      reporter serve --port 0                         # any free port (printed)
      openssl rand -hex 32 > ~/.flowherd-token && chmod 600 ~/.flowherd-token
      reporter serve --host 0.0.0.0 --token-file ~/.flowherd-token
      curl -H "Authorization: Bearer $(cat ~/.flowherd-token)" http://HOST:8350/api/captures
    """
    require_web()
    token = read_token(token_file) if token_file else None
    check_bind(host, token)
    settings = settings_from(redis_url, queue)
    store, url, embedded = open_backend(settings)
    store.kv.ping()  # unreachable or refused: one line now, not an error page per request
    where = store.where or ("private Redis" if embedded else redact(url))
    sock = bind(host, port)

    import uvicorn

    from flowherd.reporter.web.app import create_app

    app = create_app(store, token=token, refresh_s=refresh, where=where)
    threading.Thread(target=_warm_plots, name="warm-plots", daemon=True).start()
    shown = f"[{host}]" if ":" in host else host
    real_port = sock.getsockname()[1]
    note = ", token required" if token else ""
    click.echo(f"serving http://{shown}:{real_port}/ (store: {where}{note})", err=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
