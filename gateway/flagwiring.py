"""Flags at the gateway: one resolver per process over the route file's definitions, Redis and overrides.

Sources are layered, later ones winning per key: the route file, then Redis (live changes every replica
sees within a second), then `FLAGS_OVERRIDE` from the environment for local work.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from opentelemetry import trace

from asgi_gateway.config.routes import RouteFile, RouteSpec
from asgi_gateway.config.settings import FlagSettings
from asgi_gateway.flags.model import EvaluationContext, Flag
from asgi_gateway.flags.resolution import Resolution
from asgi_gateway.flags.resolver import FlagSource, Resolver
from asgi_gateway.flags.sources import InMemorySource, RedisSource, env_overrides


@dataclass(frozen=True, slots=True)
class GatewayFlags:
    """The resolver, and the sources a reload or the lifespan acts on."""

    resolver: Resolver
    from_file: InMemorySource  # replaced on reload
    live: RedisSource | None  # run in the lifespan


def build_flags(routes: RouteFile, settings: FlagSettings, redis_client: redis.asyncio.Redis | None) -> GatewayFlags:
    """Flags declared by their definitions (the gateway has no flags in code), so a reload may retype one."""
    from_file = InMemorySource(routes.flags.root)
    live = RedisSource(redis_client, prefix=settings.redis_prefix) if redis_client is not None else None
    sources: list[FlagSource] = [from_file] if live is None else [from_file, live]
    return GatewayFlags(Resolver(sources=sources, overrides=env_overrides()), from_file, live)


def route_flags(spec: RouteSpec, resolver: Resolver) -> list[Flag[Any]]:
    flags = [resolver.flag(key) for key in spec.flag_keys]
    return [flag for flag in flags if flag is not None]


def flag_span_event(key: str, context: EvaluationContext, resolution: Resolution[Any]) -> None:
    """A `feature_flag.evaluation` event on the current span (OpenTelemetry feature-flag conventions)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: Mapping[str, Any] = {
        "feature_flag.key": key,
        "feature_flag.provider.name": "gateway",
        "feature_flag.result.reason": resolution.reason.lower(),
        "feature_flag.result.variant": resolution.label,
        **({"feature_flag.context.id": context.targeting_key} if context.targeting_key else {}),
        **({"error.type": str(resolution.error_code)} if resolution.error_code else {}),
    }
    span.add_event("feature_flag.evaluation", attributes)
