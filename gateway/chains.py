"""A route spec becomes its chain once, at start-up: only what its config asks for, in DESIGN.md's order.

    cors -> auth -> rate limit -> flags -> compress -> cache -> conditional (ETag, 304, 412) -> proxy | fan-out

The edge policies (cors, auth, rate limit) are outermost; gateway/edge.py says why in that order. Compression
sits outside the cache, which then stores the identity body once for clients of every coding, and outside the
conditional layers, so a 304 names the coded ETag the client holds.

ETags are generated inside the cache, so an entry stores its tag and is not hashed again on every hit, and a
revalidation of a generated tag comes back as a 304 that refreshes the entry. The cache answers conditional
reads itself (from the entry, or from the response it just fetched), so a fresh entry answers If-None-Match
without the upstream being asked and without a second conditional layer around the cache.
"""

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asgi_gateway.config.responses import CacheSpec, CompressSpec, EtagSpec
from asgi_gateway.config.routes import PARAM, RouteSpec
from asgi_gateway.config.settings import EtagSettings, FlagSettings
from asgi_gateway.flags.resolver import Resolver
from asgi_gateway.gateway.caching import KeyExtras, cache_options, key_extras
from asgi_gateway.gateway.edge import EdgeResources, with_edge
from asgi_gateway.gateway.fanout import FanoutCall, FanoutHandler
from asgi_gateway.gateway.flagwiring import route_flags
from asgi_gateway.gateway.headers import HeaderRules
from asgi_gateway.gateway.pool import SAFE_TO_RETRY
from asgi_gateway.gateway.proxy import PathRewrite, ProxyHandler
from asgi_gateway.gateway.templates import split_template
from asgi_gateway.gateway.upstreams import Upstream
from asgi_gateway.gateway.websocket import WebSocketProxy
from asgi_gateway.middleware.cache import CacheMiddleware, CacheStore
from asgi_gateway.middleware.compress import CodedBodies, Coding, CompressionMiddleware
from asgi_gateway.middleware.conditional import ConditionalMiddleware
from asgi_gateway.middleware.flags import FlagsMiddleware
from asgi_gateway.middleware.types import ASGIApp


@dataclass(frozen=True, slots=True)
class RouteDependencies:
    """What every route may draw on, built once per app (and again on reload)."""

    upstreams: Mapping[str, Upstream]
    resolver: Resolver
    store: CacheStore
    flag_settings: FlagSettings
    etag_settings: EtagSettings
    max_body_bytes: int
    fanout_limit: asyncio.Semaphore
    fanout_forwarded: frozenset[bytes]  # client headers every fan-out call carries: trace context, request id, flags
    request_id_header: str  # set on every answer by the gateway itself, so dropped from upstream answers
    edge: EdgeResources = field(default_factory=EdgeResources)  # for auth, rate limits and CORS
    coded_bodies: CodedBodies = field(default_factory=CodedBodies)  # one budget for every compressing route


@dataclass(frozen=True, slots=True)
class Chain:
    app: ASGIApp
    caches: list[CacheMiddleware]  # closed with the routes that hold them
    websocket: ASGIApp | None = None  # the route's WebSocket sessions: flags, then the proxy


def build_chain(spec: RouteSpec, deps: RouteDependencies) -> Chain:
    caches: list[CacheMiddleware] = []
    app: ASGIApp
    websocket: ASGIApp | None = None
    if spec.fanout is not None:
        app = fanout_handler(spec, deps, caches)
    else:
        app = proxy = proxy_handler(spec, deps)
        options = spec.websocket_options
        if options is not None:
            sessions = WebSocketProxy(
                proxy, idle_timeout=options.idle_timeout, max_message_bytes=options.max_message_bytes
            )
            websocket = with_edge(with_flags(sessions, spec, deps), spec, deps.edge)
    etag = etag_options(spec, deps.etag_settings)
    if etag is not None:
        app = ConditionalMiddleware(app, **etag)
    if spec.cache is not None:
        app = cached(app, spec.cache, deps.store, caches, key_extras(spec.cache, spec.flag_keys))
    if spec.compress is not None:
        app = compressed(app, spec.compress, deps.coded_bodies)
    return Chain(with_edge(with_flags(app, spec, deps), spec, deps.edge), caches, websocket)


def with_flags(app: ASGIApp, spec: RouteSpec, deps: RouteDependencies) -> ASGIApp:
    """The route's flags resolved around `app`, when it has any."""
    if not spec.flag_keys:
        return app
    flags = deps.flag_settings
    return FlagsMiddleware(
        app,
        resolver=deps.resolver,
        flags=route_flags(spec, deps.resolver),
        user_header=flags.user_header,
        org_header=flags.org_header,
        forward_header=flags.forward_header,
    )


