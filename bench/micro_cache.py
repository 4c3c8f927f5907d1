"""Micro-benchmark of the response cache, in microseconds per operation (one core, no server).

    .venv/bin/python bench/micro_cache.py [--redis redis://127.0.0.1:6379/0] [--repeat 5]

Times key building, then whole requests through CacheMiddleware called as a plain ASGI app with a
1 KB body: a static in-memory ASGI answer (the floor), a hit from MemoryStore, from a TieredStore's
L1, and from Redis (skipped when it is unreachable), a miss stored in memory, and a revalidation
answered 304 by the upstream. Best of `--repeat` runs.
"""

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from uuid import uuid4

import redis.asyncio
from harness import get_scope

from asgi_gateway.middleware.cache import CacheMiddleware, CacheOptions, KeyRules, MemoryStore, RedisStore, TieredStore
from asgi_gateway.middleware.cache.keys import extras_variant, url_key
from asgi_gateway.middleware.types import ASGIApp, Message, Receive, Scope, Send

BODY = b"x" * 1024
RESPONSE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", b"1024"),
    (b"cache-control", b"max-age=3600"),
    (b"etag", b'"v1"'),
]
REQUEST_HEADERS = [
    (b"host", b"api.example.test"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, br"),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"x-request-id", b"3f2b1c"),
    (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
]


def scope(path: str = "/api/users/7", query: bytes = b"") -> Scope:
    return get_scope(path, REQUEST_HEADERS, query)


async def static(scope: Scope, receive: Receive, send: Send) -> None:
    """The floor: a pure ASGI app answering from memory."""
    await send({"type": "http.response.start", "status": 200, "headers": RESPONSE_HEADERS})
    await send({"type": "http.response.body", "body": BODY})


class Upstream:
    """Answers 200 with the body, or 304 to a matching If-None-Match."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (b"if-none-match", b'"v1"') in scope["headers"]:
            await send({"type": "http.response.start", "status": 304, "headers": [(b"cache-control", b"max-age=0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await static(scope, receive, send)


async def receive() -> Message:
    return {"type": "http.request", "body": b""}


async def send(message: Message) -> None:
    return None


async def per_op(run: Callable[[int], Awaitable[None]], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        await run(count)
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def requests(app: ASGIApp, make_scope: Callable[[int], Scope] | None = None) -> Callable[[int], Awaitable[None]]:
    fixed = scope()

    async def run(count: int) -> None:
        for n in range(count):
            await app(make_scope(n) if make_scope else fixed, receive, send)

    return run


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rules = KeyRules(ignore=frozenset({"utm_source"}))
    plain, with_query = scope(), scope(query=b"page=2&sort=name&utm_source=mail")

    async def keys(count: int) -> None:
        for _ in range(count):
            url_key(plain, rules)
            extras_variant(None)

    async def keys_with_query(count: int) -> None:
        for _ in range(count):
            url_key(with_query, rules)
            extras_variant("variant-b")

    results: list[tuple[str, float]] = [
        ("key: path only", await per_op(keys, 100_000, args.repeat)),
        ("key: sorted query with an ignored param + extras", await per_op(keys_with_query, 100_000, args.repeat)),
        ("static ASGI answer (floor)", await per_op(requests(static), 100_000, args.repeat)),
    ]

    memory = CacheMiddleware(Upstream(), store=MemoryStore())
    await memory(scope(), receive, send)
    results.append(("hit: MemoryStore", await per_op(requests(memory), 100_000, args.repeat)))

    fresh_paths = CacheMiddleware(Upstream(), store=MemoryStore(max_bytes=16 << 20))
    results.append(
        ("miss stored: MemoryStore", await per_op(requests(fresh_paths, lambda n: scope(f"/u/{n}")), 20_000, 1))
    )

    clock = [time.time()]
    revalidating = CacheMiddleware(
        Upstream(), store=MemoryStore(), options=CacheOptions(keep=3600, forced_lifetime=1), clock=lambda: clock[0]
    )
    await revalidating(scope(), receive, send)

    async def revalidate(count: int) -> None:
        for _ in range(count):
            clock[0] += 2  # stale every time: revalidated, answered 304
            await revalidating(scope(), receive, send)

    results.append(("stale, revalidated by a 304: MemoryStore", await per_op(revalidate, 20_000, args.repeat)))

    client = redis.asyncio.Redis.from_url(args.redis)
    prefix = f"bench:{uuid4().hex}:"
    try:
        await client.ping()
    except redis.RedisError as error:
        print(f"Redis at {args.redis} unreachable ({error!r}): Redis rows skipped")
    else:
        shared = RedisStore(client, prefix=prefix)
        on_redis = CacheMiddleware(Upstream(), store=shared)
        await on_redis(scope(), receive, send)
        results.append(("hit: RedisStore (one GET)", await per_op(requests(on_redis), 5_000, args.repeat)))
        tiered = CacheMiddleware(Upstream(), store=TieredStore(l1=MemoryStore(), l2=shared, l1_ttl=3600))
        await tiered(scope(), receive, send)
        results.append(("hit: TieredStore L1", await per_op(requests(tiered), 100_000, args.repeat)))
        keys_left = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys_left:
            await client.delete(*keys_left)
    finally:
        await client.aclose()

    width = max(len(name) for name, _ in results)
    for name, micros in results:
        print(f"{name:<{width}}  {micros:8.2f} µs/op")


if __name__ == "__main__":
    asyncio.run(main())
