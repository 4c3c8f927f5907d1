"""CacheMiddleware behaviour through httpx.ASGITransport, against every store and a real counting upstream."""

import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from asgi_gateway.middleware.cache import CacheMiddleware, CacheOptions, CacheStore, KeyRules
from tests.cache.conftest import CacheFactory, Clock, Upstream, client_for

pytestmark = pytest.mark.anyio


async def test_second_get_is_served_from_the_cache(make_cache: CacheFactory) -> None:
    """The upstream is asked once; the second answer carries Age and a hit Cache-Status."""
    upstream = Upstream({"cache-control": "max-age=60", "etag": '"v1"'})
    async with client_for(make_cache(upstream)) as client:
        first = await client.get("/items/1")
        second = await client.get("/items/1")
    assert upstream.hits == 1
    assert (first.text, first.headers["cache-status"]) == ("hit 1", "gateway; fwd=uri-miss; stored")
    assert (second.status_code, second.text, second.headers["etag"]) == (200, "hit 1", '"v1"')
    assert (second.headers["age"], second.headers["cache-status"]) == ("0", "gateway; hit; ttl=60")
    assert second.headers["content-length"] == "5"


async def test_head_is_answered_from_the_get_entry(make_cache: CacheFactory) -> None:
    upstream = Upstream()
    async with client_for(make_cache(upstream)) as client:
        await client.get("/items/1")
        head = await client.head("/items/1")
    assert upstream.hits == 1
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "5")
    assert head.headers["cache-status"].startswith("gateway; hit")


async def test_head_miss_fills_the_entry_with_a_get(make_cache: CacheFactory) -> None:
    """A HEAD miss goes upstream as GET, so the entry it stores also answers later GETs."""
    upstream = Upstream()
    async with client_for(make_cache(upstream)) as client:
        head = await client.head("/items/1")
        get = await client.get("/items/1")
    assert [method for method, _ in upstream.seen] == ["GET"]
    assert (head.content, head.headers["content-length"]) == (b"", "5")
    assert (get.text, get.headers["cache-status"]) == ("hit 1", "gateway; hit; ttl=60")


