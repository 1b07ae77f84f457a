"""The flows of a MAWI-like trace: when each starts, its size, addresses and timing.

Everything about flow ``i`` except its start is a counter-based hash of ``(seed, i)`` (splitmix64
in numpy), so any batch of flows is made without the ones before it, and the same seed makes the
same flows. Starts are the sorted uniform order statistics over the trace's span, drawn in
blocks. The client address and port (for ICMP, the target address) are a bijection of ``i``:
flow keys are unique by construction.

Sizes: 3% ICMP echo exchanges (mean 2.5 packets); of the rest, :data:`MICE` are one packet and the
others a Pareto (shape :data:`ALPHA`) capped at ``cap``, scaled (:func:`pareto_scale`) so that
the mean is the target ``packets / flows``. A flow of n packets lasts about 50 ms * n ** 0.8
(spread by a lognormal), and ends before the trace does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from flowherd.producer.traces.mawi_frames import (
    DNS,
    DOWNLOAD,
    ICMP,
    INTERACTIVE,
    PROTO,
    QUIC,
    UPLOAD,
    Arr,
    templates,
)

ALPHA = 1.1  # Pareto shape of packets per flow: the lower, the heavier the tail
MICE = 0.35  # the share of TCP/UDP flows that are one packet (scans, probes, lost handshakes)
ICMP_SHARE, ICMP_MEAN = 0.03, 2.5
_U64 = np.uint64
_ICMP_EXP = 1 / math.log(1 + 1 / (ICMP_MEAN - 1))  # 1 + floor(Exp(this)) has mean ICMP_MEAN


def pareto_scale(mean: float, cap: int, alpha: float = ALPHA) -> float:
    """``xm`` such that ``N = max(1, min(cap, floor(xm * U ** (-1/alpha))))`` has mean ``mean``.

    E[N] = 1 + sum over j = 2..cap of min(1, (xm/j) ** alpha): the first 4096 terms exactly, the
    rest (all below 1 there) as an integral.
    """
    head = min(cap, 4096)
    j = np.arange(2, head + 1, dtype=float)

    def expect(xm: float) -> float:
        s = 1.0 + float(np.minimum(1.0, (xm / j) ** alpha).sum())
        if cap > head:
            s += (
                xm**alpha * ((head + 0.5) ** (1 - alpha) - (cap + 0.5) ** (1 - alpha)) / (alpha - 1)
            )
        return s

    lo, hi = 0.0, float(cap)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expect(mid) < mean else (lo, mid)
    return (lo + hi) / 2


def _mix(x: Arr) -> Arr:
    """splitmix64's finaliser: uint64 -> well-mixed uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    out: Arr = x ^ (x >> _U64(31))
    return out


def uniform(seed: int, field: int, i: Arr, k: Arr | int = 0) -> Arr:
    """A uniform in [0, 1) for each (seed, field, i, k): a counter-based random stream."""
    base = _U64((seed * 0x9E3779B97F4A7C15 + field * 0xD1B54A32D192ED03) % 2**64)
    x = _mix(i.astype(_U64) * _U64(0x9E3779B97F4A7C15) + base)
    if not isinstance(k, int):
        x = _mix(x ^ k.astype(_U64))
    return (x >> _U64(11)).astype(float) * 2.0**-53


def flow_keys(i: Arr, seed: int) -> Arr:
    """A bijection of [0, 2**35) (xor, odd multipliers, xor-shifts): distinct flows get distinct
    (20-bit client host, 15-bit client port or ICMP target) pairs, whatever the seed."""
    m = _U64((1 << 35) - 1)
    x = (i.astype(_U64) ^ _U64(seed * 0x9E3779B1 % 2**35)) * _U64(0x2545F4914F6CDD1D) & m
    x ^= x >> _U64(17)
    x = x * _U64(0x5851F42D4C957F2D) & m
    return x ^ (x >> _U64(13))


class Flows:
    """Columns of a set of flows: parameters, progress (``sent``, bytes ``c2s``/``s2c``) and
    frame templates (``recs``, ``wire``, ``dir``, ``cap``: see :func:`templates`)."""

    def __init__(self, cols: dict[str, Arr]) -> None:
        self.c = cols

    def __len__(self) -> int:
        return len(self.c["i"])

    def take(self, sel: Arr) -> Flows:
        return Flows({k: v[sel] for k, v in self.c.items()})

    def extend(self, other: Flows) -> Flows:
        if not len(self):
            return other
        return Flows({k: np.concatenate([v, other.c[k]]) for k, v in self.c.items()})


