"""Stale entries: revalidation with validators (RFC 9111 §4.3), stale-while-revalidate and
stale-if-error (RFC 5861), against every store."""

import asyncio

import pytest

from tests.cache.conftest import CacheFactory, Clock, Upstream, client_for

pytestmark = pytest.mark.anyio


def validated(max_age: int = 10, **extra: str) -> dict[str, str]:
    return {"cache-control": f"max-age={max_age}", "etag": '"v1"', "last-modified": "Tue, 14 Nov 2023 22:00:00 GMT"} | {
        key.replace("_", "-"): value for key, value in extra.items()
    }


async def test_revalidation_sends_validators_and_a_304_refreshes_without_the_body(
    make_cache: CacheFactory, clock: Clock
) -> None:
    upstream = Upstream(validated(x_version="1"))
    upstream.not_modified_headers = {"cache-control": "max-age=100", "etag": '"v1"', "x-version": "2"}
    async with client_for(make_cache(upstream, keep=600)) as client:
        await client.get("/a")
        clock.advance(11)
        revalidated = await client.get("/a")
        clock.advance(50)
        hit = await client.get("/a")
    method, sent = upstream.seen[1]
    assert (method, sent["if-none-match"], sent["if-modified-since"]) == (
        "GET",
        '"v1"',
        "Tue, 14 Nov 2023 22:00:00 GMT",
    )
    assert upstream.hits == 2
    assert (revalidated.status_code, revalidated.text, revalidated.headers["x-version"]) == (200, "hit 1", "2")
    assert revalidated.headers["cache-status"] == "gateway; fwd=stale; fwd-status=304; stored; ttl=100"
    assert (revalidated.headers["content-length"], revalidated.headers["age"]) == ("5", "0")
    assert (hit.text, hit.headers["x-version"], hit.headers["cache-status"]) == ("hit 1", "2", "gateway; hit; ttl=50")