async def test_age_grows_with_the_clock(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream()
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        clock.advance(25)
        later = await client.get("/a")
    assert (later.headers["age"], later.headers["cache-status"]) == ("25", "gateway; hit; ttl=35")


async def test_age_from_upstream_counts_against_freshness(make_cache: CacheFactory, clock: Clock) -> None:
    """RFC 9111 §4.2.3: the Age the response arrived with is part of its current age."""
    upstream = Upstream({"cache-control": "max-age=60", "age": "50"})
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        clock.advance(5)
        hit = await client.get("/a")
        clock.advance(6)
        expired = await client.get("/a")
    assert (hit.headers["age"], hit.headers["cache-status"]) == ("55", "gateway; hit; ttl=5")
    assert (upstream.hits, expired.text) == (2, "hit 2")


async def test_expired_entry_without_validators_is_fetched_again(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream({"cache-control": "max-age=10"})
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        clock.advance(11)
        again = await client.get("/a")
        third = await client.get("/a")
    assert upstream.hits == 2
    assert (again.text, third.text, third.headers["cache-status"]) == ("hit 2", "hit 2", "gateway; hit; ttl=10")


async def test_vary_keeps_variants_apart(make_cache: CacheFactory) -> None:
    """Secondary keys (RFC 9111 §4.1); Accept-Language values are compared case-insensitively."""
    upstream = Upstream({"cache-control": "max-age=60", "vary": "Accept-Language"})
    async with client_for(make_cache(upstream)) as client:
        english = await client.get("/a", headers={"accept-language": "en"})
        french = await client.get("/a", headers={"accept-language": "fr"})
        english_again = await client.get("/a", headers={"accept-language": "EN"})
        french_again = await client.get("/a", headers={"accept-language": "fr"})
        neither = await client.get("/a")
    assert upstream.hits == 3
    assert [r.text for r in (english, french, english_again, french_again, neither)] == [
        "hit 1",
        "hit 2",
        "hit 1",
        "hit 2",
        "hit 3",
    ]
    assert french.headers["cache-status"] == "gateway; fwd=vary-miss; stored"
    assert english_again.headers["cache-status"] == "gateway; hit; ttl=60"


@pytest.mark.parametrize(
    ("response_headers", "request_headers", "detail"),
    [
        ({"cache-control": "private, max-age=60"}, {}, "private"),
        ({"cache-control": "no-store, max-age=60"}, {}, "no-store"),
        ({"cache-control": 'private="x-user", max-age=60'}, {}, "private"),
        ({"cache-control": "max-age=60"}, {"authorization": "Bearer t"}, "authorization"),
        ({"cache-control": "max-age=60", "set-cookie": "session=1"}, {}, "set-cookie"),
        ({"cache-control": "max-age=60", "vary": "*"}, {}, "vary-star"),
        ({"cache-control": "max-age=0"}, {}, "stale"),
    ],
    ids=["private", "no-store", "qualified-private", "authorization", "set-cookie", "vary-star", "max-age-0"],
)
async def test_responses_that_must_not_be_shared_are_not_stored(
    make_cache: CacheFactory, response_headers: dict[str, str], request_headers: dict[str, str], detail: str
) -> None:
    upstream = Upstream(response_headers)
    async with client_for(make_cache(upstream)) as client:
        first = await client.get("/a", headers=request_headers)
        second = await client.get("/a", headers=request_headers)
    assert upstream.hits == 2
    assert (first.text, second.text) == ("hit 1", "hit 2")
    assert second.headers["cache-status"] == f"gateway; fwd=uri-miss; detail={detail}"


@pytest.mark.parametrize("directive", ["public", "s-maxage=60", "must-revalidate"])
async def test_authorized_requests_are_stored_when_the_response_allows(
    make_cache: CacheFactory, directive: str
) -> None:
    """RFC 9111 §3.5."""
    upstream = Upstream({"cache-control": f"max-age=60, {directive}"})
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a", headers={"authorization": "Bearer t"})
        second = await client.get("/a", headers={"authorization": "Bearer t"})
    assert (upstream.hits, second.text) == (1, "hit 1")


async def test_set_cookie_responses_are_stored_without_the_cookie_when_allowed(make_cache: CacheFactory) -> None:
    """The cookie reaches the client that caused it and is never replayed to another."""
    upstream = Upstream({"cache-control": "max-age=60", "set-cookie": "session=secret"})
    async with client_for(make_cache(upstream, cache_set_cookie=True)) as client:
        first = await client.get("/a")
        second = await client.get("/a")
    assert upstream.hits == 1
    assert first.headers["set-cookie"] == "session=secret"
    assert ("set-cookie" in second.headers, second.text) == (False, "hit 1")


@pytest.mark.parametrize(
    ("headers", "options", "lifetime"),
    [
        ({"cache-control": "s-maxage=30, max-age=60"}, {}, 30),
        ({"cache-control": "max-age=60"}, {}, 60),
        ({"expires": "Tue, 14 Nov 2023 22:15:20 GMT", "date": "Tue, 14 Nov 2023 22:13:20 GMT"}, {}, 120),
        ({}, {"default_lifetime": 15}, 15),
        ({"cache-control": "max-age=60"}, {"forced_lifetime": 300}, 300),
        ({"cache-control": "no-cache"}, {"forced_lifetime": 300}, 300),
    ],
    ids=["s-maxage-first", "max-age", "expires-minus-date", "route-default", "forced", "forced-over-no-cache"],
)
async def test_freshness_lifetime(
    make_cache: CacheFactory, headers: dict[str, str], options: dict[str, float], lifetime: int
) -> None:
    """RFC 9111 §4.2.1: s-maxage, then max-age, then Expires, then the route default; force wins."""
    upstream = Upstream(headers)
    async with client_for(make_cache(upstream, **options)) as client:
        await client.get("/a")
        second = await client.get("/a")
    assert (upstream.hits, second.headers["cache-status"]) == (1, f"gateway; hit; ttl={lifetime}")


async def test_without_freshness_or_route_default_nothing_is_stored(make_cache: CacheFactory) -> None:
    upstream = Upstream({})
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        second = await client.get("/a")
    assert (upstream.hits, second.headers["cache-status"]) == (2, "gateway; fwd=uri-miss; detail=stale")


async def test_server_errors_are_not_stored_by_default(make_cache: CacheFactory) -> None:
    upstream = Upstream({}, status=500)
    async with client_for(make_cache(upstream, default_lifetime=60)) as client:
        await client.get("/a")
        second = await client.get("/a")
    assert (upstream.hits, second.status_code) == (2, 500)
    assert second.headers["cache-status"] == "gateway; fwd=uri-miss; detail=no-freshness"


async def test_query_is_normalised_into_the_key(make_cache: CacheFactory) -> None:
    upstream = Upstream()
    rules = KeyRules(query="sorted", ignore=frozenset({"utm_source"}))
    async with client_for(make_cache(upstream, keys=rules)) as client:
        await client.get("/a?b=2&a=1")
        same = await client.get("/a?a=1&b=2&utm_source=mail")
        other = await client.get("/a?a=1&b=3")
    assert upstream.hits == 2
    assert (same.text, other.text) == ("hit 1", "hit 2")


async def test_key_extras_separate_entries(store: CacheStore, clock: Clock) -> None:
    """The route's extra key part (a resolved flag variant, say) is part of the key."""
    upstream = Upstream()

    def variant(scope: Scope) -> str | None:
        return dict(scope["headers"]).get(b"x-variant", b"").decode() or None

    app = CacheMiddleware(upstream, store=store, key_extras=variant, clock=clock)
    async with client_for(app) as client:
        texts = [(await client.get("/a", headers=headers)).text for headers in ({}, {"x-variant": "b"}, {}, {})]
        texts.append((await client.get("/a", headers={"x-variant": "b"})).text)
    assert texts == ["hit 1", "hit 2", "hit 1", "hit 1", "hit 2"]


async def test_only_if_cached_answers_504_on_a_miss(make_cache: CacheFactory) -> None:
    upstream = Upstream()
    async with client_for(make_cache(upstream)) as client:
        miss = await client.get("/a", headers={"cache-control": "only-if-cached"})
        await client.get("/a")
        hit = await client.get("/a", headers={"cache-control": "only-if-cached"})
    assert upstream.hits == 1
    assert (miss.status_code, miss.headers["content-type"]) == (504, "application/problem+json")
    assert miss.json()["status"] == 504
    assert (hit.status_code, hit.text) == (200, "hit 1")


async def test_client_no_cache_is_ignored_by_default(make_cache: CacheFactory) -> None:
    """Protecting the origin: a client cannot force a request upstream unless the route allows it."""
    upstream = Upstream()
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        forced = await client.get("/a", headers={"cache-control": "no-cache"})
        zero = await client.get("/a", headers={"cache-control": "max-age=0"})
    assert (upstream.hits, forced.text, zero.text) == (1, "hit 1", "hit 1")


async def test_client_no_cache_is_honoured_when_the_route_says_so(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream()
    async with client_for(make_cache(upstream, honour_client_no_cache=True)) as client:
        await client.get("/a")
        forced = await client.get("/a", headers={"cache-control": "no-cache"})
        clock.advance(10)
        too_old = await client.get("/a", headers={"cache-control": "max-age=5"})
        young_enough = await client.get("/a", headers={"cache-control": "max-age=5"})
        not_stored = await client.get("/b", headers={"cache-control": "no-store"})
        after_no_store = await client.get("/b")
    assert upstream.hits == 5
    assert forced.headers["cache-status"] == "gateway; fwd=request; fwd-status=200; stored"
    assert (too_old.text, young_enough.text) == ("hit 3", "hit 3")
    assert (not_stored.text, after_no_store.text) == ("hit 4", "hit 5")


async def test_bodies_over_the_limit_stream_whole_but_are_not_stored(make_cache: CacheFactory) -> None:
    """As hishel's _save_stream: storing stops at the limit, streaming to the client does not."""
    chunks = [b"x" * 400] * 5
    hits = 0

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal hits
        hits += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"cache-control", b"max-age=60")]})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with client_for(make_cache(streaming, max_object_bytes=1000)) as client:
        first = await client.get("/big")
        second = await client.get("/big")
    assert (hits, first.content, second.content) == (2, b"x" * 2000, b"x" * 2000)


