"""The deployable app: settings and a route file turned into one Starlette app, once."""

import importlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from config.errors import ConfigError, ConfigIssue
from config.loader import load_route_file
from config.routes import RouteFile, UpstreamSpec
from config.settings import Settings, load_settings
from gateway.health import Health
from gateway.routing import PathGuard, build_routes, method_not_allowed, not_found
from gateway.upstreams import AiohttpTransport, HttpxTransport, Timeouts, Transport, Upstream


def build_app(
    settings: Settings, routes: RouteFile, *, upstream_apps: Mapping[str, ASGIApp] | None = None
) -> Starlette:
    """The gateway for `routes`; `upstream_apps` serves the named upstreams in-process (tests, embedded use)."""
    upstreams = build_upstreams(routes, settings, upstream_apps or {})
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

    app = Starlette(
        routes=[
            *health.routes(settings.admin_prefix),
            *build_routes(routes, upstreams, max_body_bytes=settings.max_body_bytes),
        ],
        middleware=[Middleware(PathGuard)],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a proxy forwards /a/ and /a as asked; it does not redirect
    return app


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
