"""RateLimitMiddleware on a plain Starlette app: GCRA in memory and in a real Redis, and a Redis that is down."""

import asyncio
import math
import random
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_gateway.middleware.ratelimit import MemoryLimiter, Quota, RateLimitMiddleware, RedisLimiter, header_key
from tests.conftest import redis_server

pytestmark = pytest.mark.anyio


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def limited_app(**kwargs: Any) -> Starlette:
    return Starlette(routes=[Route("/", hello)], middleware=[Middleware(RateLimitMiddleware, **kwargs)])


@pytest.fixture
async def own_redis() -> AsyncIterator[redis.asyncio.Redis]:
    """A Redis of this test's own, so that its command counts are this test's alone."""
    with tempfile.TemporaryDirectory() as workdir, redis_server(workdir) as (_, url):
        client = redis.asyncio.Redis.from_url(url)
        yield client
        await client.aclose()


async def script_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def get_many(app: Starlette, count: int, **kwargs: object) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return [await client.get("/", **kwargs) for _ in range(count)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("quota", "steps", "expected"),
    [
        (Quota(2, 60), [0, 0, 0], [(True, 1), (True, 0), (False, 0)]),
        (Quota(2, 60), [0, 0, 30], [(True, 1), (True, 0), (True, 0)]),  # one interval later, one more
        (Quota(2, 60, burst=1), [0, 0, 30], [(True, 0), (False, 0), (True, 0)]),
        (Quota(10, 1, burst=3), [0, 0, 0, 0], [(True, 2), (True, 1), (True, 0), (False, 0)]),
    ],
    ids=["burst-spent", "refills-by-interval", "burst-of-one", "burst-below-requests"],
)
async def test_memory_limiter_follows_gcra(quota: Quota, steps: list[float], expected: list[tuple[bool, int]]) -> None:
    clock = Clock()
    limiter = MemoryLimiter(quota, clock=clock)
    seen = []
    for step in steps:
        clock.now += step
        decision = await limiter.hit("k")
        seen.append((decision.allowed, decision.remaining))
    assert seen == expected


async def test_a_quota_of_one_lets_the_first_request_in_at_any_clock_reading() -> None:
    """Adding the interval and taking it away again is not exact in floating point (1000.123456789 + 60 - 60)."""
    limiter = MemoryLimiter(Quota(1, 60), clock=Clock(1000.123456789))
    assert [(await limiter.hit("k")).allowed for _ in range(2)] == [True, False]


async def test_refusal_is_a_429_problem_with_retry_after_and_ratelimit_fields() -> None:
    clock = Clock()
    app = limited_app(limiter=MemoryLimiter(Quota(2, 60), clock=clock))
    ok, _, refused = await get_many(app, 3)
    assert (ok.status_code, ok.headers["ratelimit-policy"], ok.headers["ratelimit"]) == (
        200,
        '"default";q=2;w=60',
        '"default";r=1;t=30',
    )
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert (refused.headers["retry-after"], refused.headers["ratelimit"]) == ("30", '"default";r=0;t=60')
    assert refused.json()["status"] == 429
    clock.now += 30
    [again] = await get_many(app, 1)
    assert again.status_code == 200


async def test_clients_are_counted_apart_by_their_key() -> None:
    app = limited_app(limiter=MemoryLimiter(Quota(1, 60), clock=Clock()), key=header_key("X-Tenant"))
    statuses = [r.status_code for r in await get_many(app, 2, headers={"X-Tenant": "a"})]
    statuses += [r.status_code for r in await get_many(app, 1, headers={"X-Tenant": "b"})]
    statuses += [r.status_code for r in await get_many(app, 2)]  # no header: the peer address, one more client
    assert statuses == [200, 429, 200, 200, 429]


