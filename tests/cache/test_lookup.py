"""The pure serving rules of lookup.py and the Cache-Status format of status.py, as tables without ASGI."""

import pytest

from asgi_gateway.middleware.cache import StoredResponse
from asgi_gateway.middleware.cache.lookup import (
    NO_DEMANDS,
    Action,
    ClientDemands,
    Decision,
    decide,
    stale_if_error_allows,
)
from asgi_gateway.middleware.cache.status import BYPASS, FRESH_HIT, STALE_HIT, CacheStatus

NOW = 1_700_000_000.0


def stored(age: float, lifetime: float = 60, swr: float = 0, sie: float = 0) -> StoredResponse:
    """A response that is `age` seconds old at NOW."""
    return StoredResponse(
        status=200,
        headers=(),
        body=b"",
        request_time=NOW - age,
        response_time=NOW - age,
        initial_age=0,
        lifetime=lifetime,
        stale_while_revalidate=swr,
        stale_if_error=sie,
    )


@pytest.mark.parametrize(
    ("demands", "entry", "miss", "expected"),
    [
        (NO_DEMANDS, stored(10), "", (Action.SERVE, 10, 50, "")),
        (NO_DEMANDS, stored(60), "", (Action.REVALIDATE, 60, 0, "stale")),
        (NO_DEMANDS, stored(70, swr=30), "", (Action.SERVE_STALE, 70, -10, "")),
        (NO_DEMANDS, stored(90, swr=30), "", (Action.REVALIDATE, 90, -30, "stale")),
        (ClientDemands(no_cache=True), stored(10), "", (Action.REVALIDATE, 10, 50, "request")),
        (ClientDemands(max_age=5), stored(10), "", (Action.REVALIDATE, 10, 50, "request")),
        (ClientDemands(max_age=10), stored(10), "", (Action.SERVE, 10, 50, "")),
        (ClientDemands(min_fresh=51), stored(10), "", (Action.REVALIDATE, 10, 50, "request")),
        (ClientDemands(max_age=5), stored(70, swr=30), "", (Action.REVALIDATE, 70, -10, "stale")),
        (ClientDemands(only_if_cached=True), stored(10), "", (Action.SERVE, 10, 50, "")),
        (
            ClientDemands(only_if_cached=True),
            stored(70),
            "",
            (Action.ONLY_IF_CACHED_MISS, 70, -10, "stale"),
        ),
        (ClientDemands(only_if_cached=True), None, "uri-miss", (Action.ONLY_IF_CACHED_MISS, 0, 0, "uri-miss")),
        (NO_DEMANDS, None, "uri-miss", (Action.FORWARD, 0, 0, "uri-miss")),
        (NO_DEMANDS, None, "vary-miss", (Action.FORWARD, 0, 0, "vary-miss")),
    ],
    ids=[
        "fresh",
        "just-expired",
        "stale-while-revalidate",
        "past-stale-while-revalidate",
        "client-no-cache",
        "client-max-age",
        "client-max-age-equal",
        "client-min-fresh",
        "demanding-client-gets-no-stale",
        "only-if-cached-fresh",
        "only-if-cached-stale",
        "only-if-cached-nothing",
        "uri-miss",
        "vary-miss",
    ],
)
def test_decide(demands: ClientDemands, entry: StoredResponse | None, miss: str, expected: Decision) -> None:
    """RFC 9111 §4.2 (fresh), §5.2.1 (client directives), RFC 5861 §3 (stale-while-revalidate)."""
    assert decide(demands, entry, miss, NOW) == expected


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (stored(10, sie=0), False),
        (stored(10, sie=30), True),
        (stored(90, sie=30), True),
        (stored(91, sie=30), False),
    ],
    ids=["no-window", "fresh-with-window", "at-the-window-edge", "past-the-window"],
)
def test_stale_if_error_allows(entry: StoredResponse, expected: bool) -> None:
    """RFC 5861 §4: within stale-if-error seconds of becoming stale."""
    assert stale_if_error_allows(entry, NOW) is expected


@pytest.mark.parametrize(
    ("header", "honour", "expected"),
    [
        ("no-cache, max-age=5, min-fresh=3, no-store", False, ClientDemands()),
        ("only-if-cached", False, ClientDemands(only_if_cached=True)),
        (
            "no-cache, max-age=5, min-fresh=3, no-store",
            True,
            ClientDemands(no_cache=True, no_store=True, max_age=5, min_fresh=3),
        ),
    ],
    ids=["not-honoured", "only-if-cached-always", "honoured"],
)
def test_client_demands(header: str, honour: bool, expected: ClientDemands) -> None:
    assert ClientDemands.parse(header, honour_no_cache=honour) == expected


@pytest.mark.parametrize(
    ("status", "remaining", "expected"),
    [
        (FRESH_HIT, 59.9, "edge; hit; ttl=59"),
        (STALE_HIT, -5.5, "edge; hit; ttl=-5; detail=stale-while-revalidate"),
        (BYPASS, None, "edge; fwd=bypass"),
        (CacheStatus(detail="only-if-cached"), None, "edge; detail=only-if-cached"),
        (CacheStatus(fwd="uri-miss", collapsed=True), 60, "edge; fwd=uri-miss; collapsed; ttl=60"),
        (CacheStatus(fwd="uri-miss", stored=True), None, "edge; fwd=uri-miss; stored"),
        (
            CacheStatus(fwd="stale", fwd_status=200, not_stored="no-store"),
            None,
            "edge; fwd=stale; fwd-status=200; detail=no-store",
        ),
        (
            CacheStatus(fwd="stale", fwd_status=304, not_stored="no-store"),
            -1,
            "edge; fwd=stale; fwd-status=304; detail=no-store; ttl=-1",
        ),
        (
            CacheStatus(fwd="stale", fwd_status=503, detail="stale-if-error"),
            -20,
            "edge; fwd=stale; fwd-status=503; ttl=-20; detail=stale-if-error",
        ),
        (CacheStatus(hit=True), 59.9, "edge; hit; ttl=59"),
    ],
    ids=[
        "hit",
        "stale-hit",
        "bypass",
        "only-if-cached",
        "collapsed",
        "stored",
        "not-stored",
        "revalidated",
        "stale-if-error",
        "hit-built-anew",
    ],
)
def test_cache_status_format(status: CacheStatus, remaining: float | None, expected: str) -> None:
    """RFC 9211 §2: the cache's name, then its parameters in one fixed order."""
    assert status.encode(b"edge", remaining) == expected.encode()
