"""What every flowherd CLI shares: options, logging, the connection, and error handling.

Exit codes: 0 ok; 1 a runtime or data error (one line on stderr, no traceback); 2 a usage error
(click's convention); 130 interrupted.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisClusterException, RedisError

from flowherd.deploy.connect import connect, redact, scrub
from flowherd.deploy.local import ensure_local_redis
from flowherd.models.errors import FlowherdError
from flowherd.models.keys import DEFAULT_QUEUE, NAME_RE
from flowherd.models.settings import Settings
from flowherd.store.backend import Store, open_store

F = TypeVar("F", bound=Callable[..., Any])
#: click context settings of every command: -h as --help, help text 100 columns wide
HELP: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_META = "flowherd.backend"


def remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep a backend option in the context for :func:`settings_from` (so commands need no
    parameter of their own for it)."""
    if value is not None:
        ctx.meta.setdefault(_META, {})[param.name] = value
    return value


def _read_url_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            url = f.read().strip()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeError) as exc:  # a NUL in the name, a file that is not text
        raise click.BadParameter(f"cannot read {shown_value(path)}: {exc}") from None
    if not url:
        raise click.BadParameter(f"{path} is empty: it should hold one Redis URL")
    return url


def capture_name_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """click callback of ``--name``: a capture name (letters, digits, ``._-``, at most 100,
    starting with a letter or digit), else a usage error."""
    if value is not None and not NAME_RE.fullmatch(value):
        raise click.BadParameter(
            f"{shown_value(value)} is not a capture name: use 1-100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return value


class SafePath(click.Path):
    """:class:`click.Path` whose refusal of a NUL character (the OS's ``ValueError``) is a usage
    error like any other bad path."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except ValueError as exc:
            self.fail(f"{shown_value(value)}: {exc}", param, ctx)


class OneLineGroup(click.Group):
    """A command group whose usage errors are one line on stderr, ``error: ...`` (exit status
    2), like every other error of flowherd's commands."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def redis_options(f: F) -> F:
    """``--redis-url`` (or ``--redis-url-file``), ``--store-url`` (or ``--store-url-file``) and
    ``--queue``, all also read from the environment."""
    for opt, env, what in (
        ("--store-url-file", "FLOWHERD_STORE_URL_FILE", "--store-url"),
        ("--redis-url-file", "FLOWHERD_REDIS_URL_FILE", "--redis-url"),
    ):
        f = click.option(
            opt,
            envvar=env,
            metavar="PATH",
            expose_value=False,
            callback=remember,
            help=f"A file holding the {what} URL, so that no password shows in `ps` or the "
            f"shell history [env {env}].",
        )(f)
    f = click.option(
        "--store-url",
        envvar="FLOWHERD_STORE_URL",
        metavar="URL",
        expose_value=False,
        callback=remember,
        help="Where captures and flow tables live: a Redis (redis://, rediss://, unix://) or a "
        "Redis Cluster (redis+cluster://[user:password@]host:port[,host:port...], "
        "rediss+cluster://). Default: the Redis of --redis-url [env FLOWHERD_STORE_URL].",
    )(f)
    f = click.option(
        "--queue",
        envvar="FLOWHERD_QUEUE",
        default=DEFAULT_QUEUE,
        show_default=True,
        help="RQ queue the batch jobs go to (workers must listen on the same one).",
    )(f)
    f = click.option(
        "--redis-url",
        envvar="FLOWHERD_REDIS_URL",
        default=None,
        metavar="URL",
        help="Shared Redis (redis://, rediss://, unix://; user:password@ allowed). Default: a "
        "private redis-server under $FLOWHERD_HOME, started on demand [env FLOWHERD_REDIS_URL].",
    )(f)
    return f


def settings_from(redis_url: str | None, queue: str, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(_META, {}) if ctx is not None else {}
    if redis_url is None and "redis_url_file" in given:
        redis_url = _read_url_file(given["redis_url_file"])
    store_url = given.get("store_url")
    if store_url is None and "store_url_file" in given:
        store_url = _read_url_file(given["store_url_file"])
    if store_url is not None:
        values.setdefault("store_url", store_url)
    for k in ("shards", "wait_replicas"):
        if k in given:
            values.setdefault(k, given[k])
    return Settings(redis_url=redis_url, queue=queue, **values)


def open_redis(settings: Settings) -> tuple[Redis, str, bool]:
    """(client, url, embedded): the configured Redis, or the private one started on demand."""
    if settings.redis_url:
        return connect(settings.redis_url, settings.connect_timeout), settings.redis_url, False
    url = ensure_local_redis(settings.home)
    return connect(url, settings.connect_timeout), url, True


def open_backend(settings: Settings) -> tuple[Store, str, bool]:
    """(store, queue url, embedded): the queue Redis (or the private one, started on demand)
    and the store beside it (``settings.store_url``, by default the queue's Redis)."""
    conn, url, embedded = open_redis(settings)
    store = open_store(conn, settings.store_url, settings.connect_timeout)
    if not settings.store_url:
        store = Store.single(conn, redact(url) if not embedded else "private Redis")
    return store, url, embedded


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def one_line(text: str) -> str:
    """``text`` for one line of stderr: credentials scrubbed, control characters escaped."""
    text = scrub(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def invalid(exc: ValidationError) -> str:
    """What is wrong in a refused setting, naming ``FLOWHERD_X`` only when it is set in the
    environment (else the value came from an option, named as ``--x``)."""
    bad = exc.errors()[0]
    value = bad.get("input")
    shown = shown_value(value)
    if not bad["loc"] or exc.title != "Settings":
        where = ".".join(str(p) for p in bad["loc"]) or exc.title
        return f"{where}={shown}: {_message(bad['msg'])}"
    field = str(bad["loc"][0])
    env = f"FLOWHERD_{field.upper()}"
    name = env if env in os.environ else f"--{field.replace('_', '-')}"
    return f"{name}={shown}: {_message(bad['msg'])}"


def _message(msg: str) -> str:
    """pydantic's message without its "Value error, " prefix (our validators' own words)."""
    return msg.removeprefix("Value error, ")


def shown_value(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def handle_errors(f: F) -> F:
    """Turn expected failures into one line on stderr and exit code 1 (130 when interrupted)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except FlowherdError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except ValidationError as exc:  # a bad setting: one line, a usage error
            click.echo(f"error: {one_line(invalid(exc))}", err=True)
            sys.exit(2)
        except (RedisError, RedisClusterException) as exc:
            click.echo(f"error: Redis: {one_line(str(exc))}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except ValueError as exc:
            if "null byte" not in str(exc):  # what the OS refuses in any path or name
                raise
            click.echo("error: a file name, path or interface name holds a NUL character", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