async def test_memory_limiter_forgets_the_least_recent_key_past_its_bound() -> None:
    limiter = MemoryLimiter(Quota(1, 60), max_keys=2, clock=Clock())
    assert [(await limiter.hit(key)).allowed for key in ("a", "b", "a", "c", "b")] == [True, True, False, True, True]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"requests": 0, "per": 1},
        {"requests": 1, "per": 0},
        {"requests": 1, "per": 1, "burst": 0},
        {"requests": 1.5, "per": 1},
    ],
)
def test_quota_refuses_what_cannot_limit(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Quota(**kwargs)  # type: ignore[arg-type]


async def test_redis_limits_are_shared_by_replicas(redis_client: redis.asyncio.Redis, redis_prefix: str) -> None:
    clock = Clock()
    replicas = [RedisLimiter(Quota(3, 60), client=redis_client, prefix=redis_prefix, clock=clock) for _ in range(2)]
    decisions = [await replicas[index % 2].hit("ip:198.51.100.1") for index in range(4)]
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert decisions[3].retry_after == pytest.approx(20)
    clock.now += 20
    assert (await replicas[0].hit("ip:198.51.100.1")).allowed
    keys = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}*")]
    assert keys == [f"{redis_prefix}{{ip:198.51.100.1}}".encode()]  # the client key is the Cluster hash tag
    assert 0 < await redis_client.pttl(keys[0]) <= 60_000


async def test_redis_keys_keep_braces_out_of_the_hash_tag(redis_client: redis.asyncio.Redis, redis_prefix: str) -> None:
    limiter = RedisLimiter(Quota(1, 60), client=redis_client, prefix=redis_prefix, clock=Clock())
    await limiter.hit("user:{a}%")
    assert [key async for key in redis_client.scan_iter(match=f"{redis_prefix}*")] == [
        f"{redis_prefix}{{user:%7Ba%7D%25}}".encode()
    ]


async def test_redis_limiter_uses_the_server_clock_by_default(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    app = limited_app(limiter=RedisLimiter(Quota(2, 3600), client=redis_client, prefix=redis_prefix))
    responses = await get_many(app, 3)
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].headers["retry-after"] == "1800"


async def test_a_redis_that_is_down_lets_requests_through_and_says_so() -> None:
    errors: list[RedisError] = []
    with tempfile.TemporaryDirectory() as workdir, redis_server(workdir) as (proc, url):
        client = redis.asyncio.Redis.from_url(url)
        limiter = RedisLimiter(Quota(1, 60), client=client, clock=Clock(), on_error=errors.append)
        assert (await limiter.hit("k")).allowed
        proc.kill()
        proc.wait(timeout=10)
        responses = await get_many(limited_app(limiter=limiter), 3)
        together = await asyncio.gather(*(limiter.hit("other") for _ in range(3)))
        await client.aclose()
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [d.allowed for d in together] == [True, True, True]
    assert len(errors) == 4  # one per round trip: requests waiting for one share its failure
    assert responses[0].headers["ratelimit"] == '"default";r=1;t=0'


async def test_one_replica_answers_as_one_process_would_with_few_round_trips(own_redis: redis.asyncio.Redis) -> None:
    clock = Clock(1000.0)
    limiter = RedisLimiter(Quota(1000, 60), client=own_redis, clock=clock)
    seen = []
    for step in [0.0] * 1001 + [0.06, 0.06, 1.5, 0.06]:  # the burst spent, then refilled an interval at a time
        clock.now += step
        decision = await limiter.hit("k")
        seen.append((decision.allowed, decision.remaining))
    assert seen == [(True, 999 - index) for index in range(1000)] + [
        (False, 0),
        (True, 0),
        (True, 0),
        (True, 24),
        (True, 24),
    ]
    assert await script_calls(own_redis) <= 25  # leases of 1, 2, 4 ... 100 cells, then one call per refill


async def test_a_refusal_is_repeated_locally_until_its_retry_time(own_redis: redis.asyncio.Redis) -> None:
    clock = Clock()
    replicas = [RedisLimiter(Quota(2, 60), client=own_redis, clock=clock) for _ in range(2)]
    assert [(await replicas[0].hit("k")).allowed for _ in range(2)] == [True, True]
    first = await replicas[1].hit("k")  # this replica learns of the spent quota from Redis
    calls = await script_calls(own_redis)
    clock.now += 29
    again = [await replica.hit("k") for replica in replicas for _ in range(5)]
    assert await script_calls(own_redis) == calls
    assert not first.allowed
    assert first.retry_after == pytest.approx(30)
    assert not any(d.allowed for d in again)
    assert [d.retry_after for d in again] == pytest.approx([1.0] * 10)
    clock.now += 1
    assert (await replicas[1].hit("k")).allowed
    assert await script_calls(own_redis) == calls + 1


