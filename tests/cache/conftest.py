"""Shared pieces of the cache tests: an injectable clock, a real upstream that counts its hits, stores."""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_gateway.middleware.cache import (
    CacheMiddleware,
    CacheOptions,
    CacheStore,
    MemoryStore,
    RedisStore,
    TieredStore,
    UrlKey,
)
from asgi_gateway.middleware.cache.store import Record

START = 1_700_000_000.0


class Clock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Upstream:
    """A real ASGI upstream: answers `hit <n>` with the configured status and headers, records what it
    was asked, can be held at a gate, made to fail, and answers 304 to a matching If-None-Match."""

    def __init__(self, headers: dict[str, str] | None = None, *, status: int = 200) -> None:
        self.headers = {"cache-control": "max-age=60"} if headers is None else headers
        self.status = status
        self.hits = 0
        self.seen: list[tuple[str, Headers]] = []
        self.arrived = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None
        self.not_modified_headers: dict[str, str] | None = None  # set: answer 304 when the ETag matches

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.hits += 1
        request_headers = Headers(scope=scope)
        self.seen.append((scope["method"], request_headers))
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        etag = self.headers.get("etag")
        if self.not_modified_headers is not None and etag and request_headers.get("if-none-match") == etag:
            await Response(status_code=304, headers=self.not_modified_headers)(scope, receive, send)
            return
        body = b"" if scope["method"] == "HEAD" else f"hit {self.hits}".encode()
        await Response(body, status_code=self.status, headers=self.headers)(scope, receive, send)


@asynccontextmanager
async def client_for(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


RedisStoreFactory = Callable[[redis.asyncio.Redis], RedisStore]


@pytest.fixture
def redis_store(redis_prefix: str, time_limit: float) -> RedisStoreFactory:
    """A RedisStore on a client, under this test's prefix, whose call budget is the test's own time limit.
    The production budget is short so that a slow Redis makes the cache step aside; a loaded test machine
    exceeds it (a burst of lookups opening their connections at once), and the store would then pass
    requests through in a test about something else. Tests of that budget build their own store."""

    def build(client: redis.asyncio.Redis) -> RedisStore:
        return RedisStore(client, prefix=redis_prefix, timeout=time_limit)

    return build


@pytest.fixture(params=["memory", "redis", "tiered"])
async def store(
    request: pytest.FixtureRequest, clock: Clock, redis_client: redis.asyncio.Redis, redis_store: RedisStoreFactory
) -> AsyncIterator[CacheStore]:
    """Each behaviour runs against every store; Redis ones under this test's own prefix."""
    stores: dict[str, Callable[[], CacheStore]] = {
        "memory": lambda: MemoryStore(clock=clock),
        "redis": lambda: redis_store(redis_client),
        "tiered": lambda: TieredStore(l1=MemoryStore(clock=clock), l2=redis_store(redis_client), l1_ttl=0.5),
    }
    chosen = stores[request.param]()
    yield chosen
    await chosen.aclose()


CacheFactory = Callable[..., CacheMiddleware]


@pytest.fixture
def make_cache(store: CacheStore, clock: Clock) -> CacheFactory:
    """A CacheMiddleware on the parametrized store and the test clock; options as keyword arguments."""

    def build(upstream: ASGIApp, **options: Any) -> CacheMiddleware:
        return CacheMiddleware(upstream, store=store, options=CacheOptions(**options), clock=clock)

    return build


class ObservedStore:
    """A real store with its lookups counted, so a test can wait until requests have reached a point
    instead of sleeping. Everything else is the wrapped store's own behaviour."""

    def __init__(self, inner: CacheStore) -> None:
        self.inner = inner
        self.gets = 0
        self.waiting = asyncio.Event()
        self._targets: list[tuple[int, asyncio.Event]] = []

    def after_gets(self, count: int) -> asyncio.Event:
        """Set once `count` lookups have completed."""
        event = asyncio.Event()
        self._targets.append((count, event))
        self._check()
        return event

    def _check(self) -> None:
        for count, event in self._targets:
            if self.gets >= count:
                event.set()

    @property
    def available(self) -> bool:
        return self.inner.available

    async def get(self, url: UrlKey, variant: str) -> Record | None:
        record = await self.inner.get(url, variant)
        self.gets += 1
        self._check()
        return record

    async def put(
        self, url: UrlKey, records: Sequence[tuple[str, Record]], *, retention: float, tags: Sequence[str]
    ) -> None:
        await self.inner.put(url, records, retention=retention, tags=tags)

    async def delete(self, url: UrlKey) -> int:
        return await self.inner.delete(url)

    async def purge_prefix(self, path_prefix: str) -> int:
        return await self.inner.purge_prefix(path_prefix)

    async def purge_tag(self, tag: str) -> int:
        return await self.inner.purge_tag(tag)

    async def acquire(self, url: UrlKey, variant: str, lease: float) -> str | None:
        return await self.inner.acquire(url, variant, lease)

    async def release(self, url: UrlKey, variant: str, token: str) -> None:
        await self.inner.release(url, variant, token)

    async def wait_filled(self, url: UrlKey, variant: str, within: float) -> bool:
        self.waiting.set()
        return await self.inner.wait_filled(url, variant, within)

    async def aclose(self) -> None:
        await self.inner.aclose()
