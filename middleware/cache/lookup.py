"""What a GET or HEAD gets from what is stored for it, as pure functions (RFC 9111 §4, §5.2.1; RFC 5861).

`decide` turns a lookup's result into one of five actions; middleware.py carries them out. Nothing here
does I/O or reads the clock, so every rule is testable as a table.
"""

import enum
from dataclasses import dataclass

from asgi_gateway.middleware.cache.cachecontrol import delta_seconds, parse_cache_control
from asgi_gateway.middleware.cache.store import StoredResponse

__all__ = ["NO_DEMANDS", "Action", "ClientDemands", "Decision", "decide", "stale_if_error_allows"]


@dataclass(frozen=True, slots=True)
class ClientDemands:
    """A request's Cache-Control as this cache honours it. The freshness demands (no-cache, max-age,
    min-fresh) and no-store are set only when the route honours them; only-if-cached always counts."""

    only_if_cached: bool = False
    no_cache: bool = False
    no_store: bool = False
    max_age: int | None = None
    min_fresh: int | None = None

    @classmethod
    def parse(cls, cache_control: str, *, honour_no_cache: bool) -> "ClientDemands":
        directives = parse_cache_control(cache_control)
        only_if_cached = "only-if-cached" in directives
        if not honour_no_cache:
            return cls(only_if_cached=only_if_cached)
        return cls(
            only_if_cached=only_if_cached,
            no_cache="no-cache" in directives,
            no_store="no-store" in directives,
            max_age=delta_seconds(directives, "max-age"),
            min_fresh=delta_seconds(directives, "min-fresh"),
        )

    @property
    def demanding(self) -> bool:
        """The client asked for fresher than stored: stale-while-revalidate does not apply (RFC 5861 §3)."""
        return self.no_cache or self.max_age is not None or self.min_fresh is not None

    def accepts(self, age: float, remaining: float) -> bool:
        """Fresh, and fresh enough for the client's honoured directives (RFC 9111 §5.2.1)."""
        return (
            remaining > 0
            and not self.no_cache
            and (self.max_age is None or age <= self.max_age)
            and (self.min_fresh is None or remaining >= self.min_fresh)
        )


NO_DEMANDS = ClientDemands()  # a request without Cache-Control


class Action(enum.Enum):
    SERVE = "serve"  # fresh enough for the request
    SERVE_STALE = "serve-stale"  # stale within stale-while-revalidate: answered now, refreshed in the background
    REVALIDATE = "revalidate"  # stored but not fit to serve: ask upstream, with its validators, ready to fall back
    FORWARD = "forward"  # nothing stored: ask upstream
    ONLY_IF_CACHED_MISS = "only-if-cached-miss"  # nothing fit to serve and the client forbids asking: 504


Decision = tuple[Action, float, float, str]
"""(action, age, remaining, reason): `age` and `remaining` (freshness left, negative once stale) are the stored
response's, 0 without one; `reason` is the Cache-Status `fwd` token of the actions that go upstream. A plain
tuple: one is made for every request."""


def decide(demands: ClientDemands, entry: StoredResponse | None, miss: str, now: float) -> Decision:
    """What to do with a lookup's `entry` (None: nothing usable stored, for the reason `miss`) at `now`."""
    if entry is not None:
        age = entry.age(now)
        remaining = entry.lifetime - age
        if remaining > 0 and (demands is NO_DEMANDS or demands.accepts(age, remaining)):
            return Action.SERVE, age, remaining, ""
        if not demands.demanding and -remaining < entry.stale_while_revalidate:
            return Action.SERVE_STALE, age, remaining, ""
        reason = "request" if remaining > 0 else "stale"
        if demands.only_if_cached:
            return Action.ONLY_IF_CACHED_MISS, age, remaining, reason
        return Action.REVALIDATE, age, remaining, reason
    if demands.only_if_cached:
        return Action.ONLY_IF_CACHED_MISS, 0.0, 0.0, miss
    return Action.FORWARD, 0.0, 0.0, miss


def stale_if_error_allows(entry: StoredResponse, now: float) -> bool:
    """Whether an upstream failure may be answered with `entry`: it is no staler than its stale-if-error
    window allows (RFC 5861 §4)."""
    return entry.stale_if_error > 0 and entry.age(now) - entry.lifetime <= entry.stale_if_error
