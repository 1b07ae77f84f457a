"""Every flow of a table as CSV or JSON, streamed from stored ``(key, value)`` pairs.

:func:`write_rows` writes the rows of the pairs it is given, in that order (*table order*:
whatever order the reader produced, e.g. HSCAN's), holding one chunk of lines at a time: memory
does not grow with the table. :func:`write_rows_ranked` (in :mod:`flowherd.reporter.table.by_size`)
writes the same rows largest first.

Each line is byte-identical to what :func:`flowherd.reporter.output.render.rows_csv` (``csv``) and
:func:`flowherd.reporter.output.render.rows_json` (``json``) write for the same row: the oracle's
columns and number formats, :func:`flowherd.models.flows.ts_text` timestamps, and the conversation
orientation of :func:`flowherd.reporter.table.views.conv_row`. ``jsonl`` is the same objects one per
line. Given a Community ID seed (``community_seed``), CSV lines end in a ``community_id`` column and
JSON objects carry the ID of that seed (without one: CSV has the oracle's columns only, JSON the
seed-0 ID, as :func:`flowherd.reporter.table.views.uni_row` computes it). The fast paths read the
packed bytes directly (no models per flow); a record with a timestamp before 2001-09-09 (or
negative) takes a slower path with the same output.

Errors: :class:`ValueError` for a pair that is not a packed flow record (the lines before it
have been written), or for an unknown ``view`` or ``fmt``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TextIO

from flowherd.models.community import key_hasher
from flowherd.models.report import View
from flowherd.reporter.table.packed import (
    KEY4,
    KEY6,
    MINUS,
    VALUE,
    AddrText,
    Pair,
    split_key,
    ts_bytes,
)

Format = Literal["csv", "json", "jsonl"]

UNI_COLUMNS = ("src", "dst", "proto", "sport", "dport", "packets", "bytes", "first_ts", "last_ts")
BI_COLUMNS = (
    "proto",
    "a_addr",
    "a_port",
    "b_addr",
    "b_port",
    "frames_a_to_b",
    "bytes_a_to_b",
    "frames_b_to_a",
    "bytes_b_to_a",
    "frames",
    "bytes",
    "first_ts",
    "last_ts",
)
#: The column that ``community_seed`` adds to CSV output.
CID_COLUMN = "community_id"
#: Lines handed to ``out.write`` at once.
CHUNK = 2048

# the last %s: "" or "," + the Community ID
UNI_CSV = b"%s,%s,%d,%d,%d,%d,%d,%s,%s%s\n"
BI_CSV = b"%d,%s,%d,%s,%d,%d,%d,%d,%d,%d,%d,%s,%s%s\n"
# The same with each timestamp as two slices of its stored digits: seconds (10 digits, no
# leading zero: 2001-09-09 or later) and nanoseconds (9 digits), the common case made cheap.
_UNI_CSV_SPLIT = b"%s,%s,%d,%d,%d,%d,%d,%s.%s,%s.%s%s\n"
_BI_CSV_SPLIT = b"%d,%s,%d,%s,%d,%d,%d,%d,%d,%d,%d,%s.%s,%s.%s%s\n"
_ONE = 49  # b"1"[0]: a stored timestamp starting with 1-9 has no leading zero
UNI_JSON = (
    b'{"src": "%s", "dst": "%s", "proto": %d, "sport": %d, "dport": %d, "packets": %d, '
    b'"bytes": %d, "first_ns": %d, "last_ns": %d, "tcp_flags": %d, "community_id": %s, '
    b'"first_ts": "%s", '
    b'"last_ts": "%s"}'
)
BI_JSON = (
    b'{"proto": %d, "a_addr": "%s", "a_port": %d, "b_addr": "%s", "b_port": %d, '
    b'"packets_a_to_b": %d, "bytes_a_to_b": %d, "packets_b_to_a": %d, "bytes_b_to_a": %d, '
    b'"packets": %d, "bytes": %d, "first_ns": %d, "last_ns": %d, "community_id": %s, '
    b'"first_ts": "%s", '
    b'"last_ts": "%s"}'
)


def header(view: View, community: bool = False) -> str:
    """The CSV header line of ``view`` (with its newline), with the ``community_id`` column
    when ``community``."""
    cols = UNI_COLUMNS if view == "uni" else BI_COLUMNS
    return ",".join((*cols, CID_COLUMN) if community else cols) + "\n"


def _csv_cid(seed: int | None) -> Callable[[bytes, bytes, int, int, int], bytes] | None:
    """The CSV line's tail, ``b","`` + the ID (or nothing), of a key's parts; None without a
    seed (the tail is then empty)."""
    if seed is None:
        return None
    cid = key_hasher(seed)
    return lambda a, b, p, ap, bp: b"," + (cid(a, b, p, ap, bp) or b"")


def uni_fields(pairs: Iterable[Pair], addr: AddrText | None = None) -> Iterator[tuple[Any, ...]]:
    """Per unidirectional row: ``(src, dst, proto, sport, dport, packets, bytes, first, last,
    flags)``, addresses as ASCII text, ``first``/``last`` as stored (19 digits), counters as
    stored (floats holding integers). One row per direction that carried packets."""
    addr = addr or AddrText()
    for k, v in pairs:
        a, b, p, ap, bp = split_key(k)
        at, bt = addr(a), addr(b)
        pa, ba, pb, bb, fa, la, fb, lb, ga, gb = VALUE.unpack(v)
        if pa:
            yield at, bt, p, ap, bp, pa, ba, fa, la, ga
        if pb:
            yield bt, at, p, bp, ap, pb, bb, fb, lb, gb


def bi_fields(pairs: Iterable[Pair], addr: AddrText | None = None) -> Iterator[tuple[Any, ...]]:
    """Per conversation, oriented as :func:`flowherd.reporter.table.views.conv_row` orients it:
    ``(proto, a_addr, a_port, b_addr, b_port, packets_a_to_b, bytes_a_to_b, packets_b_to_a,
    bytes_b_to_a, first, last)``, in the forms of :func:`uni_fields`."""
    addr = addr or AddrText()
    for k, v in pairs:
        a, b, p, ap, bp = split_key(k)
        at, bt = addr(a), addr(b)
        pa, ba, pb, bb, fa, la, fb, lb, _, _ = VALUE.unpack(v)
        # equal-width digits compare as numbers; a negative one needs int()
        neg = MINUS in (fa[0], fb[0], la[0], lb[0])
        ka, kb = (int(fa), int(fb)) if neg else (fa, fb)
        first = fb if kb < ka else fa
        last = lb if (int(lb) > int(la) if neg else lb > la) else la
        if (kb < ka and (at != bt or ap != bp)) or (kb == ka and (bt, bp) < (at, ap)):
            yield p, bt, bp, at, ap, pb, bb, pa, ba, first, last
        else:
            yield p, at, ap, bt, bp, pa, ba, pb, bb, first, last


def _uni_csv(pairs: Iterable[Pair], addr: AddrText, seed: int | None) -> Iterator[list[bytes]]:
    # One loop, no per-row calls in the common case: the rows/s target lives here.
    tmpl, slow, unpack, k4, k6 = _UNI_CSV_SPLIT, UNI_CSV, VALUE.unpack, KEY4.unpack, KEY6.unpack
    tail = _csv_cid(seed)
    cache, miss = addr.cache, addr.miss
    lines: list[bytes] = []
    put = lines.append
    for k, v in pairs:
        n = len(k)
        if n == 14 and k[0] == 4:
            a, b, p, ap, bp = k4(k)
        elif n == 38 and k[0] == 16:
            a, b, p, ap, bp = k6(k)
        else:
            raise ValueError(f"not a packed flow key: {k!r}")
        at = cache.get(a) or miss(a)
        bt = cache.get(b) or miss(b)
        c = b"" if tail is None else tail(a, b, p, ap, bp)
        pa, ba, pb, bb, fa, la, fb, lb, _, _ = unpack(v)
        if pa:
            if fa[0] >= _ONE and la[0] >= _ONE:
                put(tmpl % (at, bt, p, ap, bp, pa, ba, fa[:10], fa[10:], la[:10], la[10:], c))
            else:
                put(slow % (at, bt, p, ap, bp, pa, ba, ts_bytes(fa), ts_bytes(la), c))
        if pb:
            if fb[0] >= _ONE and lb[0] >= _ONE:
                put(tmpl % (bt, at, p, bp, ap, pb, bb, fb[:10], fb[10:], lb[:10], lb[10:], c))
            else:
                put(slow % (bt, at, p, bp, ap, pb, bb, ts_bytes(fb), ts_bytes(lb), c))
        if len(lines) >= CHUNK:
            yield lines
            lines = []
            put = lines.append
    yield lines


def _bi_csv(pairs: Iterable[Pair], addr: AddrText, seed: int | None) -> Iterator[list[bytes]]:
    tmpl, unpack, k4, k6 = _BI_CSV_SPLIT, VALUE.unpack, KEY4.unpack, KEY6.unpack
    tail = _csv_cid(seed)
    cache, miss = addr.cache, addr.miss
    lines: list[bytes] = []
    put = lines.append
    for k, v in pairs:
        n = len(k)
        if n == 14 and k[0] == 4:
            a, b, p, ap, bp = k4(k)
        elif n == 38 and k[0] == 16:
            a, b, p, ap, bp = k6(k)
        else:
            raise ValueError(f"not a packed flow key: {k!r}")
        at = cache.get(a) or miss(a)
        bt = cache.get(b) or miss(b)
        pa, ba, pb, bb, fa, la, fb, lb, _, _ = unpack(v)
        # Stored timestamps are equal-width digits, so bytes order is number order when
        # none is negative ("-" sorts before every digit): if first and last both start with
        # 1-9, no timestamp used below is negative or has a leading zero.
        f = fb if fb < fa else fa
        t = lb if lb > la else la
        if f[0] < _ONE or t[0] < _ONE:
            lines += _slow_lines(k, v, "bi", seed)
            continue
        c = b"" if tail is None else tail(a, b, p, ap, bp)
        if (fb < fa and (at != bt or ap != bp)) or (fb == fa and (bt, bp) < (at, ap)):
            at, ap, bt, bp, pa, ba, pb, bb = bt, bp, at, ap, pb, bb, pa, ba
        pk, by = pa + pb, ba + bb
        put(tmpl % (p, at, ap, bt, bp, pa, ba, pb, bb, pk, by, f[:10], f[10:], t[:10], t[10:], c))
        if len(lines) >= CHUNK:
            yield lines
            lines = []
            put = lines.append
    yield lines


def json_lines(
    pairs: Iterable[Pair], addr: AddrText, view: View, seed: int
) -> Iterator[tuple[Any, ...]]:
    """Per row, ``(fields, line)``: the fields of :func:`uni_fields` or :func:`bi_fields` and
    the row's JSON object (no newline), its Community ID computed with ``seed``."""
    cid = key_hasher(seed)
    current = [b"null"]  # the ID of the pair whose rows the fields generator is yielding

    def tap() -> Iterator[Pair]:
        for k, v in pairs:
            c = cid(*split_key(k))
            current[0] = b"null" if c is None else b'"%s"' % c
            yield k, v

    if view == "uni":
        for fs in uni_fields(tap(), addr):
            s, d, p, sp, dp, pk, by, f, la, g = fs
            ft, lt, c = ts_bytes(f), ts_bytes(la), current[0]
            yield fs, UNI_JSON % (s, d, p, sp, dp, pk, by, int(f), int(la), g, c, ft, lt)
    else:
        for fs in bi_fields(tap(), addr):
            p, a, ap, b, bp, pab, bab, pba, bba, f, la = fs
            pk, by, ft, lt, c = pab + pba, bab + bba, ts_bytes(f), ts_bytes(la), current[0]
            yield fs, BI_JSON % (
                p, a, ap, b, bp, pab, bab, pba, bba, pk, by, int(f), int(la), c, ft, lt
            )  # fmt: skip