def cached(
    app: ASGIApp, spec: CacheSpec, store: CacheStore, caches: list[CacheMiddleware], extras: KeyExtras | None = None
) -> CacheMiddleware:
    cache = CacheMiddleware(app, store=store, options=cache_options(spec), key_extras=extras)
    caches.append(cache)
    return cache


def compressed(app: ASGIApp, spec: CompressSpec, memo: CodedBodies) -> CompressionMiddleware:
    given: tuple[tuple[Coding, int | None], ...] = (
        ("br", spec.levels.br),
        ("zstd", spec.levels.zstd),
        ("gzip", spec.levels.gzip),
    )
    levels = {coding: level for coding, level in given if level is not None}
    return CompressionMiddleware(
        app, codings=spec.codings, levels=levels, min_size=spec.min_size, skip_types=spec.skip_types, memo=memo
    )


def etag_options(spec: RouteSpec, defaults: EtagSettings) -> dict[str, Any] | None:
    """The route's `etag:` over the settings' defaults; None when the route has no conditional layer.

    Fan-out answers are the gateway's own, so they get ETags unless the route says `etag: false`.
    """
    if spec.etag is False or (spec.etag is None and not defaults.enabled and spec.fanout is None):
        return None
    options: dict[str, Any] = {
        "generate_etag": defaults.generate,
        "weak": defaults.weak,
        "max_body_bytes": defaults.max_body_bytes,
        "preconditions": defaults.preconditions,
    }
    if isinstance(spec.etag, EtagSpec):
        given: dict[str, Any] = {"generate_etag": spec.etag.generate, "weak": spec.etag.weak}
        given |= {"max_body_bytes": spec.etag.max_body_bytes, "preconditions": spec.etag.preconditions}
        options |= {key: value for key, value in given.items() if value is not None}
    return options


def unwritten_flags_header(spec: RouteSpec, deps: RouteDependencies) -> frozenset[str]:
    """The flags header when this route does not write it. Only the gateway writes it: on a route with flags
    FlagsMiddleware replaces the client's; on any other the client's is dropped with the fields the route drops
    anyway, so no request pays for a pass of its own."""
    return frozenset() if spec.flag_keys else frozenset({deps.flag_settings.forward_header.lower()})


def field_names(names: Iterable[str]) -> frozenset[bytes]:
    return frozenset(name.lower().encode("latin-1") for name in names)


def proxy_handler(spec: RouteSpec, deps: RouteDependencies) -> ProxyHandler:
    assert spec.upstream is not None  # guaranteed by asgi_gateway.config.routes.cross_reference_issues
    catch_all = frozenset(m.group(1) for m in PARAM.finditer(spec.path) if m.group(2) == "path")
    request, response = spec.headers.request, spec.headers.response
    # The gateway's own request id replaces an upstream's, and a route's (as it always did): dropped here, once
    # per route, the recorder appends its id without searching every answer for another.
    own_id = deps.request_id_header.lower()
    set_, add = (
        {name: value for name, value in fields.items() if name.lower() != own_id}
        for fields in (response.set, response.add)
    )
    return ProxyHandler(
        deps.upstreams[spec.upstream],
        rewrite=PathRewrite(spec.rewrite, catch_all) if spec.rewrite is not None else None,
        request_rules=HeaderRules.build(
            [*request.remove, *unwritten_flags_header(spec, deps)], request.set, request.add
        ),
        response_rules=HeaderRules.build([*response.remove, own_id], set_, add),
        max_body_bytes=deps.max_body_bytes,
        steering=[(rule.flag, rule.equals, deps.upstreams[rule.upstream]) for rule in spec.when],
        retry_methods=SAFE_TO_RETRY | frozenset(spec.idempotent),
    )


def fanout_handler(route: RouteSpec, deps: RouteDependencies, caches: list[CacheMiddleware]) -> FanoutHandler:
    spec = route.fanout
    assert spec is not None  # build_chain's choice
    unwritten = field_names(unwritten_flags_header(route, deps))  # not forwarded, whatever forward_headers say
    calls: list[FanoutCall] = []
    for name, call in spec.calls.items():
        upstream = deps.upstreams[call.upstream]
        cache = cached(ProxyHandler(upstream), call.cache, deps.store, caches) if call.cache is not None else None
        calls.append(
            FanoutCall(
                name,
                upstream,
                split_template(call.path),
                method=call.method,
                required=call.required,
                timeout=call.timeout,
                forward=field_names(call.forward_headers) - unwritten,
                after=tuple(sorted({ref for ref, fields in call.references() if ref in spec.calls and fields})),
                cache=cache,
            )
        )
    return FanoutHandler(
        calls,
        max_concurrency=spec.max_concurrency,
        deadline=spec.deadline,
        merge=spec.merge,
        forward=deps.fanout_forwarded - unwritten,
        shared_limit=deps.fanout_limit,
    )
