"""`RequestState`: the keys layers share through `scope["state"]`, typed, so a writer and its readers (metrics,
spans, the access line) cannot drift apart. Every key is optional: each layer writes only its own.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from asgi_gateway.flags.model import EvaluationContext
from asgi_gateway.flags.resolution import Resolution

if TYPE_CHECKING:  # the cache and the proxy read this state without loading the token libraries
    from asgi_gateway.middleware.auth import Identity

__all__ = ["CacheOutcome", "RequestState"]

CacheOutcome = Literal["hit", "stale", "miss", "revalidated", "bypass"]


class RequestState(TypedDict, total=False):
    request_id: str  # middleware/request_id.py
    upstream: str  # the upstream that answered (gateway/proxy.py)
    cache_status: CacheOutcome  # middleware/cache
    fanout: dict[str, str]  # each fan-out call's outcome by name (gateway/fanout.py)
    flags: Mapping[str, Resolution[Any]]  # middleware/flags.py
    flag_context: EvaluationContext  # middleware/flags.py
    identity: "Identity"  # the verified caller (middleware/auth.py)
