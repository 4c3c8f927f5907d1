"""The deployable app: settings and a route file turned into one ASGI app, once.

`Gateway` holds what lives as long as the process (upstream pools, Redis, the flag resolver, the tracer
provider) and the routes compiled from the file into a Starlette app. Requests pass through the
process-wide middlewares (tracing, request id, access log, path guard) and then the compiled routes.
"""

import asyncio
import importlib
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
import redis.asyncio
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from config.errors import ConfigError, ConfigIssue
from config.loader import load_route_file
from config.routes import RouteFile, UpstreamSpec
from config.settings import Settings, load_settings
from gateway.admin import Admin
from gateway.flagwiring import build_resolver, flag_span_event
from gateway.health import Health
from gateway.logs import ACCESS_LOGGER
from gateway.routing import PathGuard, RouteDependencies, build_routes, method_not_allowed, not_found
from gateway.telemetry import TracedTransport, build_tracer_provider, server_span_attributes
from gateway.upstreams import AiohttpTransport, HttpxTransport, Timeouts, Transport, Upstream
from middleware.access_log import AccessLogMiddleware
from middleware.request_id import RequestIdMiddleware
from middleware.tracing import tracing_middleware
from middleware.types import ASGIApp, Receive, Scope, Send


class Gateway:
    """The ASGI app `gateway run` serves; it answers the lifespan protocol itself."""

    def __init__(
        self,
        settings: Settings,
        routes: RouteFile,
        *,
        upstream_apps: Mapping[str, ASGIApp] | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """`upstream_apps` serves named upstreams in-process (tests, embedded use); `tracer_provider` replaces
        the one the settings describe (tests pass one with an in-memory exporter)."""
        self.settings = settings
        self._owned_provider = build_tracer_provider(settings.otel) if tracer_provider is None else None
        self.tracer_provider = tracer_provider or self._owned_provider
        self.redis = redis.asyncio.Redis.from_url(str(settings.redis_url)) if settings.redis_url else None
        self.resolver, self._live_flags = build_resolver(routes, settings.flags, self.redis)
        if self.tracer_provider is not None:
            self.resolver.add_hook(flag_span_event)
        self.upstreams = build_upstreams(routes, settings, upstream_apps or {}, self.tracer_provider)
        self.fanout_limit = asyncio.Semaphore(settings.fanout_max_in_flight)
        self.routes = routes
        self.compiled = self._compile(routes)
        self.app = self._process_middleware(self._dispatch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.app(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.compiled(scope, receive, send)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Opens the upstream pools and the live flag feed; closes them, then flushes spans, on exit."""
        async with AsyncExitStack() as stack:
            for upstream in self.upstreams.values():
                await upstream.transport.start()
                stack.push_async_callback(upstream.transport.aclose)
            if self.redis is not None:
                stack.push_async_callback(self.redis.aclose)
            if self._owned_provider is not None:
                stack.callback(self._owned_provider.shutdown)
            tasks = await stack.enter_async_context(anyio.create_task_group())
            if self._live_flags is not None:
                await tasks.start(self._live_flags.run)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            async with self.running():
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    def _compile(self, routes: RouteFile) -> Starlette:
        settings = self.settings
        deps = RouteDependencies(
            upstreams=self.upstreams,
            resolver=self.resolver,
            flag_settings=settings.flags,
            max_body_bytes=settings.max_body_bytes,
            fanout_limit=self.fanout_limit,
        )
        health = Health(self.redis, route_count=len(routes.routes))
        own: list[BaseRoute] = [*health.routes(settings.admin_prefix)]
        if settings.admin_token is not None:
            admin = Admin(
                settings.admin_token.get_secret_value(), resolver=self.resolver, describe_routes=self.describe_routes
            )
            own += admin.routes(settings.admin_prefix)
        app = Starlette(
            routes=[*own, *build_routes(routes, deps)],
            exception_handlers={404: not_found, 405: method_not_allowed},
        )
        app.router.redirect_slashes = False  # a proxy forwards /a/ and /a as asked; it does not redirect
        return app

    def _process_middleware(self, app: ASGIApp) -> ASGIApp:
        """Tracing outermost (so even a 500 is on the span), then request id, access log, path guard."""
        settings = self.settings
        layers: list[Middleware] = []
        if self.tracer_provider is not None:
            excluded = f"{re.escape(settings.admin_prefix)}/.*"  # health, readiness and admin make no spans
            layers.append(
                Middleware(
                    tracing_middleware,
                    tracer_provider=self.tracer_provider,
                    excluded_urls=excluded,
                    scope_attributes=server_span_attributes,
                )
            )
        layers.append(Middleware(RequestIdMiddleware, header=settings.request_id_header))
        if settings.access_log != "off":
            layers.append(Middleware(AccessLogMiddleware, logger=ACCESS_LOGGER, log_format=settings.access_log))
        layers.append(Middleware(PathGuard))
        for cls, args, kwargs in reversed(layers):
            app = cls(app, *args, **kwargs)
        return app

    def describe_routes(self) -> list[dict[str, Any]]:
        return [route.model_dump(mode="json", exclude_defaults=True) for route in self.routes.routes]


def build_app(
    settings: Settings,
    routes: RouteFile,
    *,
    upstream_apps: Mapping[str, ASGIApp] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Gateway:
    return Gateway(settings, routes, upstream_apps=upstream_apps, tracer_provider=tracer_provider)


def build_upstreams(
    routes: RouteFile, settings: Settings, apps: Mapping[str, ASGIApp], tracer_provider: TracerProvider | None
) -> dict[str, Upstream]:
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
        transport = _transport(spec, settings, app)
        if tracer_provider is not None:
            transport = TracedTransport(transport, upstream=name, tracer_provider=tracer_provider)
        upstreams[name] = Upstream(name, spec.url, urlsplit(spec.url).netloc.encode("latin-1"), transport)
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


def create_app() -> Gateway:
    """The uvicorn/granian factory: settings from the environment, routes from GATEWAY_ROUTES_FILE."""
    settings = load_settings()
    return Gateway(settings, load_route_file(settings.routes_file))
