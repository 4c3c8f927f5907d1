"""Concurrent misses for one key send one request upstream: in one process, and across replicas
sharing Redis (each replica with its own client and its own in-process state)."""

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from asgi_gateway.middleware.cache import (
    CacheMiddleware,
    CacheOptions,
    CacheStore,
    KeyRules,
    MemoryStore,
    StoredResponse,
    UrlKey,
    url_key_for,
)
from tests.cache.conftest import Clock, ObservedStore, RedisStoreFactory, Upstream, client_for

pytestmark = pytest.mark.anyio


async def test_concurrent_misses_send_one_request_upstream(store: CacheStore, clock: Clock) -> None:
    observed = ObservedStore(store)
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    async with client_for(CacheMiddleware(upstream, store=observed, clock=clock)) as client:
        requests = [asyncio.create_task(client.get("/a")) for _ in range(50)]
        await upstream.arrived.wait()
        # every request has looked the key up (the leader twice when the lock is shared) and is waiting
        await observed.after_gets(50 if isinstance(store, MemoryStore) else 51).wait()
        upstream.gate.set()
        responses = await asyncio.gather(*requests)
    statuses = sorted(response.headers["cache-status"] for response in responses)
    assert upstream.hits == 1
    assert {response.text for response in responses} == {"hit 1"}
    assert statuses == ["gateway; fwd=uri-miss; collapsed; ttl=60"] * 49 + ["gateway; fwd=uri-miss; stored"]


async def test_followers_go_upstream_themselves_when_the_answer_cannot_be_shared(
    store: CacheStore, clock: Clock
) -> None:
    """A private answer is the leader's alone; afterwards the key skips coalescing for a while."""
    observed = ObservedStore(store)
    upstream = Upstream({"cache-control": "private"})
    upstream.gate = asyncio.Event()
    async with client_for(CacheMiddleware(upstream, store=observed, clock=clock)) as client:
        requests = [asyncio.create_task(client.get("/a")) for _ in range(5)]
        await upstream.arrived.wait()
        await observed.after_gets(5 if isinstance(store, MemoryStore) else 6).wait()
        upstream.gate.set()
        responses = await asyncio.gather(*requests)
        upstream.gate = None
        later = await asyncio.gather(*(client.get("/a") for _ in range(3)))
    assert sorted(response.text for response in responses) == [f"hit {n}" for n in range(1, 6)]
    assert (upstream.hits, {response.status_code for response in later}) == (8, {200})


@pytest.fixture
async def replicas(redis_url: str, redis_store: RedisStoreFactory) -> AsyncIterator[list[ObservedStore]]:
    """Two replicas' stores: separate clients on one Redis, one key prefix."""
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(2)]
    stores = [ObservedStore(redis_store(client)) for client in clients]
    yield stores
    for client in clients:
        await client.aclose()


async def test_two_replicas_sharing_redis_send_one_request_upstream(
    replicas: list[ObservedStore], clock: Clock, time_limit: float
) -> None:
    first, second = replicas
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    options = CacheOptions(lock_timeout=time_limit)  # A's lock outlasts the test: B can only get A's answer
    apps = [CacheMiddleware(upstream, store=store, options=options, clock=clock) for store in replicas]
    async with client_for(apps[0]) as client_a, client_for(apps[1]) as client_b:
        on_a = [asyncio.create_task(client_a.get("/a")) for _ in range(50)]
        await upstream.arrived.wait()
        await first.after_gets(51).wait()  # A's leader holds the fill lock and is upstream
        on_b = [asyncio.create_task(client_b.get("/a")) for _ in range(50)]
        await second.waiting.wait()  # B's leader found the lock and waits for the fill
        await second.after_gets(50).wait()
        upstream.gate.set()
        responses = await asyncio.gather(*on_a, *on_b)
    assert upstream.hits == 1
    assert {response.text for response in responses} == {"hit 1"}
    assert sum("collapsed" in response.headers["cache-status"] for response in responses) == 99


async def test_a_waiting_replica_goes_upstream_when_the_lock_holder_dies(
    replicas: list[ObservedStore], clock: Clock, time_limit: float
) -> None:
    dead, alive = replicas
    url = url_key_for("http://test/a", KeyRules())
    token = await dead.acquire(url, "h", time_limit)
    assert token
    upstream = Upstream()
    cache = CacheMiddleware(upstream, store=alive, options=CacheOptions(lock_timeout=time_limit), clock=clock)
    async with client_for(cache) as client:
        request = asyncio.create_task(client.get("/a"))
        await alive.waiting.wait()
        assert upstream.hits == 0
        await dead.release(url, "h", token)  # the holder is gone and so is its lock
        response = await request
    assert (upstream.hits, response.headers["cache-status"]) == (1, "gateway; fwd=uri-miss; stored")


