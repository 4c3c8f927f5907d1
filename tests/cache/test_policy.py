"""The pure RFC 9111 rules of policy.py: one table per question, an RFC section per docstring."""

from typing import Any

import pytest

from asgi_gateway.middleware.cache import CacheOptions, StoredResponse
from asgi_gateway.middleware.cache.policy import (
    Storable,
    assess,
    conditional_headers,
    refreshed_headers,
    same_validator,
)

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"


def headers(**fields: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in fields.items()]


def decide(
    status: int = 200,
    response: list[tuple[bytes, bytes]] | None = None,
    *,
    authorized: bool = False,
    request_no_store: bool = False,
    request_time: float = NOW,
    **options: Any,
) -> Storable | str:
    return assess(
        status,
        headers(cache_control="max-age=60") if response is None else response,
        request_time=request_time,
        response_time=NOW,
        authorized=authorized,
        request_no_store=request_no_store,
        options=CacheOptions(**options),
    )


@pytest.mark.parametrize(
    ("status", "response", "extra", "reason"),
    [
        (206, headers(cache_control="max-age=60"), {}, "status"),
        (304, headers(cache_control="max-age=60"), {}, "status"),
        (200, headers(cache_control="no-store, max-age=60"), {}, "no-store"),
        (200, headers(cache_control="max-age=60"), {"request_no_store": True}, "no-store"),
        (200, headers(cache_control="private, max-age=60"), {}, "private"),
        (200, headers(cache_control="max-age=60"), {"authorized": True}, "authorization"),
        (200, headers(cache_control="max-age=60", vary="accept, *"), {}, "vary-star"),
        (200, headers(cache_control="max-age=60", set_cookie="a=1"), {}, "set-cookie"),
        (201, headers(), {"default_lifetime": 60}, "no-freshness"),
        (500, headers(), {"default_lifetime": 60}, "no-freshness"),
        (200, headers(), {}, "stale"),
        (200, headers(cache_control="max-age=60", age="60"), {}, "stale"),
        (200, headers(expires="0"), {}, "stale"),
        (200, headers(expires="Tue, 14 Nov 99999999999 22:13:20 GMT"), {}, "stale"),
        (200, headers(cache_control="no-store"), {"forced_lifetime": 60}, "no-store"),
        (200, headers(cache_control="private"), {"forced_lifetime": 60}, "private"),
    ],
    ids=[
        "partial",
        "not-modified",
        "no-store",
        "request-no-store",
        "private",
        "authorization",
        "vary-star",
        "set-cookie",
        "201-without-freshness",
        "500-without-freshness",
        "nothing-to-go-on",
        "arrived-expired",
        "invalid-expires",
        "expires-out-of-range",
        "force-keeps-no-store",
        "force-keeps-private",
    ],
)
def test_not_storable(status: int, response: list[tuple[bytes, bytes]], extra: dict[str, Any], reason: str) -> None:
    """RFC 9111 §3 (and §3.5 for Authorization; §4.1 for Vary: *)."""
    assert decide(status, response, **extra) == reason


@pytest.mark.parametrize(
    ("status", "response", "extra", "lifetime"),
    [
        (200, headers(cache_control="s-maxage=30, max-age=60"), {}, 30),
        (200, headers(cache_control="max-age=60"), {}, 60),
        (200, headers(expires="Tue, 14 Nov 2023 22:15:20 GMT", date=DATE), {}, 120),
        (200, headers(expires="Tue, 14 Nov 2023 22:15:20 GMT"), {}, 120),
        (200, headers(), {"default_lifetime": 15}, 15),
        (404, headers(), {"default_lifetime": 15}, 15),
        (201, headers(cache_control="max-age=60"), {}, 60),
        (201, headers(cache_control="public"), {"default_lifetime": 15}, 15),
        (200, headers(cache_control="max-age=60"), {"forced_lifetime": 5}, 5),
        (200, headers(cache_control="no-cache, max-age=60", etag='"a"'), {"keep": 60}, 0),
        (200, headers(cache_control="no-cache"), {"forced_lifetime": 5}, 5),
        (200, headers(cache_control="public, max-age=60"), {"authorized": True}, 60),
    ],
    ids=[
        "s-maxage-over-max-age",
        "max-age",
        "expires-minus-date",
        "expires-minus-response-time",
        "heuristic-200",
        "heuristic-404",
        "explicit-201",
        "public-201",
        "forced",
        "no-cache-kept-for-revalidation",
        "forced-over-no-cache",
        "public-with-authorization",
    ],
)
def test_lifetime(status: int, response: list[tuple[bytes, bytes]], extra: dict[str, Any], lifetime: float) -> None:
    """RFC 9111 §4.2.1 order, §4.2.2 heuristics (the route default lifetime), and the route's force."""
    decision = decide(status, response, **extra)
    assert isinstance(decision, Storable)
    assert decision.lifetime == lifetime


