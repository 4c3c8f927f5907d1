"""`CacheRequest`: what the cache reads from one GET or HEAD, read in one pass over its header fields."""

from dataclasses import dataclass

from asgi_gateway.middleware.cache.keys import UrlKey, UrlKeys, extras_variant, request_vary_values
from asgi_gateway.middleware.cache.lookup import NO_DEMANDS, ClientDemands
from asgi_gateway.middleware.cache.store import StoredResponse
from asgi_gateway.middleware.conditional import ReadConditions
from asgi_gateway.middleware.types import Scope

__all__ = ["CacheRequest", "read_request"]


@dataclass(slots=True)
class CacheRequest:
    scope: Scope
    url: UrlKey
    head: str  # the variant the route's extra key parts select
    is_head: bool
    authorized: bool
    conditions: ReadConditions | None  # None: not conditional, so never a 304
    demands: ClientDemands

    def matches(self, entry: StoredResponse) -> bool:
        """The request's varied header values equal those the entry was stored for (RFC 9111 §4.1)."""
        if not entry.vary:
            return True
        fields = [name for name, _ in entry.vary]
        return request_vary_values(self.scope, fields) == tuple(value for _, value in entry.vary)

    def key(self, variant: str) -> str:
        """The in-process key of one variant: coalescing, background refreshes and hit-for-pass go by it."""
        return f"{self.url.digest}:{variant}"


def read_request(scope: Scope, url_keys: UrlKeys, extras: str | None, *, honour_no_cache: bool) -> CacheRequest:
    cache_control: list[str] = []
    if_none_match: list[bytes] = []
    if_modified_since = False
    # A caller verified by an API key sends no Authorization, yet its answers are its own (RFC 9111 §3.5).
    authorized = "identity" in scope.get("state", ())
    host = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
        elif name == b"cache-control":
            cache_control.append(value.decode("latin-1"))
        elif name == b"authorization":
            authorized = True
        elif name == b"if-none-match":
            if_none_match.append(value)
        elif name == b"if-modified-since":
            if_modified_since = True
    conditions = ReadConditions(scope["headers"], if_none_match) if if_none_match or if_modified_since else None
    demands = (
        ClientDemands.parse(", ".join(cache_control), honour_no_cache=honour_no_cache) if cache_control else NO_DEMANDS
    )
    return CacheRequest(
        scope,
        url_keys.of(scope, host),
        extras_variant(extras),
        scope["method"] == "HEAD",
        authorized,
        conditions,
        demands,
    )