async def test_a_waiting_replica_goes_upstream_when_the_lock_expires(
    replicas: list[ObservedStore], redis_client: redis.asyncio.Redis, redis_prefix: str, clock: Clock, time_limit: float
) -> None:
    dead, alive = replicas
    url = url_key_for("http://test/a", KeyRules())
    assert await dead.acquire(url, "h", time_limit)  # never released
    upstream = Upstream()
    cache = CacheMiddleware(upstream, store=alive, options=CacheOptions(lock_timeout=time_limit), clock=clock)
    async with client_for(cache) as client:
        request = asyncio.create_task(client.get("/a"))
        await alive.waiting.wait()
        assert upstream.hits == 0
        assert await redis_client.pexpire(f"{redis_prefix}{{{url.digest}}}!h", 1)  # its lease runs out now
        response = await request
    assert (upstream.hits, response.text) == (1, "hit 1")


async def test_background_refresh_runs_on_one_replica(
    replicas: list[ObservedStore], clock: Clock, time_limit: float
) -> None:
    upstream = Upstream({"cache-control": "max-age=10, stale-while-revalidate=60"})
    options = CacheOptions(lock_timeout=time_limit)  # A's lock outlasts the test: B's refresh must give up
    apps = [CacheMiddleware(upstream, store=store, options=options, clock=clock) for store in replicas]
    async with client_for(apps[0]) as client_a, client_for(apps[1]) as client_b:
        await client_a.get("/a")
        clock.advance(20)
        upstream.gate = asyncio.Event()
        upstream.arrived.clear()
        stale_a = await client_a.get("/a")
        await upstream.arrived.wait()  # A refreshes in the background, holding the fill lock
        stale_b = await client_b.get("/a")
        await apps[1].wait_background()  # B's refresh found the lock taken and gave up
        upstream.gate.set()
        await apps[0].wait_background()
        fresh_b = await client_b.get("/a")
    assert (stale_a.text, stale_b.text, fresh_b.text, upstream.hits) == ("hit 1", "hit 1", "hit 2", 2)


class FilledMeanwhile(ObservedStore):
    """Another replica's answer lands between this replica's lookup and its lock."""

    def __init__(self, inner: CacheStore, landed: StoredResponse) -> None:
        super().__init__(inner)
        self.landed = landed

    async def acquire(self, url: UrlKey, variant: str, lease: float) -> str | None:
        await self.inner.put(url, [(variant, self.landed)], retention=60, tags=())
        return await super().acquire(url, variant, lease)


async def test_an_answer_that_landed_before_the_lock_is_used(
    redis_client: redis.asyncio.Redis, redis_store: RedisStoreFactory, clock: Clock
) -> None:
    landed = StoredResponse(200, ((b"content-length", b"5"),), b"other", clock(), clock(), 0.0, 60.0)
    store = FilledMeanwhile(redis_store(redis_client), landed)
    upstream = Upstream()
    async with client_for(CacheMiddleware(upstream, store=store, clock=clock)) as client:
        response = await client.get("/a")
        again = await client.get("/a")
    assert (upstream.hits, response.text, again.text) == (0, "other", "other")
    assert response.headers["cache-status"] == "gateway; fwd=uri-miss; collapsed; ttl=60"
    assert await store.acquire(url_key_for("http://test/a", KeyRules()), "h", 1)  # the lock was released


async def test_a_waiting_replica_stops_waiting_after_its_lock_timeout(
    replicas: list[ObservedStore], clock: Clock, time_limit: float
) -> None:
    dead, alive = replicas
    assert await dead.acquire(url_key_for("http://test/a", KeyRules()), "h", time_limit)
    upstream = Upstream()
    cache = CacheMiddleware(upstream, store=alive, options=CacheOptions(lock_timeout=0.1), clock=clock)
    async with client_for(cache) as client:
        response = await client.get("/a")
    assert (upstream.hits, response.headers["cache-status"]) == (1, "gateway; fwd=uri-miss; stored")
