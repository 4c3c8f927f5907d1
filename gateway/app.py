"""The deployable app: settings and a route file turned into one ASGI app, once.

`Gateway` holds what lives as long as the process (upstream pools, Redis, the flag resolver, the tracer
provider) and the routes compiled from the file. Requests pass through the process-wide middlewares
(tracing, then request id, metrics and access log in one) and then the router of the current routes; each
generation of routes has these around its router, so a request enters its generation in one call.
"""

import asyncio
import contextlib
import gc
import hashlib
import logging
import re
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
import redis.asyncio
from opentelemetry.sdk.trace import TracerProvider
from starlette.routing import BaseRoute, Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from asgi_gateway.config.errors import ConfigError
from asgi_gateway.config.loader import load_route_file
from asgi_gateway.config.routes import RouteFile
from asgi_gateway.config.settings import Settings, load_settings
from asgi_gateway.flags.resolver import Resolver
from asgi_gateway.gateway.admin import Admin, PurgeFailed
from asgi_gateway.gateway.caching import build_store
from asgi_gateway.gateway.chains import RouteDependencies
from asgi_gateway.gateway.dashboard import Dashboard
from asgi_gateway.gateway.edge import EdgeResources
from asgi_gateway.gateway.flagwiring import build_flags, flag_span_event
from asgi_gateway.gateway.health import Health
from asgi_gateway.gateway.logs import AccessLines
from asgi_gateway.gateway.metrics import Metrics, RequestMetrics
from asgi_gateway.gateway.pool import Pool
from asgi_gateway.gateway.recorder import RequestRecorder
from asgi_gateway.gateway.routing import GatewayRouter, compile_routes, own_app
from asgi_gateway.gateway.telemetry import build_tracer_provider, server_span_attributes
from asgi_gateway.gateway.upstreams import Transport, Upstream
from asgi_gateway.gateway.upstreamwiring import build_upstreams
from asgi_gateway.middleware.cache import CacheMiddleware, StoreUnavailable
from asgi_gateway.middleware.peers import TrustedPeerHeaders
from asgi_gateway.middleware.tracing import PROPAGATION_FIELDS, tracing_middleware
from asgi_gateway.middleware.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("gateway")

ROUTES_POLL_SECONDS = 1.0


@dataclass(eq=False)
class Generation:
    """One loaded route file: its compiled routes and upstreams, and the requests still running on it."""

    routes: RouteFile
    version: str
    upstreams: dict[str, Upstream]
    app: ASGIApp  # the router, inside the process-wide middlewares
    caches: list[CacheMiddleware]
    in_flight: int = 0
    retired: list[Transport] = field(default_factory=list)  # pools only this generation used, closed after it
    done: bool = False  # replaced: once its last request ends, its caches and retired pools close

    async def close_retired(self) -> None:
        retired, self.retired = self.retired, []
        for transport in retired:
            await transport.aclose()
        for cache in self.caches:
            await cache.aclose()


