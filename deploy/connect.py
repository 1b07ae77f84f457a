"""Redis clients built from a URL, with bounded retries and credentials kept out of messages."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.retry import Retry

from models.errors import BackendError


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for logs and messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def connect(url: str, wait: float = 10.0) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``), checked with PING.

    Transient connection errors are retried with exponential backoff for up to ``wait`` seconds;
    then :class:`BackendError` says which server (password redacted) and why.
    """
    try:
        tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}
        client = Redis.from_url(
            url,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 6),
            health_check_interval=30,
            **tcp,
        )
    except ValueError as exc:
        raise BackendError(f"invalid Redis URL {redact(url)}: {exc}") from None
    deadline = time.monotonic() + wait
    delay = 0.1
    while True:
        try:
            client.ping()
            return client
        except (AuthenticationError, ResponseError) as exc:
            raise BackendError(f"Redis at {redact(url)} refused the connection: {exc}") from None
        except RedisError as exc:
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"cannot reach Redis at {redact(url)} after {wait:.0f}s: {exc}"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
