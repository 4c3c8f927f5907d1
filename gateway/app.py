"""The deployable app: settings and a route file turned into one Starlette app, once."""

import asyncio
import importlib
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from config.errors import ConfigError, ConfigIssue
from config.loader import load_route_file
from config.routes import RouteFile, UpstreamSpec
from config.settings import Settings, load_settings
from gateway.health import Health
from gateway.logs import ACCESS_LOGGER
from gateway.routing import PathGuard, build_routes, method_not_allowed, not_found
from gateway.telemetry import TracedTransport, build_tracer_provider, server_span_attributes
from gateway.upstreams import AiohttpTransport, HttpxTransport, Timeouts, Transport, Upstream
from middleware.access_log import AccessLogMiddleware
from middleware.request_id import RequestIdMiddleware
from middleware.tracing import tracing_middleware


def build_app(
    settings: Settings,
    routes: RouteFile,
    *,
    upstream_apps: Mapping[str, ASGIApp] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Starlette:
    """The gateway for `routes`.

    `upstream_apps` serves the named upstreams in-process (tests, embedded use); `tracer_provider` replaces
    the one the settings describe (tests pass one with an in-memory exporter).
    """
    owned_provider = build_tracer_provider(settings.otel) if tracer_provider is None else None
    tracer_provider = tracer_provider or owned_provider
    upstreams = build_upstreams(routes, settings, upstream_apps or {})
    if tracer_provider is not None:
        upstreams = {name: traced(upstream, tracer_provider) for name, upstream in upstreams.items()}
    redis_client = redis.asyncio.Redis.from_url(str(settings.redis_url)) if settings.redis_url else None
    health = Health(redis_client, route_count=len(routes.routes))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for upstream in upstreams.values():
            await upstream.transport.start()
        try:
            yield
        finally:
            for upstream in upstreams.values():
                await upstream.transport.aclose()
            if redis_client is not None:
                await redis_client.aclose()
            if owned_provider is not None:
                owned_provider.shutdown()  # flushes the spans still batched

    app = Starlette(
        routes=[
            *health.routes(settings.admin_prefix),
            *build_routes(
                routes,
                upstreams,
                max_body_bytes=settings.max_body_bytes,
                fanout_limit=asyncio.Semaphore(settings.fanout_max_in_flight),
            ),
        ],
        middleware=[
            *tracing(settings, tracer_provider),
            Middleware(RequestIdMiddleware, header=settings.request_id_header),
            *access_log(settings),
            Middleware(PathGuard),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a proxy forwards /a/ and /a as asked; it does not redirect
    return app


def traced(upstream: Upstream, tracer_provider: TracerProvider) -> Upstream:
    transport = TracedTransport(upstream.transport, upstream=upstream.name, tracer_provider=tracer_provider)
    return replace(upstream, transport=transport)


def tracing(settings: Settings, tracer_provider: TracerProvider | None) -> list[Middleware]:
    if tracer_provider is None:
        return []
    excluded = f"{re.escape(settings.admin_prefix)}/.*"  # health, readiness and admin calls make no spans
    return [
        Middleware(
            tracing_middleware,
            tracer_provider=tracer_provider,
            excluded_urls=excluded,
            scope_attributes=server_span_attributes,
        )
    ]


def access_log(settings: Settings) -> list[Middleware]:
    if settings.access_log == "off":
        return []
    return [Middleware(AccessLogMiddleware, logger=ACCESS_LOGGER, log_format=settings.access_log)]


def build_upstreams(routes: RouteFile, settings: Settings, apps: Mapping[str, ASGIApp]) -> dict[str, Upstream]:
    issues: list[ConfigIssue] = []
    upstreams: dict[str, Upstream] = {}
    for name, spec in routes.upstreams.items():
        try:
            app = apps.get(name) or (import_app(spec.app) if spec.app else None)
        except (ImportError, AttributeError) as exc:
            issues.append(
                ConfigIssue(str(settings.routes_file), None, f"upstreams.{name}.app", f"cannot import: {exc}")
            )
            continue
        upstreams[name] = Upstream(
            name, spec.url, urlsplit(spec.url).netloc.encode("latin-1"), _transport(spec, settings, app)
        )
    if issues:
        raise ConfigError(issues)
    return upstreams


def _transport(spec: UpstreamSpec, settings: Settings, app: ASGIApp | None) -> Transport:
    defaults = settings.timeout
    timeouts = Timeouts(
        connect=spec.timeout.connect or defaults.connect,
        read=spec.timeout.read or defaults.read,
        pool=spec.timeout.pool or defaults.pool,
    )
    pool_size = spec.pool_size or settings.pool_size
    if app is not None or spec.http2:
        return HttpxTransport(pool_size=pool_size, timeouts=timeouts, http2=spec.http2, app=app)
    return AiohttpTransport(pool_size=pool_size, timeouts=timeouts)


def import_app(target: str) -> ASGIApp:
    module_name, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise ImportError(f"{target} is not an ASGI app")
    return cast(ASGIApp, value)


def create_app() -> Starlette:
    """The uvicorn/granian factory: settings from the environment, routes from GATEWAY_ROUTES_FILE."""
    settings = load_settings()
    return build_app(settings, load_route_file(settings.routes_file))