def _json(pairs: Iterable[Pair], addr: AddrText, view: View, seed: int) -> Iterator[list[bytes]]:
    lines: list[bytes] = []
    put = lines.append
    for _, line in json_lines(pairs, addr, view, seed):
        put(line)
        if len(lines) >= CHUNK:
            yield lines
            lines = []
            put = lines.append
    yield lines


def _slow_lines(k: bytes, v: bytes, view: View, seed: int | None) -> list[bytes]:
    """The CSV lines of one record whose timestamps the fast loops do not handle (negative,
    or before 2001-09-09)."""
    tail = _csv_cid(seed)
    c = b"" if tail is None else tail(*split_key(k))
    if view == "uni":
        return [
            UNI_CSV % (s, d, p, sp, dp, pk, by, ts_bytes(f), ts_bytes(la), c)
            for s, d, p, sp, dp, pk, by, f, la, _ in uni_fields([(k, v)])
        ]
    lines = []
    for p, a, ap, b, bp, pab, bab, pba, bba, f, la in bi_fields([(k, v)]):
        pk, by, ft, lt = pab + pba, bab + bba, ts_bytes(f), ts_bytes(la)
        lines.append(BI_CSV % (p, a, ap, b, bp, pab, bab, pba, bba, pk, by, ft, lt, c))
    return lines


