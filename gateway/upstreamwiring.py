"""Upstreams from the route file's specs, once per generation: each a plain transport (aiohttp, or httpx for
HTTP/2 and in-process apps) or a pool of them, inside the metrics and tracing wrappers."""

import importlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import TracerProvider

from asgi_gateway.config.errors import ConfigError, ConfigIssue
from asgi_gateway.config.routes import UpstreamSpec
from asgi_gateway.config.settings import Settings
from asgi_gateway.gateway.metrics import MeteredTransport, Metrics
from asgi_gateway.gateway.pool import Pool, TargetTransports
from asgi_gateway.gateway.telemetry import TracedTransport
from asgi_gateway.gateway.upstreams import AiohttpTransport, HttpxTransport, Timeouts, Transport, Upstream
from asgi_gateway.middleware.types import ASGIApp


def build_upstreams(
    specs: Mapping[str, UpstreamSpec],
    settings: Settings,
    apps: Mapping[str, ASGIApp],
    tracer_provider: TracerProvider | None,
    metrics: Metrics,
) -> dict[str, Upstream]:
    issues: list[ConfigIssue] = []
    upstreams: dict[str, Upstream] = {}
    for name, spec in specs.items():
        try:
            app = apps.get(name) or (import_app(spec.app) if spec.app else None)
        except (ImportError, AttributeError) as exc:
            issues.append(
                ConfigIssue(str(settings.routes_file), None, f"upstreams.{name}.app", f"cannot import: {exc}")
            )
            continue

        def observed(plain: Transport, name: str = name) -> Transport:
            transport: Transport = MeteredTransport(plain, upstream=name, metrics=metrics)
            if tracer_provider is not None:
                transport = TracedTransport(transport, upstream=name, tracer_provider=tracer_provider)
            return transport

        if spec.pooled:
            connect = partial(_target_transports, spec, settings, app, observed)
            pool = Pool(name, spec, connect, metrics.targets)
            upstreams[name] = Upstream(name, "", pool.host, pool)  # the pool prefixes each target's URL
            continue
        assert spec.url is not None  # an upstream without a pool has one url (config/routes.py UpstreamSpec)
        upstreams[name] = Upstream(name, spec.url, urlsplit(spec.url).netloc, observed(_transport(spec, settings, app)))
    if issues:
        raise ConfigError(issues)
    return upstreams


def _target_transports(
    spec: UpstreamSpec, settings: Settings, app: ASGIApp | None, observed: Callable[[Transport], Transport]
) -> TargetTransports:
    bare = _transport(spec, settings, app)
    return TargetTransports(observed(bare), bare)


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
