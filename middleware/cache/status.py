"""`CacheStatus`: how the cache handled one request, formatted as this cache's Cache-Status member (RFC 9211).

Parameters are written in one order (hit, fwd, fwd-status, collapsed, the storing outcome, ttl, detail), so
every answer of the cache reads the same way. The storing outcome is `stored`, or the reason it was not
stored as `detail`; a `detail` about the serving itself (stale-while-revalidate, stale-if-error) comes last.
"""

from typing import NamedTuple

__all__ = ["BYPASS", "FRESH_HIT", "STALE_HIT", "CacheStatus"]


class CacheStatus(NamedTuple):
    """One Cache-Status member's parameters (RFC 9211 §2). A NamedTuple: one is made for every answer.

    Most answers share a few constant values (FRESH_HIT, STALE_HIT, BYPASS); the freshness left when a stored
    response is sent, negative once stale, is given to `encode` as `remaining` (the `ttl` parameter).
    """

    hit: bool = False
    fwd: str | None = None  # why the request went upstream: uri-miss, vary-miss, request, stale, bypass
    fwd_status: int | None = None
    collapsed: bool = False
    stored: bool = False
    not_stored: str | None = None  # why the response was not stored (a detail token)
    detail: str | None = None

    def encode(self, cache: bytes, remaining: float | None = None) -> bytes:
        """The field value for the cache named `cache` (UTF-8)."""
        if self is FRESH_HIT and remaining is not None:  # most answers: formatted without building a list
            return b"%s; hit; ttl=%d" % (cache, remaining)
        parts = [cache.decode()]
        if self.hit:
            parts.append("hit")
        if self.fwd is not None:
            parts.append(f"fwd={self.fwd}")
        if self.fwd_status is not None:
            parts.append(f"fwd-status={self.fwd_status}")
        if self.collapsed:
            parts.append("collapsed")
        if self.stored:
            parts.append("stored")
        elif self.not_stored is not None:
            parts.append(f"detail={self.not_stored}")
        if remaining is not None:
            parts.append(f"ttl={int(remaining)}")
        if self.detail is not None:
            parts.append(f"detail={self.detail}")
        return "; ".join(parts).encode()


FRESH_HIT = CacheStatus(hit=True)
STALE_HIT = CacheStatus(hit=True, detail="stale-while-revalidate")
BYPASS = CacheStatus(fwd="bypass")
