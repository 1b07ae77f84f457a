"""Conversations held as numpy arrays: grouped by key, and packed the way the merge script
reads them.

:func:`groups` orders rows so that equal keys lie together (one sort of a 64-bit mix of the key
columns, checked: where two different keys share a mix, a lexicographic sort instead).
:func:`pack_records` writes ``u8 keylen | FlowKey.pack() | FlowStats.pack()`` for each flow
(:func:`flowherd.workers.fold.aggregate.pack_flows`'s form: the key's address length byte, both
addresses, protocol and ports little endian, then :data:`flowherd.models.flows.VALUE`: four counters
as doubles, four timestamps as 19 ASCII digits, two flag bytes), with array operations over all of
them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from flowherd.models.flows import VALUE

__all__ = ["addr_bytes", "groups", "pack_records"]

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]

#: odd multipliers of the key mix (splitmix64's and xxhash's constants)
_MIX = tuple(
    np.uint64(m)
    for m in (
        0x9E3779B97F4A7C15,
        0xBF58476D1CE4E5B9,
        0x94D049BB133111EB,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
    )
)


def groups(keys: list[U64]) -> tuple[I64, I64]:
    """An order of the rows that puts equal keys together, and where each group starts in it.

    One sort of a 64-bit mix of the key columns; where two different keys share a mix (some
    neighbours with equal mixes differ), a lexicographic sort of the columns instead.
    """
    mix = np.zeros(len(keys[0]), np.uint64)
    for k, m in zip(keys, _MIX, strict=False):
        mix = (mix ^ k) * m
        mix ^= mix >> np.uint64(29)
    order = np.argsort(mix)
    mix = mix[order]
    same = mix[1:] == mix[:-1]
    split = np.zeros(len(order) - 1, np.bool_)
    for k in keys:
        col = k[order]
        split |= col[1:] != col[:-1]
    if (split & same).any():  # a collision: exact order instead
        order = np.lexsort(keys)
        split[:] = False
        for k in keys:
            col = k[order]
            split |= col[1:] != col[:-1]
    heads = np.flatnonzero(np.concatenate(([True], split)))
    return order, heads


def addr_bytes(hi: U64, lo: U64) -> bytes:
    """Addresses as 16 big-endian bytes each, back to back (IPv4: the last 4 of them)."""
    both = np.empty((len(hi), 2), ">u8")
    both[:, 0], both[:, 1] = hi, lo
    return both.tobytes()


def _digits(ns: U64) -> U8:
    """Each value as 19 ASCII decimal digits (``b"%019d"``), one row each."""
    out = np.empty((len(ns), 19), np.uint8)
    x = ns.copy()
    ten = np.uint64(10)
    for j in range(18, -1, -1):
        x, digit = np.divmod(x, ten)
        out[:, j] = digit
    out += 48  # ASCII "0"
    return out


def pack_records(
    sel: Mask,
    v6: bool,
    a: U8,
    b: U8,
    proto: I64,
    a_port: I64,
    b_port: I64,
    stats: tuple[I64 | U64, ...],
) -> bytes:
    """The flows ``sel`` (all of one address family) as
    :func:`flowherd.workers.fold.aggregate.pack_flows`
    writes them: ``u8 keylen | FlowKey.pack() | FlowStats.pack()`` each."""
    idx = np.flatnonzero(sel)
    if not len(idx):
        return b""
    g = len(idx)
    addr = 16 if v6 else 4
    klen = 1 + 2 * addr + 5
    rec = np.empty((g, 1 + klen + VALUE.size), np.uint8)
    rec[:, 0] = klen
    rec[:, 1] = addr
    rec[:, 2 : 2 + addr] = a.reshape(-1, 16)[idx][:, 16 - addr :]
    rec[:, 2 + addr : 2 + 2 * addr] = b.reshape(-1, 16)[idx][:, 16 - addr :]
    k = 2 + 2 * addr
    rec[:, k] = proto[idx]
    rec[:, k + 1 : k + 3] = a_port[idx].astype("<u2").view(np.uint8).reshape(g, 2)
    rec[:, k + 3 : k + 5] = b_port[idx].astype("<u2").view(np.uint8).reshape(g, 2)
    v = k + 5
    counters = np.stack([s[idx] for s in stats[:4]], axis=1).astype("<f8")
    rec[:, v : v + 32] = counters.view(np.uint8).reshape(g, 32)
    # the four timestamps of each flow, back to back: 76 digits
    times = np.stack([s[idx] for s in stats[4:8]], axis=1).astype(np.uint64)
    rec[:, v + 32 : v + 108] = _digits(times.reshape(-1)).reshape(g, 76)
    rec[:, v + 108] = stats[8][idx]
    rec[:, v + 109] = stats[9][idx]
    return rec.tobytes()
