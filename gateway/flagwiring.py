"""Flags at the gateway: one resolver per process over the route file's definitions, Redis and overrides.

Sources are layered, later ones winning per key: the route file, then Redis (live changes every replica
sees within a second), then `FLAGS_OVERRIDE` from the environment for local work.
"""

from collections.abc import Mapping
from typing import Any

import redis.asyncio
from opentelemetry import trace

from config.routes import RouteFile, RouteSpec
from config.settings import FlagSettings
from flags.model import EvaluationContext, Flag
from flags.registry import Registry
from flags.resolution import Resolution
from flags.resolver import FlagSource, Resolver
from flags.sources import InMemorySource, RedisSource, env_overrides


def build_resolver(
    routes: RouteFile, settings: FlagSettings, redis_client: redis.asyncio.Redis | None
) -> tuple[Resolver, RedisSource | None]:
    registry = Registry()
    registry.declare(routes.flags.root.values())
    sources: list[FlagSource] = [InMemorySource(routes.flags.root)]
    live = RedisSource(redis_client, prefix=settings.redis_prefix, registry=registry) if redis_client else None
    if live is not None:
        sources.append(live)
    return Resolver(registry, sources=sources, overrides=env_overrides()), live


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