@pytest.mark.parametrize(
    ("cache_control", "options", "windows"),
    [
        ("max-age=60", {}, (0, 0)),
        ("max-age=60", {"stale_while_revalidate": 10, "stale_if_error": 20}, (10, 20)),
        ("max-age=60, stale-while-revalidate=5, stale-if-error=6", {"stale_while_revalidate": 10}, (5, 6)),
        ("max-age=60, must-revalidate, stale-if-error=6", {"stale_while_revalidate": 10}, (0, 0)),
        ("max-age=60, proxy-revalidate", {"stale_if_error": 10}, (0, 0)),
        ("s-maxage=60", {"stale_while_revalidate": 10}, (0, 0)),
        ("s-maxage=60, stale-while-revalidate=5", {"stale_if_error": 10}, (5, 0)),
        ("max-age=60, must-revalidate", {"forced_lifetime": 30, "stale_if_error": 10}, (0, 10)),
    ],
    ids=[
        "none",
        "route-windows",
        "upstream-windows-win",
        "must-revalidate",
        "proxy-revalidate",
        "s-maxage-implies-proxy-revalidate",
        "s-maxage-with-explicit-window",
        "forced-route-windows",
    ],
)
def test_stale_windows(cache_control: str, options: dict[str, Any], windows: tuple[float, float]) -> None:
    """RFC 5861 windows; RFC 9111 §4.2.4 directives that forbid serving stale."""
    decision = decide(200, headers(cache_control=cache_control), **options)
    assert isinstance(decision, Storable)
    assert (decision.stale_while_revalidate, decision.stale_if_error) == windows


@pytest.mark.parametrize(
    ("response", "request_time", "initial_age"),
    [
        (headers(cache_control="max-age=60"), NOW, 0),
        (headers(cache_control="max-age=60", age="20"), NOW, 20),
        (headers(cache_control="max-age=60", age="20"), NOW - 3, 23),
        (headers(cache_control="max-age=60", date="Tue, 14 Nov 2023 22:12:50 GMT"), NOW, 30),
        (headers(cache_control="max-age=60", date="Tue, 14 Nov 2023 22:14:20 GMT"), NOW, 0),
        (headers(cache_control="max-age=60", age="bogus"), NOW, 0),
    ],
    ids=["none", "age-header", "plus-response-delay", "apparent-age-from-date", "date-in-future", "invalid-age"],
)
def test_initial_age(response: list[tuple[bytes, bytes]], request_time: float, initial_age: float) -> None:
    """RFC 9111 §4.2.3 corrected_initial_age."""
    decision = decide(200, response, request_time=request_time)
    assert isinstance(decision, Storable)
    assert decision.initial_age == initial_age


def test_store_retention_covers_freshness_and_the_longest_window() -> None:
    decision = decide(200, headers(cache_control="max-age=60", age="10", etag='"a"'), stale_if_error=100, keep=300)
    assert isinstance(decision, Storable)
    assert decision.retention == 50 + 300


