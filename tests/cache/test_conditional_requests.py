"""A client's conditional GET/HEAD answered by the cache itself (RFC 9111 §4.3.2), from a stored entry or from
the response it has just fetched, against every store."""

import pytest

from tests.cache.conftest import CacheFactory, Clock, Upstream, client_for

pytestmark = pytest.mark.anyio

LAST_MODIFIED = "Tue, 14 Nov 2023 22:00:00 GMT"
VALIDATED = {"cache-control": "max-age=60", "etag": '"v1"', "last-modified": LAST_MODIFIED, "x-extra": "1"}


async def test_a_matching_if_none_match_on_a_hit_is_304_with_age_and_cache_status(
    make_cache: CacheFactory, clock: Clock
) -> None:
    upstream = Upstream(VALIDATED)
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        clock.advance(5)
        answer = await client.get("/a", headers={"If-None-Match": 'W/"v0", W/"v1"'})
    assert (answer.status_code, answer.content, upstream.hits) == (304, b"", 1)
    assert sorted(answer.headers) == ["age", "cache-control", "cache-status", "date", "etag", "last-modified"]
    assert (answer.headers["age"], answer.headers["cache-status"]) == ("5", "gateway; hit; ttl=55")


@pytest.mark.parametrize(
    ("conditions", "status"),
    [
        ({"If-None-Match": '"v1"'}, 304),
        ({"If-None-Match": '"v2"'}, 200),
        ({"If-None-Match": "*"}, 304),
        ({"If-Modified-Since": LAST_MODIFIED}, 304),
        ({"If-Modified-Since": "Tue, 14 Nov 2023 21:59:59 GMT"}, 200),
        ({"If-None-Match": '"v2"', "If-Modified-Since": LAST_MODIFIED}, 200),  # If-None-Match decides (§13.2.2)
        ({"If-Modified-Since": "yesterday"}, 200),
    ],
    ids=["same-tag", "other-tag", "star", "same-date", "earlier-date", "tag-over-date", "malformed-date"],
)
async def test_conditions_are_evaluated_against_the_stored_response(
    make_cache: CacheFactory, conditions: dict[str, str], status: int
) -> None:
    upstream = Upstream(VALIDATED)
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        answer = await client.get("/a", headers=conditions)
    assert (answer.status_code, upstream.hits) == (status, 1)
    assert answer.text == ("" if status == 304 else "hit 1")


async def test_a_fill_asks_for_the_whole_response_stores_it_and_answers_the_client_304(
    make_cache: CacheFactory,
) -> None:
    upstream = Upstream(VALIDATED)
    upstream.not_modified_headers = {}  # it would answer 304 if the client's condition reached it
    async with client_for(make_cache(upstream)) as client:
        conditional = await client.get("/a", headers={"If-None-Match": '"v1"'})
        plain = await client.get("/a")
    assert "if-none-match" not in upstream.seen[0][1]
    assert (conditional.status_code, conditional.content) == (304, b"")
    assert conditional.headers["cache-status"] == "gateway; fwd=uri-miss; stored"
    assert (plain.status_code, plain.text, upstream.hits) == (200, "hit 1", 1)


async def test_a_fill_that_does_not_match_streams_the_body(make_cache: CacheFactory) -> None:
    upstream = Upstream(VALIDATED)
    async with client_for(make_cache(upstream)) as client:
        answer = await client.get("/a", headers={"If-None-Match": '"v0"'})
    assert (answer.status_code, answer.text) == (200, "hit 1")


async def test_a_conditional_head_is_304_too(make_cache: CacheFactory) -> None:
    upstream = Upstream(VALIDATED)
    async with client_for(make_cache(upstream)) as client:
        filled = await client.head("/a", headers={"If-None-Match": '"v1"'})
        hit = await client.head("/a", headers={"If-None-Match": '"v1"'})
    assert (filled.status_code, hit.status_code, upstream.hits) == (304, 304, 1)


async def test_only_successes_become_304(make_cache: CacheFactory) -> None:
    """Preconditions apply only to what would be a 2xx (RFC 9110 §13.2.1): a stored 404 is answered as is."""
    upstream = Upstream(VALIDATED, status=404)
    async with client_for(make_cache(upstream)) as client:
        filled = await client.get("/a", headers={"If-None-Match": '"v1"'})
        hit = await client.get("/a", headers={"If-None-Match": '"v1"'})
    assert (filled.status_code, hit.status_code, hit.text, upstream.hits) == (404, 404, "hit 1", 1)


async def test_responses_that_are_not_stored_are_still_answered_304(make_cache: CacheFactory) -> None:
    upstream = Upstream(VALIDATED | {"cache-control": "no-store"})
    async with client_for(make_cache(upstream)) as client:
        answer = await client.get("/a", headers={"If-None-Match": '"v1"'})
    assert (answer.status_code, answer.headers["cache-status"]) == (304, "gateway; fwd=uri-miss; detail=no-store")


async def test_stale_and_revalidated_answers_are_304_when_they_match(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream(VALIDATED | {"cache-control": "max-age=10, stale-while-revalidate=60"})
    upstream.not_modified_headers = {"cache-control": "max-age=10", "etag": '"v1"'}
    cache = make_cache(upstream, keep=600)
    async with client_for(cache) as client:
        await client.get("/a")
        clock.advance(11)
        stale = await client.get("/a", headers={"If-None-Match": '"v1"'})
        await cache.wait_background()
        clock.advance(100)
        revalidated = await client.get("/a", headers={"If-None-Match": '"v1"'})
    assert (stale.status_code, stale.headers["cache-status"]) == (
        304,
        "gateway; hit; ttl=-1; detail=stale-while-revalidate",
    )
    assert (revalidated.status_code, revalidated.headers["cache-status"]) == (
        304,
        "gateway; fwd=stale; fwd-status=304; stored; ttl=10",
    )
    assert upstream.hits == 3
