"""The HTML pages, rendered on the server from the same documents as the JSON API, and the
fragments that the pages' script reloads while a capture is live.

    GET /                                     the captures: state, progress, totals
    GET /captures/NAME?n=&by=&direction=&proto=&key=&key_by=
                                              one capture: status, top-N, summary and
                                              elephants, statistics by key, figures, windows
    GET /fragments/captures                   the captures table's rows
    GET /captures/NAME/fragments/PART         status, top, summary, stats or windows
    GET /captures/NAME/sizes.svg?direction=&top=
    GET /captures/NAME/timeline.svg?flows=
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from flowherd.console.units import (
    human_bytes,
    human_duration,
    human_rate,
    human_ts,
    proto_name,
    rate,
    rule_text,
)
from flowherd.models.capture import CaptureState
from flowherd.models.errors import CaptureStateError
from flowherd.models.report import RANK_BY
from flowherd.reporter.analysis.stats import BY, parse_key
from flowherd.reporter.web import docs, figures
from flowherd.store.backend import Store

FINAL = (CaptureState.COMPLETE, CaptureState.FAILED, CaptureState.ABORTED)
PROTOS = ("tcp", "udp", "icmp", "icmpv6", "gre", "esp", "sctp")
PERSIST_N = 10
#: the statistics section's own parameters on the capture page's URL (``by`` is the top's)
STATS_PARAMS = ("key", "key_by")


@pass_context
def _qs(ctx: Context, q: docs.TopQuery, **change: object) -> str:
    """The page's query string: the top's values with ``change`` applied, then the statistics
    section's (``keep``) so that either form or a header link leaves the other as it was."""
    return urlencode(q.params(**change) | dict(ctx.get("keep") or {}))


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("flowherd.reporter.web", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        bytes=human_bytes,
        duration=human_duration,
        ts=lambda ns: human_ts(ns) if ns is not None else "-",
        proto=proto_name,
        rule=rule_text,
        count=lambda v: f"{v:,}",
        pct=lambda v: f"{v * 100:.1f}%",
        rate=lambda r: human_rate(rate(r)) if rate(r) else "-",
        share=lambda v: f"{v:.2f}%",
    )
    env.globals["qs"] = _qs
    return env


ENV = _env()


def render(request: Request | None, template: str, code: int = 200, **ctx: Any) -> HTMLResponse:
    """``template`` rendered with ``ctx`` (and the footer's store, the refresh interval)."""
    state = request.app.state if request is not None else None
    ctx.setdefault("where", getattr(state, "where", ""))
    ctx.setdefault("refresh", getattr(state, "refresh_s", 2.0))
    return HTMLResponse(ENV.get_template(template).render(**ctx), status_code=code)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _name(request: Request) -> str:
    return str(request.path_params["name"])


def _signature(st: Any) -> str:
    return f"{st.run}:{st.packets}:{st.batches_done}:{st.state.value}"


# --- what each part shows -------------------------------------------------------------------


def _status_ctx(store: Store, name: str) -> dict[str, Any]:
    st = docs.status_of(store, name, detail=False)
    return {"st": st, "final": st.state in FINAL, "signature": _signature(st)}


def _top_ctx(store: Store, name: str, q: docs.TopQuery) -> dict[str, Any]:
    rows = docs.top_of(store, name, q)
    return {"rows": rows, "q": q, "rank_by": RANK_BY, "protos": PROTOS, "name": name}


def _summary_ctx(store: Store, name: str) -> dict[str, Any]:
    try:
        return {"report": docs.summary_of(store, name), "report_error": None}
    except docs.NotFound:
        raise
    except CaptureStateError as exc:  # changed while read: the next refresh tries again
        return {"report": None, "report_error": str(exc)}


def _keep(request: Request) -> dict[str, str]:
    qp = request.query_params
    return {k: qp[k] for k in STATS_PARAMS if qp.get(k, "").strip()}


def _stats_ctx(store: Store, name: str, sq: docs.StatsQuery) -> dict[str, Any]:
    keys = [(k, parse_key(k) == sq.spec) for k in docs.STATS_KEYS]
    if not any(chosen for _, chosen in keys):  # one the URL names: offered too
        keys.append((sq.key, True))
    chosen = next(k for k, c in keys if c)
    url = urlencode({"key": chosen, "by": sq.by, "direction": sq.view})
    return {
        "stats": docs.stats_of(store, name, sq),
        "sq": sq,
        "stats_keys": keys,
        "stats_by": BY,
        "stats_url": f"/captures/{name}/fragments/stats?{url}",
    }


def _windows_ctx(store: Store, name: str) -> dict[str, Any]:
    wins = docs.windows_of(store, name)
    persist = docs.persist_of(store, name, PERSIST_N) if wins else []
    return {"windows": wins, "persist": persist, "persist_n": PERSIST_N}


# --- endpoints ------------------------------------------------------------------------------


def captures_page(request: Request) -> Response:
    return render(request, "captures.html", captures=docs.captures(_store(request), False))


def captures_rows(request: Request) -> Response:
    return render(request, "_captures_rows.html", captures=docs.captures(_store(request), False))


def capture_page(request: Request) -> Response:
    store, name = _store(request), _name(request)
    q = docs.parse_top(request.query_params)
    sq = docs.parse_stats(request.query_params, "key", "key_by", "ip", None)
    ctx: dict[str, Any] = {"name": name, "q": q, "keep": _keep(request)}
    ctx |= _status_ctx(store, name)
    ctx |= _top_ctx(store, name, q)
    ctx |= _summary_ctx(store, name)
    ctx |= _stats_ctx(store, name, sq)
    ctx |= _windows_ctx(store, name)
    return render(request, "capture.html", **ctx)


def fragment(request: Request) -> Response:
    store, name, part = _store(request), _name(request), request.path_params["part"]
    if part == "status":
        return render(request, "_status.html", name=name, **_status_ctx(store, name))
    if part == "top":
        q = docs.parse_top(request.query_params)
        return render(request, "_top.html", keep=_keep(request), **_top_ctx(store, name, q))
    if part == "summary":
        return render(request, "_summary.html", name=name, **_summary_ctx(store, name))
    if part == "stats":
        sq = docs.parse_stats(request.query_params, default_key="ip", n_name=None)
        return render(request, "_stats.html", name=name, **_stats_ctx(store, name, sq))
    if part == "windows":
        return render(request, "_windows.html", name=name, **_windows_ctx(store, name))
    raise docs.NotFound(f"no part {part!r}: use status, top, summary, stats or windows")


def _svg(data: bytes) -> Response:
    return Response(data, media_type="image/svg+xml", headers={"Cache-Control": "no-cache"})


def sizes_svg(request: Request) -> Response:
    qp = request.query_params
    view = docs.parse_top(qp).view
    top = docs.int_param(qp, "top", 0, 0, 10**9) or None
    return _svg(figures.sizes_svg(_store(request), _name(request), view, top))


def timeline_svg(request: Request) -> Response:
    nflows = docs.int_param(request.query_params, "flows", 10, 1, 50)
    return _svg(figures.timeline_svg(_store(request), _name(request), nflows))


ROUTES = [
    Route("/", captures_page, methods=["GET"]),
    Route("/fragments/captures", captures_rows, methods=["GET"]),
    Route("/captures/{name}", capture_page, methods=["GET"]),
    Route("/captures/{name}/fragments/{part}", fragment, methods=["GET"]),
    Route("/captures/{name}/sizes.svg", sizes_svg, methods=["GET"]),
    Route("/captures/{name}/timeline.svg", timeline_svg, methods=["GET"]),
]
