"""CPU time and peak memory of ``reporter stats``'s core on generated conversations.

    python bench/stats.py --convs 500000 --key pair -n 0
    python bench/stats.py --convs 500000 --key srcip --max-keys 10000000   # no spilling

Each conversation has random IPv4 endpoints (one of 2**20 sources and of 2**20 destinations),
both directions, distinct timestamps. The records are generated as they are read (nothing held),
so the peak RSS is the statistics' own plus the interpreter's; the generation's CPU time is
measured apart and subtracted.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowherd.models.flows import FlowStats, canonical
from flowherd.reporter.analysis.stats import MAX_KEYS, key_stats, parse_key


def pairs(n: int, seed: int = 1) -> Iterator[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    for i in range(n):
        s = (0x0A000000 + rng.randrange(1 << 20)).to_bytes(4, "big")
        d = (0xC0000000 + rng.randrange(1 << 20)).to_bytes(4, "big")
        k, _ = canonical(s, d, 6, rng.randrange(1024, 65535), 443)
        st = FlowStats()
        st.add(0, 10**18 + i, 100 + i % 1000, 0)
        st.add(1, 10**18 + i + 5, 60, 0)
        yield k.pack(), st.pack()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--convs", type=int, default=500_000)
    ap.add_argument("--key", default="srcip")
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--by", default="bytes")
    ap.add_argument("--direction", default="uni")
    ap.add_argument("--max-keys", type=int, default=MAX_KEYS)
    a = ap.parse_args()
    t = time.process_time()
    for _ in pairs(a.convs):
        pass
    gen = time.process_time() - t
    t = time.process_time()
    spec = parse_key(a.key)
    with key_stats(pairs(a.convs), spec, a.direction, a.by, a.n, max_keys=a.max_keys) as (
        tot,
        rows,
    ):
        out = sum(1 for _ in rows)
    cpu = time.process_time() - t - gen
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{a.convs:,} conversations, {tot.flows:,} flows, key {spec} -n {a.n} "
        f"(max_keys {a.max_keys:,}): {out:,} rows, {cpu:.1f} s CPU "
        f"(generation {gen:.1f} s apart), peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