@dataclass(frozen=True)
class Population:
    """The flows of one trace: ``flows`` of them over ``span`` ns, ``packets`` on average."""

    seed: int
    flows: int
    packets: int
    span: int
    v6_share: float
    snaplen: int

    @property
    def cap(self) -> int:
        """The largest flow possible: a twentieth of the packets (at least 20 times the mean)."""
        return max(self.packets // 20, 20 * self.packets // self.flows, 2)

    @property
    def xm(self) -> float:
        mean = self.packets / self.flows
        rest = (mean - ICMP_SHARE * ICMP_MEAN) / (1 - ICMP_SHARE)
        return pareto_scale(max(1.0, (rest - MICE) / (1 - MICE)), self.cap)

    def starts(self, block: int = 1 << 16) -> Iterator[tuple[Arr, Arr]]:
        """(i, start ns) in blocks: the sorted uniform order statistics over the span, one after
        the other (1 - the next start shrinks by a factor U ** (1 / flows left))."""
        lo, log_rest = 0, 0.0
        while lo < self.flows:
            i = np.arange(lo, min(self.flows, lo + block), dtype=np.int64)
            lr = log_rest + np.cumsum(np.log1p(-uniform(self.seed, 0, i)) / (self.flows - i))
            log_rest, lo = float(lr[-1]), int(i[-1]) + 1
            yield i, np.minimum(np.floor(-np.expm1(lr) * self.span), self.span - 1).astype(np.int64)

    def make(self, i: Arr, start: Arr, xm: float) -> Flows:
        """Flows ``i`` starting at ``start`` (ns from the trace's start), ``xm`` the Pareto
        scale (:attr:`xm`, computed once)."""

        def u(field: int) -> Arr:
            return uniform(self.seed, field, i)

        key = flow_keys(i, self.seed)
        host, low = key >> _U64(15), key & _U64(0x7FFF)
        v6, roll = u(1) < self.v6_share, u(2)
        pareto = np.clip(np.floor(xm * (1.0 - u(3)) ** (-1 / ALPHA)), 1, self.cap)
        n = np.where(u(4) < MICE, 1, pareto)
        icmp_n = 1 + np.minimum(np.floor(_ICMP_EXP * -np.log1p(-u(5))), 60)  # geometric
        n = np.where(roll < ICMP_SHARE, icmp_n, n).astype(np.int64)
        tcp = np.select([u(6) < 0.1, u(6) < 0.25], [UPLOAD, INTERACTIVE], DOWNLOAD)
        udp = np.where(n <= 6, DNS, QUIC)
        prof = np.select([roll < ICMP_SHARE, roll < 0.2], [ICMP, udp], tcp)
        proto = PROTO[prof]
        popular = np.floor(65536 * u(7) ** 4).astype(_U64)  # a few busy servers, a long tail
        srv_i = np.where(prof == ICMP, 0x10000 | low, popular)
        hi = np.where(v6, np.array([0x20010DB8C0000000, 0x20010DB850000000], _U64)[:, None], 0)
        lo_c = np.where(v6, host << _U64(4) | _U64(1), _U64(0x0A000000) | host)  # 10.0.0.0/12
        lo_s = np.where(v6, srv_i << _U64(4) | _U64(2), _U64(0xC6120000) | srv_i)  # 198.18/15
        sport = np.array([443, 443, 443, 80, 80, 8080, 22, 993])[np.floor(u(8) * 8).astype(int)]
        sport = np.choose(prof, [sport, sport, 22, 53, 443, 0])
        mss = np.where(v6, 1428, 1448)  # a 1500-byte MTU less IP, TCP and timestamp headers
        tcp_flow, dns = proto == 6, prof == DNS
        sizes = np.stack(
            [
                np.where(tcp_flow, 80 + 700 * u(9), np.where(dns, 30 + 40 * u(9), 40)),
                np.where(tcp_flow, mss, 1200 + 150 * u(10)),
                np.where(tcp_flow, 20 + 300 * u(10), 60 + 400 * u(11)),
            ],
            1,
        ).astype(np.int64)
        z = np.sqrt(-2 * np.log1p(-u(12))) * np.cos(2 * np.pi * u(13))  # a standard normal
        life = 50e6 * n**0.8 * np.exp(z)
        cols: dict[str, Arr] = {
            "i": i,
            "start": start,
            "n": n,
            # packet k at start + gap * (k + jitter), jitter in [0, 0.9): all before the end
            "gap": np.maximum(np.minimum(life, self.span - 1 - start) / n, 1.0),
            "prof": prof,
            "v6": v6,
            "proto": proto,
            "cli": np.stack([hi[0], lo_c], 1).astype(_U64),
            "srv": np.stack([hi[1], lo_s], 1).astype(_U64),
            "ports": np.stack([32768 | low.astype(np.int64), sport], 1),
            "ttl": np.stack([64 - np.floor(24 * u(14)), 40 + np.floor(20 * u(15))], 1).astype(int),
            "isn": np.floor(np.stack([u(16), u(17)], 1) * 2**32).astype(_U64),
            "sizes": sizes,
        }
        recs, wire, d, caps = templates(cols, self.snaplen)
        cols = {k: cols[k] for k in ("i", "start", "n", "gap", "prof", "v6", "proto")}
        cols.update(recs=recs, wire=wire, dir=d, cap=caps)
        cols.update({k: np.zeros(len(i), np.int64) for k in ("sent", "c2s", "s2c")})
        return Flows(cols)
