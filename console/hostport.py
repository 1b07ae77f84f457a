"""``HOST:PORT`` option values (IPFIX collectors)."""

from __future__ import annotations

import click


def parse_hostport(text: str, param_hint: str = "--ipfix") -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT``; :class:`click.BadParameter` otherwise."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(
            f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:4739 or [::1]:4739",
            param_hint=param_hint,
        )
    return host, int(port)
