"""Redis clients built from a URL, with bounded retries and credentials kept out of messages."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    RedisError,
    ResponseError,
)
from redis.retry import Retry

from flowherd.models.errors import BackendError

T = TypeVar("T")


#: the URL schemes flowherd connects to
SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
#: ``//...@`` (credentials), ``password=...``, and a mistyped scheme's ``redis:...@``
_CREDENTIALS = re.compile(r"//\S*@")
_PASSWORD = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)
_SCHEME_CRED = re.compile(r"\b((?:rediss?|unix)(?:\+cluster)?)[:/]+[^\s@]*@", re.IGNORECASE)
UNPARSABLE = "(not shown: it does not parse)"


def scrub(text: str) -> str:
    """``text`` (any message) with whatever stands between ``//`` and ``@``, any
    ``password=`` value, and the credentials of a mistyped ``redis:...@`` replaced by ``***``."""
    text = _SCHEME_CRED.sub(lambda m: f"{m.group(1)}://***@", text)
    text = _CREDENTIALS.sub("//***@", text)
    return _PASSWORD.sub(r"\1***", text)


def redact(url: str) -> str:
    """``url`` with any password (``user:password@`` or ``?password=``) replaced by ``***``,
    safe for logs and messages. A text that is not a URL of one of :data:`SCHEMES` (a mistyped
    scheme, spaces or control characters) is never shown: :data:`UNPARSABLE` stands for it."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES or not url.isprintable() or " " in url:
        return UNPARSABLE
    try:
        parts = urlsplit(url)
    except ValueError:
        return UNPARSABLE
    netloc = parts.netloc
    if "@" in netloc:  # by text: a cluster URL names several host:port pairs
        cred, hosts = netloc.rsplit("@", 1)
        user, sep, _ = cred.partition(":")
        netloc = f"{user}:***@{hosts}" if sep else f"***@{hosts}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else (f"{k}={v}" if v or "=" in part else k)
        for part in parts.query.split("&")
        if part
        for k, _, v in [part.partition("=")]
    )
    return _PASSWORD.sub(
        r"\1***", urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    )


def check_database(url: str) -> None:
    """ValueError unless the path of a ``redis://``/``rediss://`` URL is empty or a database
    number (redis-py would take ``/abc`` as database 0)."""
    if url.partition("://")[0].lower() not in ("redis", "rediss"):
        return
    path = urlsplit(url).path.strip("/")
    if path and not (path.isascii() and path.isdigit() and len(path) <= 5):
        raise ValueError(f"the path must be a database number such as /0, not /{path[:20]}")


def command_retry(wait: float) -> Retry:
    """The retry policy of every command: on a lost connection (or a Redis still loading its
    data after a restart), reconnect with exponential backoff (0.1 s doubling to 2 s) for
    about ``wait`` seconds (at least 5), then raise."""
    budget, attempts, delay = max(wait, 5.0), 0, 0.1
    while budget > 0:
        attempts += 1
        budget -= delay
        delay = min(delay * 2, 2.0)
    return Retry(ExponentialBackoff(cap=2.0, base=0.05), attempts)


def until_reached(
    attempt: Callable[[], T],
    wait: float,
    what: str,
    refused: tuple[type[Exception], ...],
    unreachable: tuple[type[Exception], ...],
) -> T:
    """``attempt()``'s result, retried with exponential backoff (0.1 s doubling to 2 s) for up
    to ``wait`` seconds while it raises one of ``unreachable``; then :class:`BackendError`
    "cannot reach WHAT after Ns". One of ``refused`` (a wrong password, an ACL) is final at
    once: :class:`BackendError` "WHAT refused the connection". ``what`` names the server
    (password redacted)."""
    if not math.isfinite(wait) or wait < 0:
        raise ValueError(f"a connect timeout must be a finite number of seconds >= 0, not {wait}")
    deadline = time.monotonic() + wait
    delay = 0.1
    while True:
        try:
            return attempt()
        except refused as exc:
            raise BackendError(f"{what} refused the connection: {scrub(str(exc))}") from None
        except unreachable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(
                    f"cannot reach {what} after {wait:g}s: {scrub(str(exc))}"
                ) from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


def connect(url: str, wait: float = 10.0) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``), checked with PING.

    Reaching the server is retried with exponential backoff for up to ``wait`` seconds
    (``FLOWHERD_CONNECT_TIMEOUT``); then :class:`BackendError` says which server (password
    redacted) and why. A refused password or user is not retried. Every later command of the
    client retries a lost connection the same way (:func:`command_retry`), so a Redis restart
    shorter than that is invisible to the caller.
    """
    try:
        check_database(url)
        tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}
        opts = {"socket_connect_timeout": max(1.0, min(wait, 5.0)), **tcp}
        client = Redis.from_url(url, retry=command_retry(wait), health_check_interval=30, **opts)
        # the first contact has its own deadline (below), not the per-command retry budget
        probe = Redis.from_url(url, retry=Retry(NoBackoff(), 0), **opts)
    except ValueError as exc:
        raise BackendError(f"invalid Redis URL {redact(url)}: {scrub(str(exc))}") from None

    def ping() -> Redis:
        probe.ping()
        return client

    try:
        return until_reached(
            ping,
            wait,
            f"Redis at {redact(url)}",
            (AuthenticationError, AuthorizationError, ResponseError),
            (RedisError,),
        )
    finally:
        probe.close()
