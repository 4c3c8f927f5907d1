"""Matching a request to its route: compiled once at start-up, plain ASGI on the hot path.

Route templates use Starlette's syntax and compiler (`compile_path`); the match loop itself is ours, so a
proxied request pays for one regex per route tried and nothing else: no exception-handler layers, no
Request objects; a path without parameters that no earlier route could match is found by one dict lookup.
The gateway's own endpoints (health, metrics, admin) live in a Starlette app under the admin prefix. Paths
that could escape the route they match are refused before matching.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.convertors import Convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, compile_path

from asgi_gateway.config.routes import RouteFile, RouteSpec, route_shape
from asgi_gateway.gateway.chains import RouteDependencies, build_chain
from asgi_gateway.gateway.websocket import refuse
from asgi_gateway.middleware.cache import CacheMiddleware
from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.types import ASGIApp, Receive, Scope, Send

# Percent-encoded "/" or "\": after decoding they would move a path across segment boundaries.
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRoute:
    """A route ready to match; `scope["route"]` holds it, so logs, metrics and spans read `name` and
    `path_format` (the attribute OpenTelemetry and FastAPI use for the template)."""

    name: str
    path_format: str
    host: bytes | None
    methods: frozenset[str]
    allow: str  # every method any route of the same host and path shape takes, for 405 answers
    regex: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]
    app: ASGIApp
    websocket: ASGIApp | None = None  # None: the route takes no WebSocket sessions


def compile_routes(file: RouteFile, deps: RouteDependencies) -> tuple[list[CompiledRoute], list[CacheMiddleware]]:
    """One CompiledRoute per route spec, in file order (the first match wins), and the caches they hold."""
    allowed: dict[tuple[str | None, str], set[str]] = {}
    for spec in file.routes:
        allowed.setdefault(route_shape(spec), set()).update(_methods(spec))
    routes: list[CompiledRoute] = []
    caches: list[CacheMiddleware] = []
    for spec in file.routes:
        chain = build_chain(spec, deps)
        regex, path_format, convertors = compile_path(spec.path)
        routes.append(
            CompiledRoute(
                name=spec.label,
                path_format=path_format,
                host=spec.host.encode("latin-1") if spec.host else None,
                methods=frozenset(_methods(spec)),
                allow=", ".join(sorted(allowed[route_shape(spec)])),
                regex=regex,
                convertors=convertors,
                app=chain.app,
                websocket=chain.websocket,
            )
        )
        caches += chain.caches
    return routes, caches


def _methods(spec: RouteSpec) -> set[str]:
    """GET implies HEAD; `cors:` lets preflights (OPTIONS) in, answered by the route's CORS layer."""
    methods: set[str] = {*spec.methods, "HEAD"} if "GET" in spec.methods else set(spec.methods)
    return methods | {"OPTIONS"} if spec.cors is not None else methods


class GatewayRouter:
    """Dispatches to the gateway's own endpoints under `own_prefix`, or to the first route that matches."""

    def __init__(self, routes: Sequence[CompiledRoute], *, own: ASGIApp, own_prefix: str) -> None:
        self.routes = tuple(routes)
        self.own = own
        self.own_prefix = own_prefix
        self._own_paths = (own_prefix + "/", own_prefix)
        self._by_host = any(route.host is not None for route in routes)
        self._exact = _exact_paths(self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] != "http" or path.startswith(self._own_paths):
            if scope["type"] == "websocket" and not path.startswith(self._own_paths):
                await self._websocket(scope, receive, send)
                return
            await self.own(scope, receive, send)
            return
        if escapes_its_route(scope):
            await problem_response(400, "The path holds dot-segments or encoded slashes.")(scope, receive, send)
            return
        method = scope["method"]
        exact = self._exact.get(path)
        if exact is not None and method in exact.methods:
            scope["route"] = exact
            scope["path_params"] = {}
            await exact.app(scope, receive, send)
            return
        host = _request_host(scope) if self._by_host else b""
        allow = None
        for route in self.routes:
            if route.host is not None and route.host != host:
                continue
            match = route.regex.match(path)
            if match is None:
                continue
            if method not in route.methods:
                allow = allow or route.allow
                continue
            params = match.groupdict()
            if params:
                params = {name: route.convertors[name].convert(value) for name, value in params.items()}
            scope["route"] = route
            scope["path_params"] = params
            await route.app(scope, receive, send)
            return
        if allow is not None:
            response = problem_response(405, f"{method} is not allowed here.", headers={"Allow": allow})
        else:
            response = problem_response(404, f"No route for {method} {path}.")
        await response(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket handshake goes to the first route whose host and path match and that takes sessions."""
        if escapes_its_route(scope):
            await refuse(scope, receive, send, 400, "The path holds dot-segments or encoded slashes.")
            return
        path: str = scope["path"]
        host = _request_host(scope) if self._by_host else b""
        for route in self.routes:
            if route.websocket is None or (route.host is not None and route.host != host):
                continue
            match = route.regex.match(path)
            if match is None:
                continue
            scope["route"] = route
            scope["path_params"] = {
                name: route.convertors[name].convert(value) for name, value in match.groupdict().items()
            }
            await route.websocket(scope, receive, send)
            return
        await refuse(scope, receive, send, 404, f"No WebSocket route for {path}.")


def _exact_paths(routes: Sequence[CompiledRoute]) -> dict[str, CompiledRoute]:
    """Host-less routes without parameters, by path, where no earlier route (of any host) matches that path:
    for those the loop's first match is known before a request comes."""
    return {
        route.path_format: route
        for index, route in enumerate(routes)
        if route.host is None
        and not route.convertors
        and not any(earlier.regex.match(route.path_format) for earlier in routes[:index])
    }


def _request_host(scope: Scope) -> bytes:
    host: bytes = next((value for name, value in scope["headers"] if name == b"host"), b"")
    return host.lower()


def escapes_its_route(scope: Scope) -> bool:
    """Dot-segments or encoded separators would let a client reach a path its route does not cover."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    if b"%" in raw and _ENCODED_SEPARATOR.search(raw):
        return True
    path: str = scope["path"]
    if "\\" in path:
        return True
    return "." in path and any(segment in (".", "..") for segment in path.split("/"))


def own_app(routes: Sequence[BaseRoute]) -> Starlette:
    """The gateway's own endpoints (health, metrics, admin), with problem+json for what they do not know."""
    app = Starlette(routes=list(routes), exception_handlers={404: _not_found, 405: _method_not_allowed})
    app.router.redirect_slashes = False
    return app


async def _not_found(request: Request, exc: Any) -> Response:
    return problem_response(404, f"No route for {request.method} {request.url.path}.")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return problem_response(405, f"{request.method} is not allowed here.", headers=headers)
