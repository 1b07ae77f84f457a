"""Who may read the web view: the bind address and the bearer token (no web framework here).

The server binds to loopback unless told otherwise; bound anywhere else it needs a token,
sent as ``Authorization: Bearer TOKEN`` (or, for a browser, the cookie that ``/login`` sets).
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from flowherd.models.errors import FlowherdError

COOKIE = "flowherd_token"
MIN_TOKEN = 16


class AccessError(FlowherdError):
    """The server refuses to start as asked: a usage error (exit status 2)."""

    exit_code = 2


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``); a name that is not
    ``localhost`` is not taken as loopback (it may resolve to anything)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The token in ``path`` (one line; surrounding whitespace ignored)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AccessError(f"--token-file: cannot read {path}: {why}") from None
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
        raise AccessError(
            f"--token-file: {path} should hold one token of at least {MIN_TOKEN} characters "
            "and no spaces (e.g. `openssl rand -hex 32 > FILE`)"
        )
    return token


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token."""
    if token is None and not is_loopback(host):
        raise AccessError(
            f"--host {host} is not a loopback address: anyone who reaches it could read the "
            "captures; pass --token-file FILE (a bearer token the clients send) or bind to "
            "127.0.0.1"
        )


def token_ok(token: str | None, authorization: str | None, cookie: str | None) -> bool:
    """True when no token is set, or the request carries it (compared in constant time)."""
    if token is None:
        return True
    given = ""
    if authorization and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    elif cookie:
        given = cookie
    return hmac.compare_digest(given.encode(), token.encode())
