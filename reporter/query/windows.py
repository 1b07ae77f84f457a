"""Tumbling windows of a capture: listing, selection, and persistent elephants."""

from __future__ import annotations

from flowherd.models import numbers
from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import RunKeys
from flowherd.models.report import FlowRow, PersistentFlow, WindowSummary
from flowherd.reporter.query.rows import top_rows
from flowherd.reporter.table.views import uni_row
from flowherd.store.backend import Store
from flowherd.store.captures import load_info
from flowherd.store.tables import get_flows, table, top_directions, totals, window_starts


def starts(conn: Store, keys: RunKeys) -> list[int]:
    """Start (ns) of every window kept, oldest first."""
    return window_starts(conn, keys)


def width_ns(conn: Store, keys: RunKeys) -> int:
    try:
        return load_info(conn, keys).window_ns
    except CaptureStateError:
        return 0


def select(conn: Store, keys: RunKeys, name: str, which: str) -> list[int]:
    """``latest``, ``all``, or the window containing the epoch time ``which`` (seconds)."""
    ws = starts(conn, keys)
    if not ws:
        raise CaptureStateError(
            f"capture {name!r} has no windows: submit or sniff it with --window SECONDS"
        )
    if which == "all":
        return ws
    if which == "latest":
        return ws[-1:]
    try:
        t = numbers.epoch_ns(which)
    except numbers.NumberError:
        raise CaptureStateError(
            f"--window takes latest, all or an epoch time in seconds, not {numbers.shown(which)}"
        ) from None
    w = width_ns(conn, keys)
    chosen = [s for s in ws if s <= t < s + w]
    if not chosen:
        raise CaptureStateError(f"capture {name!r} has no window containing {numbers.shown(which)}")
    return chosen


def summaries(conn: Store, keys: RunKeys) -> list[WindowSummary]:
    w = width_ns(conn, keys)
    out = []
    for s in starts(conn, keys):
        tot = totals(conn, table(keys, s))
        out.append(
            WindowSummary(
                start_ns=s,
                width_ns=w,
                packets=tot.get("packets", 0),
                bytes=tot.get("bytes", 0),
                flows=tot.get("flows", 0),
            )
        )
    return out


def persistent_from(tops: dict[int, list[FlowRow]]) -> list[PersistentFlow]:
    """Flows by the number of windows whose top list holds them (most persistent first)."""
    seen: dict[tuple[str, str, int, int, int], tuple[list[int], int]] = {}
    for start, rows in sorted(tops.items()):
        for r in rows:
            k = (r.src, r.dst, r.proto, r.sport, r.dport)
            wins, b = seen.get(k, ([], 0))
            seen[k] = ([*wins, start], b + r.bytes)
    flows = [
        PersistentFlow(src=k[0], dst=k[1], proto=k[2], sport=k[3], dport=k[4], windows=w, bytes=b)
        for k, (w, b) in seen.items()
    ]
    flows.sort(key=lambda f: (-len(f.windows), -f.bytes, f.src, f.dst, f.proto, f.sport, f.dport))
    return flows


def persistent(conn: Store, keys: RunKeys, n: int) -> list[PersistentFlow]:
    """Persistent elephants: flows in the top ``n`` (by bytes, unidirectional) of most windows."""
    tops = {
        s: [r for r in top_rows(conn, table(keys, s), n, "bytes", "uni") if isinstance(r, FlowRow)]
        for s in starts(conn, keys)
    }
    return persistent_from(tops)


def timeline(conn: Store, keys: RunKeys, k: int) -> tuple[list[int], list[tuple[str, list[int]]]]:
    """Window starts, and for the ``k`` largest unidirectional flows of the whole capture their
    bytes in each window (label ``src:sport > dst:dport``)."""
    cands = top_directions(conn, table(keys), k)
    cands.sort(key=lambda c: -(c[1].bytes_ab if c[2] == 0 else c[1].bytes_ba))
    chosen = cands[:k]
    ws = starts(conn, keys)
    series: list[tuple[str, list[int]]] = []
    per_window = [get_flows(conn, table(keys, s), [key for key, _, _ in chosen]) for s in ws]
    for i, (key, st, d) in enumerate(chosen):
        r = uni_row(key, st, d)
        values = []
        for vals in per_window:
            w = vals[i]
            values.append(0 if w is None else (w.bytes_ab if d == 0 else w.bytes_ba))
        series.append((f"{r.src}:{r.sport} > {r.dst}:{r.dport}", values))
    return ws, series
