"""Caching through the gateway: memory and Redis stores, 304s from cache, invalidation, purge, outages."""

import asyncio
import tempfile

import pytest
import redis.asyncio

from tests.conftest import redis_server
from tests.gateway.conftest import TRUSTED_CLIENT, GatewayFactory, client_for
from tests.servers import serve
from tests.upstreams import Origin

pytestmark = pytest.mark.anyio

ROUTES = """
upstreams:
  origin: {url: "http://origin.internal"}
flags:
  layout:
    type: str
    default: classic
    rules: [{users: [u-1], value: modern}]
routes:
  - path: /items/{id}
    upstream: origin
    etag: {}
    cache: {ttl: 30, vary: [X-Tenant]}
    flags: [layout]
  - path: /dashboard/{id}
    fanout:
      calls:
        item: {upstream: origin, path: "/items/{id}", cache: {ttl: 30}}
        fresh: {upstream: origin, path: "/items/fresh-{id}"}
"""
TOKEN = {"Authorization": "Bearer t"}


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
def redis_settings(redis_url: str, redis_prefix: str, time_limit: float) -> dict[str, object]:
    """Redis calls budgeted by the test's time limit, as in the `redis_store` fixture: these tests are
    about routes, not about a loaded machine outlasting the production budget."""
    cache = {"redis_prefix": redis_prefix, "l1_bytes": 0, "redis_timeout": time_limit}
    return {"redis_url": redis_url, "cache": cache}


@pytest.fixture
async def cleanup(redis_client: redis.asyncio.Redis) -> redis.asyncio.Redis:
    return redis_client  # its teardown removes every key under this test's prefix


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_second_get_is_served_from_cache(
    make_gateway: GatewayFactory, origin: Origin, store: str, redis_settings: dict, cleanup: redis.asyncio.Redis
) -> None:
    settings = redis_settings if store == "redis" else {}
    app = make_gateway(ROUTES, upstreams={"origin": origin}, **settings)
    async with client_for(app) as client:
        first = await client.get("/items/1")
        second = await client.get("/items/1")
    assert origin.hits["GET /items/1"] == 1
    assert second.json() == first.json()
    assert first.headers["cache-status"].startswith("gateway; fwd=uri-miss; stored")
    assert second.headers["cache-status"].startswith("gateway; hit")
    assert int(second.headers["age"]) >= 0


async def test_if_none_match_on_a_cached_entry_is_304_without_the_upstream(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        etag = (await client.get("/items/1")).headers["etag"]
        again = await client.get("/items/1", headers={"If-None-Match": etag})
    assert (again.status_code, origin.hits["GET /items/1"]) == (304, 1)


async def test_vary_headers_and_flag_variants_separate_entries(make_gateway: GatewayFactory, origin: Origin) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin}, **TRUSTED_CLIENT)
    async with client_for(app) as client:
        for headers in ({}, {"X-Tenant": "a"}, {"Accept-Language": "fr"}, {"X-User-Id": "u-1"}, {"X-User-Id": "u-2"}):
            await client.get("/items/1", headers=headers)
            await client.get("/items/1", headers=headers)
    # u-2 resolves to the default variant, like the anonymous request: it shares that entry
    assert origin.hits["GET /items/1"] == 4


async def test_a_write_invalidates_the_cached_get(make_gateway: GatewayFactory, origin: Origin) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        await client.get("/items/1")
        await client.post("/items/1", content=b"{}")
        after = await client.get("/items/1")
    assert (after.json()["version"], origin.hits["GET /items/1"]) == (2, 2)


async def test_purge_by_tag_prefix_and_url_through_the_admin_api(
    make_gateway: GatewayFactory, origin: Origin, redis_settings: dict, cleanup: redis.asyncio.Redis
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin}, admin_token="t", **redis_settings)
    async with client_for(app) as client:
        for path in ("/items/1", "/items/2", "/items/3"):
            await client.get(path)
        by_tag = await client.post("/_gateway/admin/cache/purge", json={"tag": "item-1"}, headers=TOKEN)
        by_url = await client.post("/_gateway/admin/cache/purge", json={"url": "http://gw.test/items/2"}, headers=TOKEN)
        bad = await client.post("/_gateway/admin/cache/purge", json={"everything": True}, headers=TOKEN)
        for path in ("/items/1", "/items/2", "/items/3"):
            await client.get(path)
        by_prefix = await client.post("/_gateway/admin/cache/purge", json={"prefix": "/items/"}, headers=TOKEN)
        await client.get("/items/3")
    assert (by_tag.status_code, bad.status_code) == (200, 400)
    assert by_tag.json()["purged"] >= 1
    assert by_url.json()["purged"] >= 1
    assert by_prefix.json()["purged"] >= 3
    assert [origin.hits[f"GET /items/{n}"] for n in (1, 2, 3)] == [2, 2, 2]


