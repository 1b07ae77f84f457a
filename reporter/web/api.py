"""``/api/...``: the JSON documents of the CLIs' ``--json`` / ``--format json``, read-only.

    GET /api/captures                        reporter captures --json
    GET /api/captures/NAME                   producer status NAME --json (also .../status)
    GET /api/captures/NAME/top?n=&by=&direction=&proto=&window=
                                             reporter top NAME ... --format json
    GET /api/captures/NAME/summary[?rule=R&rule=R2]
                                             reporter summary NAME --json [--rule R ...]
    GET /api/captures/NAME/windows           reporter windows NAME --json
    GET /api/captures/NAME/persist?n=10      reporter persist NAME -n 10 --json
    GET /api/captures/NAME/stats?key=&by=&n=&direction=&window=
                                             reporter stats NAME --key ... --format json

Endpoints are plain functions: Starlette runs them in its thread pool, so the blocking Redis
calls never hold up the event loop.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flowherd.reporter.web import docs
from flowherd.store.backend import Store


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _name(request: Request) -> str:
    return str(request.path_params["name"])


def json_text(text: str, status: int = 200) -> Response:
    return Response(text + "\n", status_code=status, media_type="application/json")


def captures(request: Request) -> Response:
    return json_text(docs.captures_json(_store(request)))


def status(request: Request) -> Response:
    return json_text(docs.status_json(_store(request), _name(request)))


def top(request: Request) -> Response:
    q = docs.parse_top(request.query_params)
    return json_text(docs.top_json(_store(request), _name(request), q))


def summary(request: Request) -> Response:
    rules = request.query_params.getlist("rule")
    report = docs.summary_of(
        _store(request), _name(request), docs.parse_rules(rules) if rules else None
    )
    return json_text(report.model_dump_json(indent=1))


def windows(request: Request) -> Response:
    return json_text(docs.windows_json(_store(request), _name(request)))


def persist(request: Request) -> Response:
    n = docs.int_param(request.query_params, "n", 10, 1, docs.MAX_N)
    return json_text(docs.persist_json(_store(request), _name(request), n))


def stats(request: Request) -> Response:
    q = docs.parse_stats(request.query_params)
    return json_text(docs.stats_json(_store(request), _name(request), q))


ROUTES = [
    Route("/api/captures", captures, methods=["GET"]),
    Route("/api/captures/{name}", status, methods=["GET"]),
    Route("/api/captures/{name}/status", status, methods=["GET"]),
    Route("/api/captures/{name}/top", top, methods=["GET"]),
    Route("/api/captures/{name}/summary", summary, methods=["GET"]),
    Route("/api/captures/{name}/windows", windows, methods=["GET"]),
    Route("/api/captures/{name}/persist", persist, methods=["GET"]),
    Route("/api/captures/{name}/stats", stats, methods=["GET"]),
]