async def test_known_oversize_is_reported_in_cache_status(make_cache: CacheFactory) -> None:
    upstream = Upstream()
    async with client_for(make_cache(upstream, max_object_bytes=3)) as client:
        first = await client.get("/a")
    assert (first.text, first.headers["cache-status"]) == ("hit 1", "gateway; fwd=uri-miss; detail=too-large")


async def test_cache_status_name_and_telemetry_state(store: CacheStore, clock: Clock) -> None:
    upstream = Upstream()
    cache = CacheMiddleware(upstream, store=store, options=CacheOptions(name="edge-1"), clock=clock)
    outcomes: list[str] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        await cache(scope, receive, send)
        outcomes.append(scope["state"]["cache_status"])

    async with client_for(recording) as client:
        await client.get("/a")
        hit = await client.get("/a")
    assert hit.headers["cache-status"] == "edge-1; hit; ttl=60"
    assert outcomes == ["miss", "hit"]


async def test_other_methods_and_protocols_pass_through(make_cache: CacheFactory) -> None:
    upstream = Upstream()
    async with client_for(make_cache(upstream)) as client:
        options = await client.options("/a")
        await client.options("/a")
    assert (upstream.hits, "cache-status" in options.headers) == (2, False)


async def test_unsafe_request_invalidates_its_url_and_same_origin_locations(make_cache: CacheFactory) -> None:
    """RFC 9111 §4.4: the request URL, Location and Content-Location (same origin only)."""
    upstream = Upstream()
    app = make_cache(upstream)
    async with client_for(app) as client:
        for url in ("/a", "/b", "/c", "http://elsewhere.test/d"):
            await client.get(url)
        upstream.headers = {
            "location": "/b",
            "content-location": "http://test/c",
        }
        await client.post("/a")
        upstream.headers = {"location": "http://elsewhere.test/d"}
        await client.put("/x")
        upstream.headers = {"cache-control": "max-age=60"}
        after = {url: (await client.get(url)).headers["cache-status"] for url in ("/a", "/b", "/c")}
        other = await client.get("http://elsewhere.test/d")
    assert after == dict.fromkeys(("/a", "/b", "/c"), "gateway; fwd=uri-miss; stored")
    assert other.headers["cache-status"] == "gateway; hit; ttl=60"