async def test_revalidation_answered_200_replaces_the_entry(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream(validated())
    async with client_for(make_cache(upstream, keep=600)) as client:
        await client.get("/a")
        clock.advance(11)
        upstream.headers = validated(etag='"v2"')
        replaced = await client.get("/a")
        after = await client.get("/a")
    assert (replaced.text, replaced.headers["cache-status"]) == ("hit 2", "gateway; fwd=stale; fwd-status=200; stored")
    assert (after.text, after.headers["etag"]) == ("hit 2", '"v2"')


async def test_a_304_about_another_representation_is_followed_by_a_plain_request(
    make_cache: CacheFactory, clock: Clock
) -> None:
    """RFC 9111 §4.3.4: a 304 whose validator does not match the stored one updates nothing."""
    upstream = Upstream(validated())
    upstream.not_modified_headers = {"etag": '"v0"'}
    async with client_for(make_cache(upstream, keep=600)) as client:
        await client.get("/a")
        clock.advance(11)
        upstream.headers = validated(etag='"v1"')  # still matches what we send, but the 304 names "v0"
        response = await client.get("/a")
    assert upstream.hits == 3
    assert "if-none-match" not in upstream.seen[2][1]
    assert (response.text, response.headers["cache-status"]) == ("hit 3", "gateway; fwd=stale; fwd-status=200; stored")


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream({"cache-control": "max-age=10, stale-while-revalidate=60"})
    cache = make_cache(upstream)
    async with client_for(cache) as client:
        await client.get("/a")
        clock.advance(15)
        upstream.gate = asyncio.Event()
        upstream.arrived.clear()
        stale = await asyncio.gather(*(client.get("/a") for _ in range(10)))
        await upstream.arrived.wait()
        upstream.gate.set()
        await cache.wait_background()
        fresh = await client.get("/a")
    assert upstream.hits == 2
    assert {response.text for response in stale} == {"hit 1"}
    assert stale[0].headers["cache-status"] == "gateway; hit; ttl=-5; detail=stale-while-revalidate"
    assert (stale[0].headers["age"], fresh.text, fresh.headers["cache-status"]) == (
        "15",
        "hit 2",
        "gateway; hit; ttl=10",
    )


async def test_route_stale_while_revalidate_applies_when_the_upstream_says_nothing(
    make_cache: CacheFactory, clock: Clock
) -> None:
    upstream = Upstream({"cache-control": "max-age=10"})
    cache = make_cache(upstream, stale_while_revalidate=30)
    async with client_for(cache) as client:
        await client.get("/a")
        clock.advance(20)
        stale = await client.get("/a")
        await cache.wait_background()
        clock.advance(25)  # 15 s past the refreshed entry's freshness: inside its window again
        stale_again = await client.get("/a")
        await cache.wait_background()
    assert (stale.text, stale_again.text, upstream.hits) == ("hit 1", "hit 2", 3)


async def test_must_revalidate_forbids_serving_stale(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream(validated() | {"cache-control": "max-age=10, must-revalidate"})
    async with client_for(make_cache(upstream, stale_while_revalidate=30, stale_if_error=30, keep=600)) as client:
        await client.get("/a")
        clock.advance(15)
        upstream.status = 503
        upstream.headers = {}
        response = await client.get("/a")
    assert (response.status_code, response.headers["cache-status"]) == (
        503,
        "gateway; fwd=stale; fwd-status=503; detail=no-freshness",
    )


@pytest.mark.parametrize("failure", ["raises", "503", "502"])
async def test_stale_if_error_serves_stale_when_the_upstream_fails(
    make_cache: CacheFactory, clock: Clock, failure: str
) -> None:
    upstream = Upstream({"cache-control": "max-age=10, stale-if-error=60"})
    async with client_for(make_cache(upstream)) as client:
        await client.get("/a")
        clock.advance(30)
        if failure == "raises":
            upstream.error = ConnectionRefusedError("upstream down")
        else:
            upstream.status, upstream.headers = int(failure), {}
        response = await client.get("/a")
    forwarded = "" if failure == "raises" else f"; fwd-status={failure}"
    assert (response.status_code, response.text) == (200, "hit 1")
    assert response.headers["cache-status"] == f"gateway; fwd=stale{forwarded}; ttl=-20; detail=stale-if-error"


async def test_stale_if_error_window_ends(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream({"cache-control": "max-age=10"})
    async with client_for(make_cache(upstream, stale_if_error=20, keep=600)) as client:
        await client.get("/a")
        clock.advance(31)
        upstream.status, upstream.headers = 503, {}
        response = await client.get("/a")
    assert (response.status_code, response.text) == (503, "hit 2")


async def test_stale_if_error_covers_a_slow_upstream(make_cache: CacheFactory, clock: Clock) -> None:
    """Past `error_timeout` the upstream counts as failed while a stale answer is there to give."""
    upstream = Upstream({"cache-control": "max-age=10"})
    cache = make_cache(upstream, stale_if_error=60, error_timeout=0.05)
    async with client_for(cache) as client:
        await client.get("/a")
        clock.advance(15)
        upstream.gate = asyncio.Event()  # never released: the upstream hangs
        response = await client.get("/a")
    assert (response.status_code, response.text, upstream.hits) == (200, "hit 1", 2)
    assert response.headers["cache-status"] == "gateway; fwd=stale; ttl=-5; detail=stale-if-error"


async def test_a_failing_upstream_without_stale_entry_is_not_hidden(make_cache: CacheFactory) -> None:
    upstream = Upstream()
    upstream.error = RuntimeError("boom")
    async with client_for(make_cache(upstream, stale_if_error=60)) as client:
        with pytest.raises(RuntimeError, match="boom"):
            await client.get("/a")


async def test_aclose_cancels_a_hanging_background_refresh(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream({"cache-control": "max-age=1, stale-while-revalidate=60"})
    cache = make_cache(upstream)
    async with client_for(cache) as client:
        await client.get("/a")
        clock.advance(5)
        upstream.gate = asyncio.Event()  # the refresh will hang
        upstream.arrived.clear()
        stale = await client.get("/a")
        await upstream.arrived.wait()
    await cache.aclose(grace=0.01)
    assert (stale.text, upstream.hits) == ("hit 1", 2)
    await cache.wait_background()  # nothing left running


async def test_a_304_that_forbids_storing_answers_once_and_stores_nothing(
    make_cache: CacheFactory, clock: Clock
) -> None:
    upstream = Upstream(validated())
    upstream.not_modified_headers = {"cache-control": "no-store", "etag": '"v1"'}
    async with client_for(make_cache(upstream, keep=600)) as client:
        await client.get("/a")
        clock.advance(11)
        answered = await client.get("/a")
        again = await client.get("/a")
    assert (upstream.hits, answered.text, again.text) == (3, "hit 1", "hit 1")
    assert answered.headers["cache-status"] == "gateway; fwd=stale; fwd-status=304; detail=no-store; ttl=-1"


async def test_a_failed_background_refresh_keeps_the_stale_entry(
    make_cache: CacheFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = Upstream({"cache-control": "max-age=10, stale-while-revalidate=60"})
    cache = make_cache(upstream)
    async with client_for(cache) as client:
        await client.get("/a")
        clock.advance(15)
        upstream.error = RuntimeError("upstream broke")
        first = await client.get("/a")
        await cache.wait_background()
        second = await client.get("/a")
        await cache.wait_background()
    assert (first.text, second.text, upstream.hits) == ("hit 1", "hit 1", 3)
    assert [record.message for record in caplog.records] == ["Background refresh of /a failed"] * 2


async def test_error_timeout_does_not_apply_once_the_upstream_answers(make_cache: CacheFactory, clock: Clock) -> None:
    upstream = Upstream({"cache-control": "max-age=10"})
    cache = make_cache(upstream, stale_if_error=60, error_timeout=5)
    async with client_for(cache) as client:
        await client.get("/a")
        clock.advance(15)
        refreshed = await client.get("/a")
    assert (refreshed.text, refreshed.headers["cache-status"]) == (
        "hit 2",
        "gateway; fwd=stale; fwd-status=200; stored",
    )


async def test_an_honoured_client_no_cache_revalidates_a_fresh_entry(make_cache: CacheFactory) -> None:
    """RFC 9111 §5.2.1.4: the stored response may be used once the upstream has validated it."""
    upstream = Upstream(validated(max_age=60))
    upstream.not_modified_headers = {"cache-control": "max-age=60", "etag": '"v1"'}
    async with client_for(make_cache(upstream, honour_client_no_cache=True)) as client:
        await client.get("/a")
        validated_again = await client.get("/a", headers={"cache-control": "no-cache"})
    assert (upstream.hits, validated_again.text, upstream.seen[1][1]["if-none-match"]) == (2, "hit 1", '"v1"')
    assert validated_again.headers["cache-status"] == "gateway; fwd=request; fwd-status=304; stored; ttl=60"
