"""RedisStore against the real Redis: layout, ttls, cluster slots, round trips, purges, failures."""

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from redis.crc import key_slot

from asgi_gateway.middleware.cache import (
    CacheMiddleware,
    KeyRules,
    MemoryStore,
    RedisStore,
    StoredResponse,
    StoreUnavailable,
    TieredStore,
    VaryIndex,
)
from asgi_gateway.middleware.cache.keys import UrlKey, url_key_for
from tests.cache.conftest import Clock, RedisStoreFactory, Upstream, client_for
from tests.conftest import redis_server

pytestmark = pytest.mark.anyio

URL = url_key_for("http://test/users/7?b=1&a=2", KeyRules())
BINARY = bytes(range(256)) * 4


BASE = StoredResponse(
    status=200,
    headers=((b"content-type", b"application/octet-stream"), (b"x-bin", bytes(range(128, 256)))),
    body=b"body",
    request_time=1.0,
    response_time=2.0,
    initial_age=0.0,
    lifetime=60.0,
)


def entry(body: bytes = b"body", **fields: Any) -> StoredResponse:
    return replace(BASE, body=body, **fields)


@pytest.fixture
def store(redis_client: redis.asyncio.Redis, redis_store: RedisStoreFactory) -> RedisStore:
    return redis_store(redis_client)


async def test_records_round_trip_binary_safe(store: RedisStore) -> None:
    stored = entry(BINARY, vary=(("accept", "text/html"), ("accept-language", None)), tags=("a", "b"))
    await store.put(URL, [("h", stored)], retention=60, tags=())
    assert await store.get(URL, "h") == stored
    assert await store.get(URL, "other") is None