async def test_failed_unsafe_request_does_not_invalidate(make_cache: CacheFactory) -> None:
    upstream = Upstream()
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        upstream.status = 500
        await client.delete("/a")
        upstream.status = 200
        still = await client.get("/a")
    assert still.headers["cache-status"] == "gateway; hit; ttl=60"


async def test_purge_by_url_prefix_and_tag(make_cache: CacheFactory) -> None:
    upstream = Upstream({"cache-control": "max-age=60", "surrogate-key": "users user-1"})
    cache = make_cache(upstream)
    async with client_for(cache) as client:
        await client.get("/users/1")
        upstream.headers = {"cache-control": "max-age=60", "surrogate-key": "users user-2"}
        await client.get("/users/2")
        upstream.headers = {"cache-control": "max-age=60", "vary": "accept"}
        await client.get("/orders/1", headers={"accept": "text/plain"})
        await client.get("/orders/1", headers={"accept": "application/json"})
        await client.get("/orders/2")

        by_tag = await cache.purge_tag("user-1")
        by_url = await cache.purge_url("http://test/orders/1")
        by_prefix = await cache.purge_prefix("/users/")
        missing = await cache.purge_tag("nobody")
        statuses = [(await client.get(url)).headers["cache-status"] for url in ("/users/1", "/users/2", "/orders/2")]
    assert (by_tag, by_url, by_prefix, missing) == (1, 3, 1, 0)  # /orders/1: an index and two variants
    assert statuses == ["gateway; fwd=uri-miss; stored"] * 2 + ["gateway; hit; ttl=60"]


async def test_non_http_scopes_pass_through(make_cache: CacheFactory) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    cache = make_cache(app)

    async def nothing() -> dict[str, str]:
        return {"type": "lifespan.startup"}

    async def ignore(message: object) -> None:
        return None

    await cache({"type": "lifespan"}, nothing, ignore)
    assert seen == ["lifespan"]


async def test_json_problem_names_only_if_cached(make_cache: CacheFactory) -> None:
    async with client_for(make_cache(Upstream())) as client:
        miss = await client.get("/a", headers={"cache-control": "only-if-cached"})
    assert miss.headers["cache-status"] == "gateway; detail=only-if-cached"
    assert "only-if-cached" in json.loads(miss.content)["detail"]


async def test_head_miss_on_a_streamed_body_sends_headers_only(make_cache: CacheFactory) -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"cache-control", b"max-age=60")]})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})

    async with client_for(make_cache(streaming)) as client:
        head = await client.head("/a")
        get = await client.get("/a")
    assert (head.status_code, head.content, get.text) == (200, b"", "abcdef")
    assert get.headers["cache-status"] == "gateway; hit; ttl=60"


async def test_messages_are_relayed_in_order_and_a_missing_body_is_completed(make_cache: CacheFactory) -> None:
    """Other response messages (trailers here) pass through; an app that stops after its start
    message still gives the client a complete response."""

    async def with_trailers(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"abc"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"1")]})

    async def start_only(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})

    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    async def request() -> Message:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "scheme": "http", "path": "/a", "query_string": b"", "headers": []}
    await make_cache(with_trailers)(scope, request, record)
    await make_cache(start_only)({**scope, "path": "/b"}, request, record)
    assert [message["type"] for message in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.trailers",
        "http.response.start",
        "http.response.body",
    ]
    assert (sent[1]["body"], sent[4]["body"]) == (b"abc", b"")
