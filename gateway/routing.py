"""Route specs become Starlette routes once, at start-up; requests that could escape a route never match one."""

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from config.routes import PARAM, FanoutSpec, RouteFile, RouteSpec
from config.settings import FlagSettings
from flags.resolver import Resolver
from gateway.fanout import FanoutCall, FanoutHandler
from gateway.flagwiring import route_flags
from gateway.headers import HeaderRules
from gateway.proxy import PathRewrite, ProxyHandler
from gateway.upstreams import Upstream
from middleware.flags import FlagsMiddleware
from middleware.problem import problem_response

# Percent-encoded "/" or "\": after decoding they would move a path across segment boundaries.
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)


class GatewayRoute(Route):
    """A Starlette route that can also require a Host, and answers 405 with every method its path allows."""

    def __init__(self, spec: RouteSpec, app: ASGIApp, *, allow: str, middleware: Sequence[Middleware] = ()) -> None:
        super().__init__(spec.path, endpoint=app, methods=list(spec.methods), name=spec.label, middleware=middleware)
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


@dataclass(frozen=True, slots=True)
class RouteDependencies:
    """What every route may draw on, built once per app."""

    upstreams: Mapping[str, Upstream]
    resolver: Resolver
    flag_settings: FlagSettings
    max_body_bytes: int
    fanout_limit: asyncio.Semaphore


def build_routes(file: RouteFile, deps: RouteDependencies) -> list[Route]:
    """One GatewayRoute per route spec, in file order (the first match wins)."""
    allowed: dict[tuple[str | None, str], set[str]] = {}
    for spec in file.routes:
        allowed.setdefault(_shape(spec), set()).update(spec.methods)
    routes: list[Route] = []
    for spec in file.routes:
        methods = allowed[_shape(spec)]
        if "GET" in methods:
            methods.add("HEAD")
        handler = (
            fanout_handler(spec.fanout, deps.upstreams, deps.fanout_limit)
            if spec.fanout is not None
            else proxy_handler(spec, deps.upstreams, deps.max_body_bytes)
        )
        routes.append(GatewayRoute(spec, handler, allow=", ".join(sorted(methods)), middleware=route_chain(spec, deps)))
    return routes


def _shape(spec: RouteSpec) -> tuple[str | None, str]:
    return spec.host, PARAM.sub(lambda m: "{" + (m.group(2) or "str") + "}", spec.path)


def route_chain(spec: RouteSpec, deps: RouteDependencies) -> list[Middleware]:
    """Only the middlewares the route's config asks for, outermost first, in DESIGN.md's order."""
    chain: list[Middleware] = []
    if spec.flag_keys:
        chain.append(
            Middleware(
                FlagsMiddleware,
                resolver=deps.resolver,
                flags=route_flags(spec, deps.resolver),
                user_header=deps.flag_settings.user_header,
                org_header=deps.flag_settings.org_header,
                forward_header=deps.flag_settings.forward_header,
            )
        )
    return chain


def proxy_handler(spec: RouteSpec, upstreams: Mapping[str, Upstream], max_body_bytes: int) -> ProxyHandler:
    assert spec.upstream is not None  # guaranteed by config.routes.cross_reference_issues
    catch_all = frozenset(m.group(1) for m in PARAM.finditer(spec.path) if m.group(2) == "path")
    request, response = spec.headers.request, spec.headers.response
    return ProxyHandler(
        upstreams[spec.upstream],
        rewrite=PathRewrite(spec.rewrite, catch_all) if spec.rewrite is not None else None,
        request_rules=HeaderRules.build(request.remove, request.set, request.add),
        response_rules=HeaderRules.build(response.remove, response.set, response.add),
        max_body_bytes=max_body_bytes,
        steering=[(rule.flag, rule.equals, upstreams[rule.upstream]) for rule in spec.when],
    )


def fanout_handler(spec: FanoutSpec, upstreams: Mapping[str, Upstream], limit: asyncio.Semaphore) -> FanoutHandler:
    calls = [
        FanoutCall(
            name,
            ProxyHandler(upstreams[call.upstream]),
            call.path,
            method=call.method,
            required=call.required,
            timeout=call.timeout,
            forward=frozenset(name.lower().encode("latin-1") for name in call.forward_headers),
            after=tuple(sorted({ref for ref, fields in call.references() if ref in spec.calls and fields})),
        )
        for name, call in spec.calls.items()
    ]
    return FanoutHandler(
        calls, max_concurrency=spec.max_concurrency, deadline=spec.deadline, merge=spec.merge, shared_limit=limit
    )


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
