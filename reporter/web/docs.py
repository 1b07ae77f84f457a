"""The documents of the web view, computed by the functions the CLIs use (no web framework here).

Each ``*_json`` function returns the text that the matching command prints with ``--json`` or
``--format json``: ``reporter captures``, ``producer status``, ``reporter top``, ``reporter
summary``, ``reporter windows``, ``reporter persist`` and ``reporter stats``. Query parameters
are parsed here too, so the pages and the JSON API refuse the same values with the same
messages.

Failures: :class:`BadParam` (a parameter is wrong: HTTP 400), :class:`NotFound` (no such
capture, or no windows: 404); any other :class:`~flowherd.models.errors.CaptureStateError` is a
capture in a state that does not allow the request (409).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from flowherd.models import numbers
from flowherd.models.capture import CaptureStatus
from flowherd.models.errors import CaptureStateError
from flowherd.models.flows import ts_text
from flowherd.models.keys import NAME_RE, RunKeys
from flowherd.models.report import (
    RANK_BY,
    ElephantRule,
    PersistentFlow,
    RankBy,
    Report,
    Row,
    View,
    WindowSummary,
    one_of,
    parse_view,
)
from flowherd.reporter.analysis.elephants import DEFAULT_RULES, parse_rule
from flowherd.reporter.analysis.report import stream_report
from flowherd.reporter.analysis.stats import BY, KEY_FORMS, By, KeySpec, parse_key
from flowherd.reporter.output.render import rows_json
from flowherd.reporter.query import windows
from flowherd.reporter.query.rows import top_rows
from flowherd.reporter.query.stats import write_stats
from flowherd.reporter.table.order import parse_proto
from flowherd.store.backend import Store
from flowherd.store.captures import load_report, names, run_of, status
from flowherd.store.tables import iter_raw, table

#: the largest ``n`` a request may ask for (a top-N list is held in memory)
MAX_N = 1000


class BadParam(ValueError):
    """A query parameter the view cannot use (HTTP 400)."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(f"{param}: {message}")


class NotFound(CaptureStateError):
    """No capture of that name, or nothing of that kind in it (HTTP 404)."""


@dataclass(frozen=True)
class TopQuery:
    """What ``reporter top`` takes: ``-n``, ``--by``, ``--direction``, ``--proto``, ``--window``."""

    n: int = 20
    by: RankBy = "bytes"
    view: View = "uni"
    proto: str = ""  # as given (the page shows it back); parsed by :attr:`proto_number`
    window: str = ""

    @property
    def proto_number(self) -> int | None:
        return parse_proto(self.proto) if self.proto else None

    def params(self, **change: object) -> dict[str, str]:
        """The query string's values, with ``change`` applied (for links)."""
        d: dict[str, object] = {"n": self.n, "by": self.by, "direction": self.view}
        d |= {"proto": self.proto, "window": self.window} | change
        return {k: str(v) for k, v in d.items() if v not in ("", None)}


def int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        return numbers.count(raw, "a whole number", lo=lo, hi=hi)
    except numbers.NumberError as exc:
        raise BadParam(name, str(exc)) from None


def _view(params: Mapping[str, str]) -> View:
    try:
        return parse_view(params.get("direction", "uni") or "uni")
    except ValueError as exc:
        raise BadParam("direction", str(exc)) from None


def parse_top(params: Mapping[str, str], default_n: int = 20) -> TopQuery:
    """A :class:`TopQuery` from query parameters; :class:`BadParam` for a wrong value."""
    n = int_param(params, "n", default_n, 1, MAX_N)
    by = params.get("by", "bytes") or "bytes"
    if by not in RANK_BY:
        raise BadParam("by", f"{by!r}: use one of {', '.join(RANK_BY)}")
    view = _view(params)
    proto = params.get("proto", "").strip()
    if proto:
        try:
            parse_proto(proto)
        except ValueError as exc:
            raise BadParam("proto", str(exc)) from None
    q = TopQuery(n, by, view, proto, params.get("window", "").strip())
    return q


def parse_rules(values: list[str]) -> list[ElephantRule]:
    try:
        return [parse_rule(r) for r in values] or list(DEFAULT_RULES)
    except ValueError as exc:
        raise BadParam("rule", str(exc)) from None


def keys_of(store: Store, name: str) -> RunKeys:
    """The current run of capture ``name``; :class:`NotFound` when there is none."""
    if not NAME_RE.match(name):
        raise NotFound(f"no capture named {name!r}: names use letters, digits, '.', '_', '-'")
    try:
        return run_of(store, name)
    except CaptureStateError as exc:
        raise NotFound(str(exc)) from None


def status_of(store: Store, name: str, detail: bool = True) -> CaptureStatus:
    keys_of(store, name)
    try:
        return status(store, name, detail)
    except CaptureStateError as exc:  # replaced or deleted between the two reads
        raise NotFound(str(exc)) from None


def captures(store: Store, detail: bool = True) -> list[CaptureStatus]:
    """Every capture's status (``reporter captures``), skipping one deleted meanwhile;
    ``detail=False`` skips the failures' texts (see :func:`flowherd.store.captures.status`)."""
    out = []
    for n in names(store):
        try:
            out.append(status(store, n, detail))
        except CaptureStateError:
            continue
    return out