async def test_entries_expire_in_redis_and_an_index_keeps_its_longest_ttl(
    store: RedisStore, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    await store.put(URL, [("h", VaryIndex(("accept",))), ("h.1", entry())], retention=100, tags=())
    await store.put(URL, [("h", VaryIndex(("accept",))), ("h.2", entry())], retention=10, tags=())
    base = f"{redis_prefix}{{{URL.digest}}}"
    index, long_lived, short_lived = [await redis_client.pttl(f"{base}:{v}") for v in ("h", "h.1", "h.2")]
    assert 90_000 < index <= 100_000
    assert 90_000 < long_lived <= 100_000
    assert 0 < short_lived <= 10_000
    assert 90_000 < await redis_client.pttl(f"{base}#{URL.path}") <= 100_000


async def test_a_urls_keys_share_one_cluster_slot(
    store: RedisStore, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """The hash tag keeps an entry, its index, its member set and its lock in one slot, so the write
    transaction and the invalidation work on Redis Cluster."""
    await store.put(URL, [("h", VaryIndex(("accept",))), ("h.1", entry())], retention=60, tags=("t",))
    token = await store.acquire(URL, "h.1", 5)
    keys = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}{{*")]
    assert token
    assert len(keys) == 4  # index, entry, member set, lock
    assert len({key_slot(key) for key in keys}) == 1


async def test_a_foreign_value_reads_as_a_miss(
    store: RedisStore, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    await redis_client.set(f"{redis_prefix}{{{URL.digest}}}:h", b"\x01\x00\x00\x00\x09not json")
    assert await store.get(URL, "h") is None


async def test_purges(store: RedisStore) -> None:
    users = [url_key_for(f"http://test/users/{n}", KeyRules()) for n in range(3)]
    orders = url_key_for("http://test/orders/1", KeyRules())
    star = url_key_for("http://test/st*r/1", KeyRules())
    plain = url_key_for("http://test/stair/1", KeyRules())
    for url in users:
        await store.put(url, [("h", entry())], retention=60, tags=("users", url.path))
    await store.put(orders, [("h", VaryIndex(("accept",))), ("h.1", entry()), ("h.2", entry())], retention=60, tags=())
    await store.put(star, [("h", entry())], retention=60, tags=())
    await store.put(plain, [("h", entry())], retention=60, tags=())

    assert await store.purge_tag("/users/0") == 1
    assert await store.purge_prefix("/users/") == 2
    assert await store.purge_tag("users") == 0  # already gone with their prefix
    assert await store.purge_prefix("/st*") == 1  # glob characters in paths are matched literally
    assert await store.delete(orders) == 3
    assert [await store.get(url, "h") for url in [*users, orders, star]] == [None] * 5
    assert await store.get(plain, "h") == entry()


async def test_fill_lock(store: RedisStore) -> None:
    token = await store.acquire(URL, "h", 5)
    assert token
    assert await store.acquire(URL, "h", 5) is None
    await store.release(URL, "h", "someone-else")  # only the holder releases
    assert await store.acquire(URL, "h", 5) is None
    await store.release(URL, "h", token)
    assert await store.acquire(URL, "h", 5)


async def test_wait_filled_sees_the_record_land(
    store: RedisStore, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    token = await store.acquire(URL, "h", 5)
    assert token
    await store.put(URL, [("h", entry())], retention=60, tags=())
    assert await store.wait_filled(URL, "h", 5) is True


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[redis.asyncio.Redis, subprocess.Popen[str]]]:
    """A private redis-server: its command statistics are this test's alone, and it may be killed."""
    with redis_server(str(tmp_path)) as (proc, url):
        client = redis.asyncio.Redis.from_url(url)
        try:
            yield client, proc
        finally:
            await client.aclose()


@pytest.mark.integration
async def test_a_hit_is_one_round_trip(
    own_redis: tuple[redis.asyncio.Redis, subprocess.Popen[str]], clock: Clock
) -> None:
    client, _ = own_redis
    upstream = Upstream()
    cache = CacheMiddleware(upstream, store=RedisStore(client, prefix="c:"), clock=clock)
    async with client_for(cache) as http:
        await http.get("/a")
        await client.config_resetstat()
        hit = await http.get("/a")
        stats = await client.info("commandstats")
    assert hit.headers["cache-status"] == "gateway; hit; ttl=60"
    calls = {
        name: value["calls"] for name, value in stats.items() if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }
    assert calls == {"cmdstat_get": 1}


@pytest.mark.integration
async def test_concurrent_reads_of_one_key_share_one_get_and_one_connection(
    own_redis: tuple[redis.asyncio.Redis, subprocess.Popen[str]],
) -> None:
    """A burst for one URL must not open a connection per request: on a loaded machine the connects alone
    outlast the call budget, and the store would then step aside for everyone."""
    client, _ = own_redis
    store = RedisStore(client, prefix="c:")
    await store.put(URL, [("h", entry())], retention=60, tags=())
    await client.config_resetstat()
    hits = await asyncio.gather(*(store.get(URL, "h") for _ in range(50)))
    misses = await asyncio.gather(*(store.get(URL, "other") for _ in range(50)))
    stats = await client.info("commandstats")
    assert hits == [entry()] * 50
    assert misses == [None] * 50
    assert stats["cmdstat_get"]["calls"] == 2
    assert len(await client.client_list()) == 1
    assert store.available


@pytest.mark.integration
async def test_a_burst_of_different_urls_waits_for_a_bounded_set_of_connections(
    own_redis: tuple[redis.asyncio.Redis, subprocess.Popen[str]], time_limit: float
) -> None:
    client, _ = own_redis
    where = client.get_connection_kwargs()
    store = RedisStore.from_url(
        f"redis://{where['host']}:{where['port']}/0", prefix="c:", timeout=time_limit, max_connections=4
    )
    try:
        misses = await asyncio.gather(
            *(store.get(url_key_for(f"http://test/{n}", KeyRules()), "h") for n in range(100))
        )
        connected = len(await client.client_list()) - 1  # less the one asking
    finally:
        await store.aclose()
    assert misses == [None] * 100
    assert 1 <= connected <= 4
    assert store.available


class _Breaking:
    """A monotonic clock for the breaker that tests move by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.integration
async def test_killed_redis_degrades_to_pass_through(
    own_redis: tuple[redis.asyncio.Redis, subprocess.Popen[str]], clock: Clock
) -> None:
    client, proc = own_redis
    breaker_clock = _Breaking()
    store = RedisStore(client, prefix="c:", timeout=0.5, cooldown=5, clock=breaker_clock)
    upstream = Upstream()
    cache = CacheMiddleware(upstream, store=store, clock=clock)
    async with client_for(cache) as http:
        await http.get("/a")
        assert (await http.get("/a")).text == "hit 1"
        proc.terminate()
        proc.wait()
        with pytest.raises(StoreUnavailable, match="Connection"):
            await cache.purge_url("http://test/a")  # an operator learns that a purge did not happen
        breaker_clock.now += 6
        failing = await http.get("/a")
        bypassed = await http.get("/a")
        posted = await http.post("/a")  # its invalidation cannot happen; the request still succeeds
        breaker_clock.now += 6  # cool-down over: Redis is tried again, and is still down
        retried = await http.get("/a")
    assert [r.status_code for r in (failing, bypassed, posted, retried)] == [200, 200, 200, 200]
    assert [r.text for r in (failing, bypassed, retried)] == ["hit 2", "hit 3", "hit 5"]
    assert {r.headers["cache-status"] for r in (failing, bypassed, retried)} == {"gateway; fwd=bypass"}
    assert store.available is False
    with pytest.raises(StoreUnavailable, match="cooling down"):
        await cache.purge_tag("anything")


@pytest.mark.integration
async def test_a_tiered_store_keeps_serving_hot_keys_while_redis_is_down(
    own_redis: tuple[redis.asyncio.Redis, subprocess.Popen[str]], clock: Clock
) -> None:
    client, proc = own_redis
    store = TieredStore(l1=MemoryStore(clock=clock), l2=RedisStore(client, prefix="c:", timeout=0.5), l1_ttl=10)
    upstream = Upstream()
    cache = CacheMiddleware(upstream, store=store, clock=clock)
    async with client_for(cache) as http:
        await http.get("/a")
        proc.terminate()
        proc.wait()
        hot = await http.get("/a")
        cold = await http.get("/b")
        cold_again = await http.get("/b")
    assert (hot.text, hot.headers["cache-status"]) == ("hit 1", "gateway; hit; ttl=60")
    assert (cold.text, cold_again.text, upstream.hits) == ("hit 2", "hit 2", 2)  # L1 alone still caches


@pytest.mark.integration
async def test_frozen_redis_times_out_and_is_retried_after_the_cooldown(
    own_redis: tuple[redis.asyncio.Redis, subprocess.Popen[str]], clock: Clock
) -> None:
    """A Redis that stops answering costs one request `timeout`, then none until the cool-down ends."""
    client, proc = own_redis
    breaker_clock = _Breaking()
    store = RedisStore(client, prefix="c:", timeout=0.1, cooldown=5, clock=breaker_clock)
    upstream = Upstream()
    cache = CacheMiddleware(upstream, store=store, clock=clock)
    async with client_for(cache) as http:
        await http.get("/a")
        proc.send_signal(signal.SIGSTOP)
        slow = await http.get("/a")
        bypassed = await http.get("/a")
        proc.send_signal(signal.SIGCONT)
        breaker_clock.now += 6
        recovered = await http.get("/a")
    assert [r.text for r in (slow, bypassed)] == ["hit 2", "hit 3"]
    assert (recovered.text, recovered.headers["cache-status"]) == ("hit 1", "gateway; hit; ttl=60")


async def test_from_url_owns_its_client(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    try:
        await store.put(URL, [("h", entry())], retention=5, tags=())
        assert await store.get(URL, "h") == entry()
        assert await store.delete(URL) == 1
    finally:
        await store.aclose()


@pytest.mark.parametrize("options", [{"timeout": 0}, {"purge_timeout": 0}, {"cooldown": -1}])
def test_store_options_are_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="timeout"):
        RedisStore(redis.asyncio.Redis(), **options)


def test_url_key_is_a_value() -> None:
    assert url_key_for("http://test/users/7?a=2&b=1", KeyRules()) == URL == UrlKey(URL.digest, "/users/7")
