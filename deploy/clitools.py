"""What every flowherd CLI shares: options, logging, the connection, and error handling.

Exit codes: 0 ok; 1 a runtime or data error (one line on stderr, no traceback); 2 a usage error
(click's convention); 130 interrupted.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from redis import Redis
from redis.exceptions import RedisError

from deploy.connect import connect, redact
from deploy.local import ensure_local_redis
from models.errors import FlowherdError
from models.keys import DEFAULT_QUEUE
from models.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def redis_options(f: F) -> F:
    """``--redis-url`` and ``--queue``, both also read from the environment."""
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
    return Settings(redis_url=redis_url, queue=queue, **values)


def open_redis(settings: Settings) -> tuple[Redis, str, bool]:
    """(client, url, embedded): the configured Redis, or the private one started on demand."""
    if settings.redis_url:
        return connect(settings.redis_url, settings.connect_timeout), settings.redis_url, False
    url = ensure_local_redis(settings.home)
    return connect(url, settings.connect_timeout), url, True


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def handle_errors(f: F) -> F:
    """Turn expected failures into one line on stderr and exit code 1 (130 when interrupted)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except FlowherdError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except RedisError as exc:
            click.echo(f"error: Redis: {redact(str(exc))}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