def captures_json(store: Store) -> str:
    return "[" + ",".join(s.model_dump_json() for s in captures(store)) + "]"


def status_json(store: Store, name: str) -> str:
    return status_of(store, name).model_dump_json(indent=1)


def window_starts(store: Store, keys: RunKeys, name: str, which: str) -> list[int]:
    try:
        return windows.select(store, keys, name, which)
    except CaptureStateError as exc:
        if "no windows" in str(exc) or "no window containing" in str(exc):
            raise NotFound(str(exc)) from None
        raise BadParam("window", str(exc)) from None


def top_of(store: Store, name: str, q: TopQuery) -> list[Row]:
    """The rows of ``reporter top`` without ``--window``."""
    keys = keys_of(store, name)
    return top_rows(store, table(keys), q.n, q.by, q.view, q.proto_number)


def top_json(store: Store, name: str, q: TopQuery) -> str:
    """``reporter top NAME ... --format json``: the rows, or with a window one item per window."""
    if not q.window:
        return rows_json(top_of(store, name, q))
    keys = keys_of(store, name)
    items = [
        f'{{"window_start": "{ts_text(s)}", "rows": '
        f"{rows_json(top_rows(store, table(keys, s), q.n, q.by, q.view, q.proto_number))}}}"
        for s in window_starts(store, keys, name, q.window)
    ]
    return "[" + ",".join(items) + "]"


def summary_of(store: Store, name: str, rules: list[ElephantRule] | None = None) -> Report:
    """``reporter summary NAME``: the stored report while it is current, else one computed now
    (a capture still being merged can change between two passes: a 409 then)."""
    keys = keys_of(store, name)
    report = load_report(store, keys)
    st = status_of(store, name)
    if report is None or rules or report.summary.packets != st.packets:
        chosen = rules or list(DEFAULT_RULES)
        try:
            rescan = lambda: iter_raw(store, table(keys))  # noqa: E731
            report = stream_report(st, rescan, time.time_ns(), rules=chosen)
        except ValueError as exc:
            raise CaptureStateError(
                f"capture {name!r} changed while it was read ({exc}): it is still being "
                "merged; try again, or when it is complete"
            ) from None
    return report


def windows_of(store: Store, name: str) -> list[WindowSummary]:
    return windows.summaries(store, keys_of(store, name))


def windows_json(store: Store, name: str) -> str:
    return "[" + ",".join(r.model_dump_json() for r in windows_of(store, name)) + "]"


def persist_of(store: Store, name: str, n: int) -> list[PersistentFlow]:
    """``reporter persist NAME -n N``: flows in the top N of the most windows."""
    keys = keys_of(store, name)
    window_starts(store, keys, name, "all")  # NotFound when there are none
    return windows.persistent(store, keys, n)


def persist_json(store: Store, name: str, n: int) -> str:
    return "[" + ",".join(f.model_dump_json() for f in persist_of(store, name, n)) + "]"


@dataclass(frozen=True)
class StatsQuery:
    """What ``reporter stats`` takes: ``--key``, ``--by``, ``-n``, ``--direction``,
    ``--window``."""

    spec: KeySpec
    by: By = "bytes"
    n: int = 10
    view: View = "uni"
    window: str = ""

    @property
    def key(self) -> str:
        """The key as the CLI names it in its documents (``net/24`` is ``net/24,64``)."""
        return str(self.spec)


def parse_stats(
    params: Mapping[str, str],
    key: str = "key",
    by: str = "by",
    default_key: str = "",
    n_name: str | None = "n",
) -> StatsQuery:
    """A :class:`StatsQuery` from query parameters, the key, its order and the number of rows
    read from the parameters named ``key``, ``by`` and ``n_name`` (``default_key`` when there is
    no key; 10 rows when ``n_name`` is None); :class:`BadParam` for a wrong value, with the key
    parser's message for a wrong key."""
    text = params.get(key, "").strip() or default_key
    if not text:
        raise BadParam(key, f"give one of {KEY_FORMS}")
    try:
        spec = parse_key(text)
    except ValueError as exc:
        raise BadParam(key, str(exc)) from None
    try:
        order = one_of(params.get(by, "bytes") or "bytes", BY)
    except ValueError as exc:
        raise BadParam(by, str(exc)) from None
    n = int_param(params, n_name, 10, 1, MAX_N) if n_name else 10
    return StatsQuery(spec, order, n, _view(params), params.get("window", "").strip())


#: the keys the capture page offers (any other the parser takes works in its URL)
STATS_KEYS = ("ip", "srcip", "dstip", "dport", "port", "proto", "pair", "net/24")


def stats_json(store: Store, name: str, q: StatsQuery) -> str:
    """``reporter stats NAME --key K --by B -n N --direction D [--window W] --format json``."""
    keys = keys_of(store, name)
    starts = window_starts(store, keys, name, q.window) if q.window else None
    out = io.StringIO()
    write_stats(out, store, keys, name, q.spec, q.by, q.n, q.view, "json", starts)
    return out.getvalue().rstrip("\n")


def stats_of(store: Store, name: str, q: StatsQuery) -> dict[str, object]:
    """The document of :func:`stats_json` (whole capture) as a dict, for the page."""
    doc: dict[str, object] = json.loads(stats_json(store, name, q))
    return doc
