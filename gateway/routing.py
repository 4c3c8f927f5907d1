"""Route specs become Starlette routes once, at start-up; requests that could escape a route never match one."""

import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from config.routes import PARAM, RouteFile, RouteSpec
from gateway.chains import RouteDependencies, build_chain
from middleware.cache import CacheMiddleware
from middleware.problem import problem_response

# Percent-encoded "/" or "\": after decoding they would move a path across segment boundaries.
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)


class GatewayRoute(Route):
    """A Starlette route that can also require a Host, and answers 405 with every method its path allows."""

    def __init__(self, spec: RouteSpec, app: ASGIApp, *, allow: str) -> None:
        super().__init__(spec.path, endpoint=app, methods=list(spec.methods), name=spec.label)
        self.spec = spec
        self.host = spec.host.encode("latin-1") if spec.host else None
        self.allow = allow

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self.host is not None and scope["type"] == "http" and _request_host(scope) != self.host:
            return Match.NONE, {}
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            raise HTTPException(status_code=405, headers={"Allow": self.allow})
        await self.app(scope, receive, send)


def _request_host(scope: Scope) -> bytes:
    host: bytes = next((value for name, value in scope["headers"] if name == b"host"), b"")
    return host.lower()


def build_routes(file: RouteFile, deps: RouteDependencies) -> tuple[list[Route], list[CacheMiddleware]]:
    """One GatewayRoute per route spec, in file order (the first match wins), and the caches they hold."""
    allowed: dict[tuple[str | None, str], set[str]] = {}
    for spec in file.routes:
        allowed.setdefault(_shape(spec), set()).update(spec.methods)
    routes: list[Route] = []
    caches: list[CacheMiddleware] = []
    for spec in file.routes:
        methods = allowed[_shape(spec)]
        if "GET" in methods:
            methods.add("HEAD")
        chain = build_chain(spec, deps)
        routes.append(GatewayRoute(spec, chain.app, allow=", ".join(sorted(methods))))
        caches += chain.caches
    return routes, caches


def _shape(spec: RouteSpec) -> tuple[str | None, str]:
    return spec.host, PARAM.sub(lambda m: "{" + (m.group(2) or "str") + "}", spec.path)


def escapes_its_route(scope: Scope) -> bool:
    """Dot-segments or encoded separators would let a client reach a path its route does not cover."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    if b"%" in raw and _ENCODED_SEPARATOR.search(raw):
        return True
    path: str = scope["path"]
    if "\\" in path:
        return True
    return "." in path and any(segment in (".", "..") for segment in path.split("/"))


class PathGuard:
    """Refuses (400) request targets whose path could escape the route that matches them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and escapes_its_route(scope):
            response = problem_response(400, "The path holds dot-segments or encoded slashes.")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def not_found(request: Request, exc: Any) -> Response:
    return problem_response(404, f"No route for {request.method} {request.url.path}.")


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return problem_response(405, f"{request.method} is not allowed here.", headers=headers)
