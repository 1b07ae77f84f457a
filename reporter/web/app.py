"""The Starlette application of ``reporter serve``: routes, the token guard, security headers
and errors as one line of JSON (under ``/api/`` and ``/metrics``) or a small HTML page.

Errors never show a traceback: a bad parameter is a 400, an unknown capture a 404, a capture
in a state that forbids the request a 409, Redis unreachable a 503 with the URL's password
redacted; anything unexpected is logged on the server and answered with a 500 that names only
the exception's type.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from redis.exceptions import RedisClusterException, RedisError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowherd.deploy.connect import scrub
from flowherd.models.errors import BackendError, CaptureStateError, FlowherdError
from flowherd.reporter.web import access, api, pages
from flowherd.reporter.web.docs import BadParam, NotFound
from flowherd.reporter.web.figures import MissingExtra
from flowherd.reporter.web.metrics import exposition, registry_for
from flowherd.store.backend import Store

#: paths served without the token: liveness, the sign-in form and the page's own assets
OPEN = ("/healthz", "/login")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _wants_json(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics" or "/fragments/" in path


def error_response(request: Request | Scope, status: int, message: str) -> Response:
    path = request.url.path if isinstance(request, Request) else request["path"]
    if _wants_json(path):
        body = json.dumps({"error": message, "status": status})
        return Response(body + "\n", status_code=status, media_type="application/json")
    reason = HTTPStatus(status).phrase
    return pages.render(
        request if isinstance(request, Request) else None,
        "error.html",
        status,
        status=status,
        reason=reason,
        message=message,
    )


def _status_of(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, BadParam):
        return 400, str(exc)
    if isinstance(exc, NotFound):
        return 404, str(exc)
    if isinstance(exc, MissingExtra):
        return 501, str(exc)
    if isinstance(exc, CaptureStateError):
        return 409, str(exc)
    if isinstance(exc, BackendError):
        return 503, scrub(str(exc))
    if isinstance(exc, FlowherdError):
        return 400, str(exc)
    if isinstance(exc, (RedisError, RedisClusterException)):
        return 503, f"Redis: {scrub(str(exc))}"
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    # Starlette re-raises it after this answer, so the server's log gets the traceback
    return 500, f"internal error ({type(exc).__name__}); the server's log has the details"


def handle(request: Request, exc: Exception) -> Response:
    status, message = _status_of(exc)
    return error_response(request, status, message)


class Guard:
    """ASGI middleware: the bearer token (when one is set) and the security headers."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        path: str = scope["path"]
        if self.token is not None and not (path in OPEN or path.startswith("/static/")):
            req = Request(scope)
            h = Headers(scope=scope)
            if not access.token_ok(
                self.token, h.get("authorization"), req.cookies.get(access.COOKIE)
            ):
                await self._refuse(req)(scope, receive, send_secure)
                return
        await self.app(scope, receive, send_secure)

    @staticmethod
    def _refuse(req: Request) -> Response:
        if _wants_json(req.url.path):
            resp = error_response(
                req, 401, "a bearer token is required: Authorization: Bearer TOKEN"
            )
        else:
            resp = pages.render(None, "login.html", 401, next=req.url.path, message="")
        resp.headers["www-authenticate"] = 'Bearer realm="flowherd"'
        return resp


def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


def metrics(request: Request) -> Response:
    data = exposition(request.app.state.registry)
    return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")


def _safe_next(value: str) -> str:
    return value if value.startswith("/") and not value.startswith("//") else "/"


async def login(request: Request) -> Response:
    """GET: the form; POST (``token``, ``next``; urlencoded): the cookie when the token is
    right, else the form again with a 401."""
    if request.method == "GET":
        return pages.render(
            request,
            "login.html",
            next=_safe_next(request.query_params.get("next", "/")),
            message="",
        )
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    given = (form.get("token") or [""])[0]
    target = _safe_next((form.get("next") or ["/"])[0])
    token: str | None = request.app.state.token
    if token is None or not access.token_ok(token, None, given):
        return pages.render(request, "login.html", 401, next=target, message="wrong token")
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(access.COOKIE, given, httponly=True, samesite="strict", path="/")
    return resp


def create_app(
    store: Store, token: str | None = None, refresh_s: float = 2.0, where: str = ""
) -> Starlette:
    """The web view of ``store``; ``token`` (when given) is required on every request but
    ``/healthz``, ``/login`` and ``/static/``; ``where`` (already redacted) names the store in
    the pages' footer."""
    routes: list[Any] = [
        *api.ROUTES,
        *pages.ROUTES,
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Mount(
            "/static", StaticFiles(packages=[("flowherd.reporter.web", "static")]), name="static"
        ),
    ]
    handlers: dict[Any, Any] = {Exception: handle, HTTPException: handle}
    handled = (BadParam, FlowherdError, RedisError, RedisClusterException)
    handlers |= {cls: handle for cls in handled}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.add_middleware(Guard, token=token)
    app.state.store = store
    app.state.token = token
    app.state.refresh_s = refresh_s
    app.state.where = where
    app.state.registry = registry_for(store)
    return app
