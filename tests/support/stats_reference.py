"""A plain reference for ``reporter stats``: the definitions of docs/stats.md, written directly
over the reported rows (uni_rows / conv_row) with ``ipaddress``, all in memory."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from flowherd.console.units import proto_name
from flowherd.models.flows import FlowKey, FlowStats
from flowherd.reporter.table.views import conv_row, uni_rows

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Ref:
    key: str
    order: tuple[Any, ...]
    packets: int = 0
    bytes: int = 0
    flows: int = 0
    first_ns: int = 2**70
    last_ns: int = -(2**70)


def _net(a: str, v4: int, v6: int) -> tuple[tuple[Any, ...], str]:
    ip = ipaddress.ip_address(a)
    net = ipaddress.ip_network((ip, v4 if ip.version == 4 else v6), strict=False)
    return (net.version, int(net.network_address)), str(net)


def _ip(a: str) -> tuple[tuple[Any, ...], str]:
    ip = ipaddress.ip_address(a)
    return (ip.version, int(ip)), str(ip)


def values(kind: str, v4: int, v6: int, view: str, f: tuple[Any, ...]) -> list[tuple[Any, str]]:
    """(order, text) of each key value of flow ``f`` = (src, dst, proto, sport, dport)."""
    src, dst, proto, sp, dp = f
    if kind == "srcip":
        return [_ip(src)]
    if kind == "dstip":
        return [_ip(dst)]
    if kind == "ip":
        return [_ip(src), _ip(dst)]
    if kind == "sport":
        return [((sp,), str(sp))]
    if kind == "dport":
        return [((dp,), str(dp))]
    if kind == "port":
        return [((sp,), str(sp)), ((dp,), str(dp))]
    if kind == "proto":
        return [((proto,), proto_name(proto))]
    if kind == "srcnet":
        return [_net(src, v4, v6)]
    if kind == "dstnet":
        return [_net(dst, v4, v6)]
    if kind == "net":
        return [_net(src, v4, v6), _net(dst, v4, v6)]
    assert kind == "pair"
    (oa, ta), (ob, tb) = _ip(src), _ip(dst)
    if view == "bi":
        (oa, ta), (ob, tb) = sorted([(oa, ta), (ob, tb)])
        return [((oa, ob), f"{ta} <-> {tb}")]
    return [((oa, ob), f"{ta} -> {tb}")]


def split_key(text: str) -> tuple[str, int, int]:
    kind, _, rest = text.partition("/")
    if kind not in ("srcnet", "dstnet", "net"):
        return kind, 32, 128
    if not rest:
        return kind, 24, 64
    a, _, b = rest.partition(",")
    return kind, int(a), int(b) if b else 64


def rate(r: Ref, by: str) -> float:
    span = r.last_ns - r.first_ns
    if span <= 0:
        return 0.0
    return r.packets * 10**9 / span if by == "pps" else 8 * r.bytes * 10**9 / span


def measure(r: Ref, by: str) -> float:
    return rate(r, by) if by in ("pps", "bps") else getattr(r, by)  # type: ignore[no-any-return]


def reference(
    table: Iterable[tuple[FlowKey, FlowStats]],
    key: str,
    view: str = "uni",
    by: str = "bytes",
    n: int = 10,
    threshold: float | None = None,
    percentage: float | None = None,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """(totals, rows best first) as ``reporter stats`` defines them."""
    kind, v4, v6 = split_key(key)
    flows: list[tuple[Any, ...]] = []
    for k, st in table:
        if view == "uni":
            for r in uni_rows(k, st):
                flows.append((r.src, r.dst, r.proto, r.sport, r.dport, r.packets, r.bytes, r.first_ns, r.last_ns))  # fmt: skip
        else:
            c = conv_row(k, st)
            flows.append((c.a_addr, c.b_addr, c.proto, c.a_port, c.b_port, c.packets, c.bytes, c.first_ns, c.last_ns))  # fmt: skip
    tot = {"packets": 0, "bytes": 0, "flows": 0}
    agg: dict[str, Ref] = {}
    for f in flows:
        tot["packets"] += f[5]
        tot["bytes"] += f[6]
        tot["flows"] += 1
        vals = values(kind, v4, v6, view, f[:5])
        for order, text in vals:  # every endpoint, even twice
            r = agg.setdefault(text, Ref(text, order))
            r.packets += f[5]
            r.bytes += f[6]
            r.first_ns = min(r.first_ns, f[7])
            r.last_ns = max(r.last_ns, f[8])
        for _, text in set(vals):  # a flow once per distinct value
            agg[text].flows += 1
    refs = list(agg.values())
    if threshold is not None:
        refs = [r for r in refs if measure(r, by) >= threshold]
    if percentage is not None:
        refs = [r for r in refs if Fraction(getattr(r, by) * 100, tot[by]) >= Fraction(percentage)]
    refs.sort(key=lambda r: (-measure(r, by), -r.bytes, -r.packets, -r.flows, r.order))
    if n:
        refs = refs[:n]

    def pct(x: int, t: int) -> float:
        return x * 100 / t if t else 0.0

    rows = [
        {
            "key": r.key,
            "packets": r.packets,
            "bytes": r.bytes,
            "flows": r.flows,
            "packets_pct": pct(r.packets, tot["packets"]),
            "bytes_pct": pct(r.bytes, tot["bytes"]),
            "flows_pct": pct(r.flows, tot["flows"]),
            "pps": rate(r, "pps"),
            "bps": rate(r, "bps"),
            "first_ns": r.first_ns,
            "last_ns": r.last_ns,
        }
        for r in refs
    ]
    return tot, rows
