"""Flow tables for the reporter benchmark (bench/report.py): synthetic, or from an oracle-style
``.uni.csv``, packed as flowherd stores them and loaded into one Redis hash."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from typing import Any

KEY = "bench:flows"
NS = 10**9
T0 = 1_704_067_200 * NS


def synthetic(n_uni: int, seed: int = 7) -> Iterator[tuple[bytes, bytes]]:
    """``n_uni`` unidirectional flows in about ``n_uni / 1.95`` conversations: Zipf-popular
    clients (40 k IPv4, 8 k IPv6) and servers (6 k, 1.5 k), Pareto packet counts, 300 s."""
    from flowherd.models.flows import VALUE, canonical

    rng = random.Random(seed)
    v4c = [
        bytes([10, rng.randrange(256), rng.randrange(256), rng.randrange(256)])
        for _ in range(40_000)
    ]
    v4s = [
        bytes([198, 18 + rng.randrange(2), rng.randrange(256), rng.randrange(256)])
        for _ in range(6_000)
    ]
    v6c = [bytes.fromhex("20010db8000c") + rng.randbytes(10) for _ in range(8_000)]
    v6s = [bytes.fromhex("20010db80005") + rng.randbytes(10) for _ in range(1_500)]
    convs = -(-n_uni * 100 // 195)
    both = n_uni - convs  # conversations with packets both ways
    for i in range(convs):
        v6 = rng.random() < 0.1
        cs, ss = (v6c, v6s) if v6 else (v4c, v4s)
        c = cs[int(len(cs) * rng.random() ** 2.5)]
        s = ss[int(len(ss) * rng.random() ** 4)]
        key, d = canonical(
            c,
            s,
            rng.choice((6, 6, 6, 17)),
            1024 + rng.randrange(64_000),
            rng.choice((80, 443, 53, 22, 8080)),
        )
        start = T0 + rng.randrange(300 * NS)
        dur = int(rng.paretovariate(1.3) * 1e7)
        p1 = int(rng.paretovariate(1.1))
        p2 = int(rng.paretovariate(1.1) * 1.5) if i < both else 0
        b1, b2 = p1 * rng.randrange(60, 200), p2 * rng.randrange(60, 1514)
        first1, last1 = start, start + dur
        first2, last2 = (
            (start + 1 + rng.randrange(1000), start + dur + 7) if p2 else (10**19 - 1, 0)
        )
        # direction 0 is A -> B; the client sent first
        ab = (p1, b1, first1, last1) if d == 0 else (p2, b2, first2, last2)
        ba = (p2, b2, first2, last2) if d == 0 else (p1, b1, first1, last1)
        if ab[0] == 0:  # only B sent: A's side is empty
            ab = (0, 0, 10**19 - 1, 0)
        yield key.pack(), VALUE.pack(
            ab[0], ab[1], ba[0], ba[1], b"%019d" % ab[2], b"%019d" % ab[3], b"%019d" % ba[2], b"%019d" % ba[3],
            rng.randrange(256) if key.proto == 6 else 0, rng.randrange(256) if key.proto == 6 else 0,
        )  # fmt: skip


def from_uni_csv(path: str) -> Iterator[tuple[bytes, bytes]]:
    """The conversations behind a uni CSV in the oracle's format (each row one direction)."""
    import csv
    import ipaddress

    from flowherd.models.flows import FlowKey, FlowStats, canonical

    def ns(t: str) -> int:
        neg = t.startswith("-")
        s, f = t.lstrip("-").split(".")
        return -(int(s) * NS + int(f)) if neg else int(s) * NS + int(f)

    table: dict[FlowKey, FlowStats] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            a, b = ipaddress.ip_address(r["src"]).packed, ipaddress.ip_address(r["dst"]).packed
            key, d = canonical(a, b, int(r["proto"]), int(r["sport"]), int(r["dport"]))
            st = table.setdefault(key, FlowStats())
            c = (int(r["packets"]), int(r["bytes"]), ns(r["first_ts"]), ns(r["last_ts"]))
            if d == 0:
                st.pkts_ab, st.bytes_ab, st.first_ab, st.last_ab = c
            else:
                st.pkts_ba, st.bytes_ba, st.first_ba, st.last_ba = c
    for k, s in table.items():
        yield k.pack(), s.pack()


def load(conn: Any, pairs: Iterator[tuple[bytes, bytes]], batch: int = 1000) -> tuple[int, int]:
    """HSET the pairs into :data:`KEY`; returns (conversations, unidirectional flows)."""
    conn.delete(KEY)
    p = conn.pipeline(transaction=False)
    convs = uni = 0
    args: list[bytes] = []
    cmds = 0
    for k, v in pairs:
        args += (k, v)
        convs += 1
        a, _, b, _ = struct.unpack_from("<dddd", v)
        uni += (a > 0) + (b > 0)
        if len(args) >= 2 * batch:
            p.execute_command("HSET", KEY, *args)
            args, cmds = [], cmds + 1
            if cmds % 20 == 0:
                p.execute()
    if args:
        p.execute_command("HSET", KEY, *args)
    p.execute()
    return convs, uni


# ---------------------------------------------------------------------------------------------
# one measurement, in a fresh process