def chunks(
    pairs: Iterable[Pair], view: View, fmt: Format, community_seed: int | None = None
) -> Iterator[list[bytes]]:
    """The rows of ``pairs`` as lists of encoded lines (``csv``: with newlines; ``json`` and
    ``jsonl``: bare objects), without a header, in the order of ``pairs``. See the module
    docstring for ``community_seed``; :func:`flowherd.models.community.community_id` raises
    :class:`ValueError` for a seed outside 0-65535."""
    if community_seed is not None and not 0 <= community_seed <= 0xFFFF:
        raise ValueError(f"community ID seed must be 0-65535, not {community_seed}")
    if view not in ("uni", "bi"):
        raise ValueError(f"view must be 'uni' or 'bi', not {view!r}")
    if fmt not in ("csv", "json", "jsonl"):
        raise ValueError(f"format must be csv, json or jsonl, not {fmt!r}")
    addr = AddrText()
    if fmt == "csv":
        if view == "uni":
            return _uni_csv(pairs, addr, community_seed)
        return _bi_csv(pairs, addr, community_seed)
    return _json(pairs, addr, view, community_seed or 0)


def write_lines(
    parts: Iterable[list[bytes]], out: TextIO, view: View, fmt: Format, community: bool = False
) -> int:
    """Write lines from :func:`chunks` (or any source of them) to ``out`` in ``fmt``: the CSV
    header first; a JSON array's brackets and ``", "`` separators (so the text equals
    :func:`flowherd.reporter.output.render.rows_json`'s); one object per line for ``jsonl``. Returns
    the number
    of rows written. ``community``: the CSV header names the ``community_id`` column."""
    rows = 0
    if fmt == "csv":
        out.write(header(view, community))
    elif fmt == "json":
        out.write("[")
    for lines in parts:
        if not lines:
            continue
        if fmt == "csv":
            out.write(b"".join(lines).decode("ascii"))
        elif fmt == "jsonl":
            out.write(b"\n".join(lines).decode("ascii") + "\n")
        else:
            out.write((", " if rows else "") + b", ".join(lines).decode("ascii"))
        rows += len(lines)
    if fmt == "json":
        out.write("]")
    return rows


def write_rows(
    pairs: Iterable[Pair],
    out: TextIO,
    view: View = "uni",
    fmt: Format = "csv",
    community_seed: int | None = None,
) -> int:
    """Write every row of ``pairs`` to ``out`` in table order (the order of ``pairs``), with
    the header or brackets of ``fmt`` (see :func:`write_lines`); returns the number of rows.
    Memory: one chunk of lines and a bounded address cache, whatever the table size."""
    parts = chunks(pairs, view, fmt, community_seed)
    return write_lines(parts, out, view, fmt, community_seed is not None)