def test_stored_headers() -> None:
    """RFC 9111 §3.1: hop-by-hop fields, those Connection names, Age and Set-Cookie are not stored; a
    Date is added when missing (RFC 9110 §6.6.1); Content-Length is the body kept."""
    response = [
        (b"cache-control", b"max-age=60"),
        (b"connection", b"x-hop, keep-alive"),
        (b"x-hop", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"age", b"3"),
        (b"set-cookie", b"a=1"),
        (b"surrogate-key", b"users  user-7,users"),
        (b"vary", b"Accept-Language, accept"),
        (b"content-length", b"999"),
    ]
    decision = decide(200, response, cache_set_cookie=True)
    assert isinstance(decision, Storable)
    stored = decision.entry(b"body", ["text/html", None])
    assert stored.headers == (
        (b"cache-control", b"max-age=60"),
        (b"surrogate-key", b"users  user-7,users"),
        (b"vary", b"Accept-Language, accept"),
        (b"date", DATE.encode()),
        (b"content-length", b"4"),
    )
    assert (stored.tags, stored.vary) == (("users", "user-7"), (("accept", "text/html"), ("accept-language", None)))


def test_no_tags_when_the_tags_header_is_off() -> None:
    decision = decide(200, headers(cache_control="max-age=60", surrogate_key="a"), tags_header=None)
    assert isinstance(decision, Storable)
    assert decision.tags == ()


ENTRY = StoredResponse(
    status=200,
    headers=(
        (b"etag", b'W/"v1"'),
        (b"last-modified", b"Mon, 13 Nov 2023 00:00:00 GMT"),
        (b"cache-control", b"max-age=60"),
        (b"content-length", b"4"),
        (b"content-type", b"text/plain"),
    ),
    body=b"body",
    request_time=NOW,
    response_time=NOW,
    initial_age=0,
    lifetime=60,
)


def test_conditional_headers() -> None:
    """RFC 9111 §4.3.1: the stored validators, as If-None-Match and If-Modified-Since."""
    assert conditional_headers(ENTRY) == [
        (b"if-none-match", b'W/"v1"'),
        (b"if-modified-since", b"Mon, 13 Nov 2023 00:00:00 GMT"),
    ]


@pytest.mark.parametrize(
    ("not_modified", "expected"),
    [
        (headers(etag='"v1"'), True),
        (headers(etag='W/"v1"'), True),
        (headers(etag='"v2"'), False),
        (headers(etag="v1"), False),
        (headers(last_modified="Mon, 13 Nov 2023 00:00:00 GMT"), True),
        (headers(last_modified="Tue, 14 Nov 2023 00:00:00 GMT"), False),
        (headers(), True),
    ],
    ids=[
        "same-etag",
        "weakly-same",
        "other-etag",
        "malformed-etag",
        "same-last-modified",
        "other-last-modified",
        "no-validator",
    ],
)
def test_same_validator(not_modified: list[tuple[bytes, bytes]], expected: bool) -> None:
    """RFC 9111 §4.3.4: which stored response a 304 is about."""
    assert same_validator(ENTRY, not_modified) is expected


def test_refreshed_headers() -> None:
    """RFC 9111 §3.2: the 304's fields replace stored ones, except Content-Length and the like; a 304
    without Date gets one."""
    not_modified = headers(cache_control="max-age=120", content_length="0", x_new="1", connection="x-drop", x_drop="1")
    assert refreshed_headers(ENTRY, not_modified, NOW) == [
        (b"etag", b'W/"v1"'),
        (b"last-modified", b"Mon, 13 Nov 2023 00:00:00 GMT"),
        (b"content-length", b"4"),
        (b"content-type", b"text/plain"),
        (b"cache-control", b"max-age=120"),
        (b"x-new", b"1"),
        (b"date", DATE.encode()),
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"default_lifetime": -1},
        {"forced_lifetime": 0},
        {"error_timeout": 0},
        {"lock_timeout": 0},
        {"max_object_bytes": 0},
        {"name": "two words"},
        {"keep": float("nan")},
    ],
    ids=["default-lifetime", "forced-lifetime", "error-timeout", "lock-timeout", "max-object", "name", "nan"],
)
def test_options_are_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        CacheOptions(**options)
