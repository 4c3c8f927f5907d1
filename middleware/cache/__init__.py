"""RFC 9111 shared cache for any ASGI app: `CacheMiddleware` over a `MemoryStore`, a `RedisStore`
shared by replicas, or a `TieredStore` of both.

Layout (hishel's split): cachecontrol.py, policy.py (storing) and lookup.py (serving) are pure rules,
status.py formats Cache-Status, keys.py builds keys, store.py defines what is stored, memory.py / redis.py /
tiered.py store it, middleware.py is the only I/O driver (request.py reads a request, tee.py a response).

    store = TieredStore(l1=MemoryStore(max_bytes=32 << 20), l2=RedisStore.from_url(url, prefix="gw:"))
    app = CacheMiddleware(app, store=store, options=CacheOptions(default_lifetime=60, stale_while_revalidate=30))
    await app.purge_tag("user-7")      # also purge_url(absolute_url), purge_prefix(path)
    await app.aclose(); await store.aclose()
"""

from asgi_gateway.middleware.cache.cachecontrol import delta_seconds, format_cache_control, parse_cache_control
from asgi_gateway.middleware.cache.keys import KeyRules, UrlKey, url_key_for
from asgi_gateway.middleware.cache.memory import MemoryStore
from asgi_gateway.middleware.cache.middleware import CacheMiddleware
from asgi_gateway.middleware.cache.policy import CacheOptions
from asgi_gateway.middleware.cache.redis import RedisStore
from asgi_gateway.middleware.cache.store import CacheStore, StoredResponse, StoreUnavailable, VaryIndex
from asgi_gateway.middleware.cache.tiered import TieredStore

__all__ = [
    "CacheMiddleware",
    "CacheOptions",
    "CacheStore",
    "KeyRules",
    "MemoryStore",
    "RedisStore",
    "StoreUnavailable",
    "StoredResponse",
    "TieredStore",
    "UrlKey",
    "VaryIndex",
    "delta_seconds",
    "format_cache_control",
    "parse_cache_control",
    "url_key_for",
]