class Gateway:
    """The ASGI app `gateway run` serves; it answers the lifespan protocol itself.

    A reload compiles the new route file into a new Generation and swaps it in with one assignment:
    requests in flight finish on the old one, new requests get the new one, upstream pools whose spec did
    not change carry over, and pools no longer used close once the old generation's last request is done.
    """

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
        self._upstream_apps = upstream_apps or {}
        self._owned_provider = build_tracer_provider(settings.otel) if tracer_provider is None else None
        self.tracer_provider = tracer_provider or self._owned_provider
        self.redis = redis.asyncio.Redis.from_url(str(settings.redis_url)) if settings.redis_url else None
        self.flags = build_flags(routes, settings.flags, self.redis)
        if self.tracer_provider is not None:
            self.flags.resolver.add_hook(flag_span_event)
        self.fanout_limit = asyncio.Semaphore(settings.fanout_max_in_flight)
        self.metrics = Metrics()
        self.access_lines = AccessLines()
        self.flags.resolver.add_hook(self.metrics.flag_evaluated)
        if self.flags.live is not None:
            live = self.flags.live
            live.subscribe(lambda: self.metrics.redis_failed("flags") if live.error is not None else None)
            live.subscribe(lambda: self.metrics.invalid_flag_definitions.set(len(live.invalid)))
        self.store = build_store(settings, on_redis_error=lambda _: self.metrics.redis_failed("cache"))
        self.edge = EdgeResources.from_settings(settings, lambda _: self.metrics.redis_failed("ratelimit"))
        self.last_reload_error: str | None = None
        self._reloading = asyncio.Lock()
        self._loaded_identity = _file_identity(settings.routes_file)  # what the watcher compares against
        self.dashboard = Dashboard(
            metrics=self.metrics,
            resolver=self.resolver,
            routes=lambda: self.generation.routes,
            upstreams=self.describe_upstreams,
            status=self.config_status,
        )
        self.reload_listeners: list[Callable[[Mapping[str, Any]], None]] = [
            self.metrics.reloaded,
            self.dashboard.reloaded,
        ]
        self.generation = self._generation(routes, self._upstreams_for(routes, {}))

    @property
    def resolver(self) -> Resolver:
        return self.flags.resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        generation = self.generation
        generation.in_flight += 1
        try:
            await generation.app(scope, receive, send)
        finally:
            generation.in_flight -= 1
            if generation.done and not generation.in_flight:
                await generation.close_retired()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Opens the upstream pools and the live flag feed, watches the route file; undoes it all on exit."""
        async with AsyncExitStack() as stack:
            for upstream in self.generation.upstreams.values():
                await upstream.transport.start()
            stack.push_async_callback(self._close_upstreams)
            stack.push_async_callback(self.store.aclose)
            stack.push_async_callback(self.edge.aclose)
            if self.redis is not None:
                stack.push_async_callback(self.redis.aclose)
            if self._owned_provider is not None:
                stack.callback(self._owned_provider.shutdown)
            stack.callback(self.metrics.process_ended)
            if self.flags.live is not None:
                await self.flags.live.load()  # the first definitions are in before the first request
            # The feeds run in a task of their own: the body of this context (requests, in tests) must not
            # run inside their cancel scope. anyio's cancellation is re-delivered until they stop, which
            # matters when a client library swallows one.
            sighup = asyncio.Event()
            stack.enter_context(_signal_handler(signal.SIGHUP, sighup.set))
            stop = anyio.CancelScope()
            feeds = asyncio.create_task(self._feeds(stop, sighup))
            try:
                yield
            finally:
                stop.cancel()
                await feeds

    async def _feeds(self, scope: anyio.CancelScope, sighup: asyncio.Event) -> None:
        with scope:
            async with anyio.create_task_group() as tasks:
                if self.flags.live is not None:
                    tasks.start_soon(self.flags.live.run)
                if self.settings.watch_routes:
                    tasks.start_soon(self._watch_routes, sighup)
                if self.settings.access_log != "off":
                    tasks.start_soon(self.access_lines.flush_every_second)

    async def _close_upstreams(self) -> None:
        for cache in self.generation.caches:
            await cache.aclose()  # background refreshes may still use the pools
        for upstream in self.generation.upstreams.values():
            await upstream.transport.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            async with self.running():
                settle_garbage_collector()
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    async def reload(self) -> dict[str, Any]:
        """Validate the route file and swap it in; a bad file changes nothing and is reported."""
        result = await self._reload()
        for listener in self.reload_listeners:
            listener(result)
        return result

    async def _reload(self) -> dict[str, Any]:
        async with self._reloading:
            old = self.generation
            self._loaded_identity = _file_identity(self.settings.routes_file)  # a later change is seen again
            try:
                routes = load_route_file(self.settings.routes_file)
                upstreams = self._upstreams_for(routes, old.upstreams)
            except ConfigError as exc:
                self.last_reload_error = str(exc)
                logger.error("route file rejected, still serving version %s:\n%s", old.version, exc)
                return {"ok": False, "version": old.version, "errors": [str(issue) for issue in exc.issues]}
            for name, upstream in upstreams.items():
                if old.upstreams.get(name) is not upstream:
                    await upstream.transport.start()
            self.flags.from_file.set(routes.flags.root)
            self.generation = self._generation(routes, upstreams)
            self.last_reload_error = None
            kept = {id(upstream) for upstream in upstreams.values()}
            old.retired = [upstream.transport for upstream in old.upstreams.values() if id(upstream) not in kept]
            old.done = True
            if not old.in_flight:
                await old.close_retired()
            logger.info("route file reloaded: version %s -> %s", old.version, self.generation.version)
            return {"ok": True, "version": self.generation.version, "previous": old.version}

    async def _watch_routes(self, changed: asyncio.Event) -> None:
        """Reload on SIGHUP (`changed`), and when the route file changes: its identity is checked every
        second, which also catches editors and ConfigMaps that swap the file instead of writing it."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ROUTES_POLL_SECONDS):
                    await changed.wait()
            if changed.is_set() or _file_identity(self.settings.routes_file) != self._loaded_identity:
                changed.clear()
                await self.reload()

    def _upstreams_for(self, routes: RouteFile, current: Mapping[str, Upstream]) -> dict[str, Upstream]:
        """The pools for a route file: the current one where an upstream's spec is unchanged, else new."""
        specs = self.generation.routes.upstreams if current else {}
        fresh = {
            name: spec for name, spec in routes.upstreams.items() if specs.get(name) != spec or name not in current
        }
        built = build_upstreams(fresh, self.settings, self._upstream_apps, self.tracer_provider, self.metrics)
        for name, upstream in built.items():
            previous = current[name].transport if name in current else None
            if isinstance(upstream.transport, Pool) and isinstance(previous, Pool):
                upstream.transport.inherit(previous)  # unchanged targets keep their health
        return {name: built[name] if name in fresh else current[name] for name in routes.upstreams}

    def _generation(self, routes: RouteFile, upstreams: dict[str, Upstream]) -> Generation:
        version = hashlib.sha256(routes.model_dump_json().encode()).hexdigest()[:12]
        settings = self.settings
        deps = RouteDependencies(
            upstreams=upstreams,
            resolver=self.resolver,
            store=self.store,
            flag_settings=settings.flags,
            etag_settings=settings.etag,
            max_body_bytes=settings.max_body_bytes,
            fanout_limit=self.fanout_limit,
            fanout_forwarded=PROPAGATION_FIELDS
            | {
                settings.request_id_header.lower().encode("latin-1"),
                settings.flags.forward_header.lower().encode("latin-1"),
            },
            request_id_header=settings.request_id_header,
            edge=self.edge,
        )
        proxied, caches = compile_routes(routes, deps)
        router = GatewayRouter(proxied, own=self._own_app(routes), own_prefix=settings.admin_prefix)
        return Generation(routes, version, upstreams, self._process_middleware(router), caches)

    def _own_app(self, routes: RouteFile) -> ASGIApp:
        """Health, readiness, metrics and (with a token) the admin API, under the admin prefix."""
        settings = self.settings
        health = Health(self.redis, route_count=len(routes.routes), status=self.ready_status)
        own: list[BaseRoute] = [
            *health.routes(settings.admin_prefix),
            Route(f"{settings.admin_prefix}/metrics", self.metrics.endpoint, methods=["GET"], name="metrics"),
        ]
        if settings.admin_token is not None:
            admin = Admin(
                settings.admin_token.get_secret_value(),
                resolver=self.resolver,
                describe_routes=self.describe_routes,
                describe_upstreams=self.describe_upstreams,
                reload=self.reload,
                purge=self.purge,
                dashboard=self.dashboard.page,
            )
            own += admin.routes(settings.admin_prefix)
        return own_app(own)

    async def purge(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Purge by `url` (absolute), `prefix` (of the raw path) or `tag`; a cache that cannot be reached
        is an error, since the caller must know the purge did not happen."""
        try:
            if isinstance(request.get("tag"), str):
                return {"purged": await self.store.purge_tag(request["tag"])}
            if isinstance(request.get("prefix"), str) and request["prefix"].startswith("/"):
                return {"purged": await self.store.purge_prefix(request["prefix"])}
            if isinstance(request.get("url"), str) and urlsplit(request["url"]).scheme in ("http", "https"):
                # each route keys its URLs by its own query rules; only the route owning the path has entries
                return {"purged": sum([await cache.purge_url(request["url"]) for cache in self.generation.caches])}
        except StoreUnavailable as exc:
            raise PurgeFailed(503, f"The cache store cannot be reached: {exc}") from exc
        raise PurgeFailed(400, "Give one of: url (absolute http(s) URL), prefix (a path starting with /), tag.")

    def config_status(self) -> dict[str, Any]:
        """Also the flag definitions in Redis that were skipped: shown, but never a reason to be unready, since
        every replica reads the same Redis and one bad key would take them all out."""
        live = self.flags.live
        return {
            "config_version": self.generation.version,
            "last_reload_error": self.last_reload_error,
            "invalid_flag_definitions": dict(live.invalid) if live is not None else {},
        }

    def ready_status(self) -> dict[str, Any]:
        return self.config_status() | {"upstreams": self.describe_upstreams()}

    def describe_upstreams(self) -> dict[str, Any]:
        """Each pool's targets and their states; an upstream of one url without a pool is not checked."""
        return {
            name: upstream.transport.describe()
            if isinstance(upstream.transport, Pool)
            else {"panic": False, "targets": [{"url": upstream.base_url, "weight": 1, "state": "unchecked"}]}
            for name, upstream in self.generation.upstreams.items()
        }

    def _process_middleware(self, app: ASGIApp) -> ASGIApp:
        """Request id, metrics and the access log around the routes; tracing outside them, so even a 500
        is on the span and the access line carries the span's ids; the forwarded peers outermost."""
        return self._forwarded_peers(self._traced_and_recorded(app))

    def _forwarded_peers(self, app: ASGIApp) -> ASGIApp:
        """Identity headers from peers outside GATEWAY_FORWARDED_ALLOW_IPS are dropped while the peer is still
        known; then X-Forwarded-For/-Proto from the trusted ones set the client (here, not in the server, so
        uvicorn and granian alike do both)."""
        trusted, flags = self.settings.forwarded_allow_ips, self.settings.flags
        proxied = cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=trusted))  # uvicorn's ASGI types
        return TrustedPeerHeaders(
            app, trusted=trusted, headers=[flags.user_header, flags.org_header], forwarded=proxied
        )

    def _traced_and_recorded(self, app: ASGIApp) -> ASGIApp:
        settings = self.settings
        app = RequestRecorder(
            app,
            request_id_header=settings.request_id_header,
            metrics=RequestMetrics(self.metrics),
            write_line=None if settings.access_log == "off" else self.access_lines.write,
            log_format="text" if settings.access_log == "text" else "json",
            traced=self.tracer_provider is not None,
        )
        if self.tracer_provider is None:
            return app
        return tracing_middleware(
            app,
            tracer_provider=self.tracer_provider,
            excluded_urls=f"{re.escape(settings.admin_prefix)}/.*",  # health, readiness and admin make no spans
            scope_attributes=server_span_attributes,
            records_new_traces=self.tracer_provider is not self._owned_provider or settings.otel.sample_ratio > 0,
        )

    def describe_routes(self) -> list[dict[str, Any]]:
        return [route.model_dump(mode="json", exclude_defaults=True) for route in self.generation.routes.routes]


def settle_garbage_collector() -> None:
    """Move what start-up built (about 100,000 objects of config, libraries and compiled routes) out of the
    collector's sight and let the young generation grow: full collections otherwise scan all of it every few
    hundred requests, and a full collection stalls every request waiting on the loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


@contextlib.contextmanager
def _signal_handler(signum: int, handler: Callable[[], None]) -> Iterator[None]:
    """A loop signal handler for the context's duration; only the main thread can have one."""
    loop = asyncio.get_running_loop()
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        loop.add_signal_handler(signum, handler)
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signum)


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def create_app() -> Gateway:
    """The uvicorn/granian factory: settings from the environment, routes from GATEWAY_ROUTES_FILE."""
    settings = load_settings()
    return Gateway(settings, load_route_file(settings.routes_file))
