"""Caching at the gateway: one store per process, and each route's `cache:` turned into CacheOptions."""

import json
from collections.abc import Callable, Sequence

from asgi_gateway.config.responses import CacheSpec
from asgi_gateway.config.settings import Settings
from asgi_gateway.middleware.cache import CacheOptions, CacheStore, KeyRules, MemoryStore, RedisStore, TieredStore
from asgi_gateway.middleware.flags import flag_resolutions
from asgi_gateway.middleware.types import Scope

KeyExtras = Callable[[Scope], str | None]


def build_store(settings: Settings, on_redis_error: Callable[[BaseException], None] | None = None) -> CacheStore:
    """Memory only without Redis; with it, Redis shared by the replicas behind a small memory tier."""
    cache = settings.cache
    if settings.redis_url is None:
        return MemoryStore(max_bytes=cache.memory_bytes)
    redis = RedisStore.from_url(
        str(settings.redis_url),
        prefix=cache.redis_prefix,
        timeout=cache.redis_timeout,
        max_connections=cache.redis_max_connections,
        on_error=on_redis_error,
    )
    if not cache.l1_bytes:
        return redis
    return TieredStore(l1=MemoryStore(max_bytes=cache.l1_bytes), l2=redis, l1_ttl=cache.l1_ttl)


def cache_options(spec: CacheSpec) -> CacheOptions:
    return CacheOptions(
        default_lifetime=spec.ttl,
        forced_lifetime=spec.ttl if spec.force else None,
        stale_while_revalidate=spec.stale_while_revalidate,
        stale_if_error=spec.stale_if_error,
        keep=spec.keep,
        max_object_bytes=spec.max_object_bytes,
        keys=KeyRules(query=spec.query, ignore=frozenset(spec.ignore_params)),
        honour_client_no_cache=spec.honour_client_no_cache,
        cache_set_cookie=spec.cache_set_cookie,
        tags_header=spec.tags_header,
    )


def key_extras(spec: CacheSpec, flag_keys: Sequence[str]) -> KeyExtras | None:
    """What separates entries beyond the upstream's Vary: the route's `vary:` headers and flag variants."""
    headers = tuple(name.lower().encode("latin-1") for name in spec.vary)
    flags = tuple(flag_keys) if spec.flags_in_key else ()
    if not headers and not flags:
        return None

    def extras(scope: Scope) -> str:
        values = dict.fromkeys(headers, b"")
        for name, value in scope["headers"]:
            if name in values:
                values[name] = value
        resolutions = flag_resolutions(scope)
        variants = [resolutions[key].label if key in resolutions else None for key in flags]
        return json.dumps([[value.decode("latin-1") for value in values.values()], variants])

    return extras