async def test_fanout_branches_use_their_own_cache(make_gateway: GatewayFactory, origin: Origin) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        first = await client.get("/dashboard/7")
        second = await client.get("/dashboard/7")
        conditional = await client.get("/dashboard/7", headers={"If-None-Match": second.headers["etag"]})
    assert first.json()["item"] == {"id": "7", "version": 1, "lang": None}
    assert origin.hits["GET /items/7"] == 1  # the cached branch
    assert origin.hits["GET /items/fresh-7"] == 3  # the uncached one
    assert conditional.status_code == 304


@pytest.mark.integration
async def test_a_redis_outage_never_fails_a_request(make_gateway: GatewayFactory, origin: Origin) -> None:
    with tempfile.TemporaryDirectory() as workdir, redis_server(workdir) as (server, url):
        app = make_gateway(ROUTES, upstreams={"origin": origin}, redis_url=url, cache={"l1_bytes": 0})
        async with client_for(app) as client:
            cached = [await client.get("/items/1") for _ in range(2)]
            server.kill()
            server.wait(timeout=10)
            after = [await client.get("/items/1") for _ in range(3)]
    assert [response.status_code for response in cached + after] == [200] * 5
    assert origin.hits["GET /items/1"] >= 2  # the outage sent requests upstream again


@pytest.mark.integration
async def test_concurrent_misses_on_two_replicas_sharing_redis_send_one_request(
    make_gateway: GatewayFactory, redis_settings: dict, cleanup: redis.asyncio.Redis
) -> None:
    origin = Origin()
    async with serve(origin) as url:
        routes = ROUTES.replace("http://origin.internal", url)
        replicas = [make_gateway(routes, **redis_settings), make_gateway(routes, **redis_settings)]
        async with client_for(replicas[0]) as first, client_for(replicas[1]) as second:
            responses = await asyncio.gather(*(client.get("/items/9") for client in [first, second] * 25))
    assert {response.status_code for response in responses} == {200}
    assert origin.hits["GET /items/9"] == 1


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("cc=no-store", {}),
        ("cc=private,max-age=60", {}),
        ("cc=max-age=60", {"Authorization": "Bearer x"}),
        ("cc=max-age=60&cookie=1", {}),
    ],
    ids=["no-store", "private", "authorization", "set-cookie"],
)
async def test_what_a_shared_cache_must_not_store(
    make_gateway: GatewayFactory, origin: Origin, query: str, headers: dict[str, str]
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        for _ in range(2):
            await client.get(f"/items/1?{query}", headers=headers)
    assert origin.hits["GET /items/1"] == 2


async def test_age_counts_the_upstreams_age_too(make_gateway: GatewayFactory, origin: Origin) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        await client.get("/items/1?age=10")
        hit = await client.get("/items/1?age=10")
    assert int(hit.headers["age"]) >= 10


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    path = "/items/1?cc=max-age=0,stale-while-revalidate=60"
    async with client_for(app) as client:
        await client.get(path)
        origin.versions["1"] = 2
        stale = await asyncio.gather(*(client.get(path) for _ in range(5)))
        for cache in app.generation.caches:
            await cache.wait_background()
        refreshes = origin.hits["GET /items/1"] - 1
        fresh = await client.get(path)
    assert {response.json()["version"] for response in stale} == {1}
    assert {response.headers["cache-status"] for response in stale} == {
        "gateway; hit; ttl=0; detail=stale-while-revalidate"
    }
    assert refreshes == 1  # five stale answers, one background refresh
    assert fresh.json()["version"] == 2


async def test_stale_if_error_serves_stale_while_the_upstream_fails(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    path = "/items/1?cc=max-age=0,stale-if-error=60"
    async with client_for(app) as client:
        await client.get(path)
        origin.failing = True
        during = await client.get(path)
    assert (during.status_code, during.json()["version"]) == (200, 1)


async def test_a_stale_entry_is_revalidated_and_a_304_refreshes_it(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    routes = ROUTES + '  - {path: "/own-etag/{id}", upstream: origin, cache: {keep: 60}}\n'
    app = make_gateway(routes, upstreams={"origin": origin})
    async with client_for(app) as client:
        first = await client.get("/own-etag/1?cc=max-age=0")
        again = await client.get("/own-etag/1?cc=max-age=0")
    assert (again.status_code, again.json()) == (200, first.json())
    assert "revalidated" in again.headers["cache-status"] or "fwd=stale" in again.headers["cache-status"]
    assert origin.hits["GET /own-etag/1"] == 2  # the second answer was a 304: no body moved


async def test_generated_etags_are_stored_and_revalidate_the_entry(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    """The tag is made below the cache: a stale entry is revalidated with it, and an unchanged body
    comes back as a 304 that refreshes the entry (the upstream itself knows nothing of the tag)."""
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        first = await client.get("/items/1?cc=max-age=0")
        again = await client.get("/items/1?cc=max-age=0", headers={"If-None-Match": first.headers["etag"]})
        origin.versions["1"] = 2
        changed = await client.get("/items/1?cc=max-age=0")
    assert again.status_code == 304
    assert origin.hits["GET /items/1"] == 3  # every request revalidated, the stale entry being kept
    assert changed.json()["version"] == 2
    assert changed.headers["etag"] != first.headers["etag"]