async def test_a_replica_forgets_the_least_recent_client_past_its_bound(own_redis: redis.asyncio.Redis) -> None:
    limiter = RedisLimiter(Quota(1, 60), client=own_redis, clock=Clock(), max_keys=1)
    decisions = [await limiter.hit("a"), await limiter.hit("a")]
    calls = await script_calls(own_redis)
    decisions += [await limiter.hit("b"), await limiter.hit("a")]
    assert [d.allowed for d in decisions] == [True, False, True, False]
    assert await script_calls(own_redis) == calls + 2  # "a" was forgotten: Redis refuses it this time


async def test_concurrent_requests_for_one_client_share_a_round_trip(own_redis: redis.asyncio.Redis) -> None:
    limiter = RedisLimiter(Quota(100, 60), client=own_redis, clock=Clock())
    await limiter.hit("warm")  # loads the script
    calls = await script_calls(own_redis)
    decisions = await asyncio.gather(*(limiter.hit("k") for _ in range(5)))
    assert sorted(d.remaining for d in decisions) == [95, 96, 97, 98, 99]
    assert await script_calls(own_redis) == calls + 2  # the first cell, then one lease for the four that waited


async def test_a_replica_runs_ahead_of_redis_by_a_tenth_of_the_burst_at_most(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    clock = Clock()
    first, second = (RedisLimiter(Quota(100, 60), client=redis_client, prefix=redis_prefix, clock=clock) for _ in "ab")
    assert all([(await first.hit("k")).allowed for _ in range(64)])
    left = sum([(await second.hit("k")).allowed for _ in range(100)])
    assert 100 - 64 - first.max_batch <= left < 100 - 64
    assert first.max_batch == 10


async def test_a_lease_outlived_is_not_served(redis_client: redis.asyncio.Redis, redis_prefix: str) -> None:
    clock = Clock()
    first, second = (RedisLimiter(Quota(100, 60), client=redis_client, prefix=redis_prefix, clock=clock) for _ in "ab")
    assert all([(await first.hit("k")).allowed for _ in range(2)])  # leases of one cell and two: one left
    clock.now += 2 * first.lease_seconds
    assert sum([(await second.hit("k")).allowed for _ in range(110)]) == 100  # three refilled meanwhile
    assert not (await first.hit("k")).allowed


async def test_replicas_together_stay_within_the_quota_and_the_lease_slack(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    quota, clock, rng = Quota(100, 60), Clock(), random.Random(22)
    replicas = [RedisLimiter(quota, client=redis_client, prefix=redis_prefix, clock=clock) for _ in range(2)]
    alone = MemoryLimiter(quota, clock=clock)
    allowed, allowed_alone = [], 0
    for _ in range(8):  # a client faster than its limit, then idle for a while
        for _ in range(250):
            clock.now += rng.choice([0.0, 0.0, 0.01, 0.1, 0.3])
            if (await rng.choice(replicas).hit("k")).allowed:
                allowed.append(clock.now)
            allowed_alone += (await alone.hit("k")).allowed
        clock.now += rng.choice([30.0, 60.0])
    # the most let through between two allowed requests, beyond what GCRA allows in that time: with pass k at t_k,
    # k - t_k / interval less its lowest value so far
    excess, lowest = -math.inf, math.inf
    for index, at in enumerate(allowed):
        lowest = min(lowest, index - at / quota.interval)
        excess = max(excess, index - at / quota.interval - lowest + 1 - quota.capacity)
    # each replica is ahead of Redis by one lease at most, and serves it within the lease time
    slack = min(len(replicas) * replicas[0].max_batch, replicas[0].lease_seconds / quota.interval)
    assert excess <= slack
    assert len(allowed) >= 0.9 * allowed_alone  # what leases outlived unspent costs the client
