"""A store shared by every replica, on redis.asyncio (a single server or a Redis Cluster).

Layout under `prefix`, for a URL with digest D and raw path P:
    {D}:<variant>   a packed record, PX = its retention        (one GET per hit)
    {D}#P           set of that URL's record keys              (invalidation; SCAN MATCH for prefixes)
    {D}!<variant>   fill lock, SET NX PX                       (coalescing across replicas)
    tag:<tag>       set of the `{D}#P` names tagged with <tag>
The `{D}` hash tag keeps one URL's keys in one cluster slot, so its records and their index are written
in one MULTI/EXEC; tag sets live elsewhere and are written in a second, non-transactional pipeline.

Concurrent reads of one key share one GET: a burst of requests for one URL costs Redis one round trip and
one connection per replica, not one each. Every call runs under `timeout`. A failure or timeout opens a
circuit breaker: for `cooldown` seconds the store reads as unavailable (the middleware passes requests
through) and one warning is logged per opening.
"""

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from asgi_gateway.middleware.cache.coalesce import Flights
from asgi_gateway.middleware.cache.keys import UrlKey
from asgi_gateway.middleware.cache.store import Record, StoreUnavailable, VaryIndex, pack, unpack

__all__ = ["RedisStore"]

logger = logging.getLogger("middleware.cache")
T = TypeVar("T")

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_GLOB_SPECIAL = str.maketrans({char: "\\" + char for char in "*?[]\\"})
_DIGEST_PATTERN = "{" + "?" * 32 + "}"
_POLL_FIRST, _POLL_MAX = 0.002, 0.05
_FAILURES = (RedisError, OSError, TimeoutError)


class _Breaker:
    """Open for `cooldown` seconds after a failure; the first call after that tries Redis again."""

    def __init__(
        self, cooldown: float, clock: Callable[[], float], on_error: Callable[[BaseException], None] | None
    ) -> None:
        self.cooldown, self._clock, self._on_error = cooldown, clock, on_error
        self._open_until = float("-inf")

    @property
    def closed(self) -> bool:
        return self._clock() >= self._open_until

    def trip(self, error: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(error)
        if self.closed:
            logger.warning("Redis cache unavailable (%r); passing requests through for %gs", error, self.cooldown)
        self._open_until = self._clock() + self.cooldown


class RedisStore:
    """Redis-backed `CacheStore`. Pass a client you own, or use `RedisStore.from_url`."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = "cache:",
        timeout: float = 0.25,
        purge_timeout: float = 30.0,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        owns_client: bool = False,
        on_error: Callable[[BaseException], None] | None = None,  # told of every failed call (metrics)
    ) -> None:
        if not timeout > 0 or not purge_timeout > 0 or not cooldown >= 0:
            raise ValueError("timeout and purge_timeout must be positive, cooldown zero or more")
        self._client = client
        self._prefix = prefix
        self._timeout = timeout
        self._purge_timeout = purge_timeout
        self._breaker = _Breaker(cooldown, clock, on_error)
        self._owns_client = owns_client
        self._release = client.register_script(_RELEASE)
        self._reads: Flights[Record] = Flights()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "cache:",
        timeout: float = 0.25,
        cooldown: float = 5.0,
        max_connections: int = 64,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> "RedisStore":
        """A store on its own client (closed by `aclose()`): no retries, since the breaker decides when
        to try again, socket timeouts matching `timeout`, and at most `max_connections` connections. A
        burst waits for one of them (within `timeout`) instead of opening one per request: on a busy machine
        the connects alone outlast the budget, and every replica's would count against Redis's client limit."""
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        client = Redis.from_pool(pool)
        return cls(client, prefix=prefix, timeout=timeout, cooldown=cooldown, owns_client=True, on_error=on_error)

    @property
    def available(self) -> bool:
        return self._breaker.closed

    async def get(self, url: UrlKey, variant: str) -> Record | None:
        key = self._record(url, variant)
        pending = self._reads.following(key)
        if pending is not None:
            return await asyncio.shield(pending)
        with self._reads.leading(key) as read:
            raw = await self._run(lambda: self._client.get(key), None)
            record = None if raw is None or isinstance(raw, str) else unpack(raw)
            read.land(record)
            return record

    async def put(
        self, url: UrlKey, records: Sequence[tuple[str, Record]], *, retention: float, tags: Sequence[str]
    ) -> None:
        px = max(int(retention * 1000), 1)
        members = self._members(url)

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                for variant, record in records:
                    key = self._record(url, variant)
                    if isinstance(record, VaryIndex):  # keep an index as long as its longest-lived variant
                        pipe.set(key, pack(record), keepttl=True)
                        self._extend(pipe, key, px)
                    else:
                        pipe.set(key, pack(record), px=px)
                    pipe.sadd(members, key)
                self._extend(pipe, members, px)
                await pipe.execute()
            if tags:
                async with self._client.pipeline(transaction=False) as pipe:
                    for tag in tags:
                        pipe.sadd(self._tag(tag), members)
                        self._extend(pipe, self._tag(tag), px)
                    await pipe.execute()

        await self._run(write, None)

    async def delete(self, url: UrlKey) -> int:
        return await self._admin(lambda: self._delete_group(self._members(url)))

    async def purge_prefix(self, path_prefix: str) -> int:
        pattern = self._prefix.translate(_GLOB_SPECIAL) + _DIGEST_PATTERN + "#" + path_prefix.translate(_GLOB_SPECIAL)

        async def purge() -> int:
            groups = [name async for name in self._client.scan_iter(match=pattern + "*", count=1000)]
            return sum([await self._delete_group(name) for name in groups])

        return await self._admin(purge, limit=self._purge_timeout)

    async def purge_tag(self, tag: str) -> int:
        async def purge() -> int:
            groups = await self._client.smembers(self._tag(tag))
            count = sum([await self._delete_group(name) for name in groups])
            await self._client.delete(self._tag(tag))
            return count

        return await self._admin(purge, limit=self._purge_timeout)

    async def acquire(self, url: UrlKey, variant: str, lease: float) -> str | None:
        token = secrets.token_hex(8)
        lock = self._lock(url, variant)
        acquired = await self._run(lambda: self._client.set(lock, token, nx=True, px=max(int(lease * 1000), 1)), None)
        if acquired:
            return token
        return None if self._breaker.closed else ""  # Redis failing: fill without a shared lock, never wait

    async def release(self, url: UrlKey, variant: str, token: str) -> None:
        await self._run(lambda: self._release(keys=[self._lock(url, variant)], args=[token]), None)

    async def wait_filled(self, url: UrlKey, variant: str, within: float) -> bool:
        """Polls (backing off from 2 ms to 50 ms) until the record lands or the lock is gone."""
        key, lock = self._record(url, variant), self._lock(url, variant)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        delay = _POLL_FIRST

        async def check() -> tuple[bool, bool]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.exists(key)
                pipe.exists(lock)
                filled, locked = await pipe.execute()
            return bool(filled), bool(locked)

        while (remaining := deadline - loop.time()) > 0:
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)
            filled, locked = await self._run(check, (False, False))
            if filled or not locked:
                return filled
        return False

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _run(self, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        """The request path's call: bounded by `timeout`, and a failure is the fallback, never an error."""
        if not self._breaker.closed:
            return fallback
        try:
            async with asyncio.timeout(self._timeout):
                return await operation()
        except _FAILURES as error:
            self._breaker.trip(error)
            return fallback

    async def _admin(self, operation: Callable[[], Awaitable[int]], *, limit: float | None = None) -> int:
        """Invalidation and purges: the caller must learn that they did not happen."""
        if not self._breaker.closed:
            raise StoreUnavailable("Redis cache is unavailable (cooling down after a failure)")
        try:
            async with asyncio.timeout(limit or self._timeout):
                return await operation()
        except _FAILURES as error:
            self._breaker.trip(error)
            raise StoreUnavailable(f"Redis cache is unavailable: {error!r}") from error

    async def _delete_group(self, members: bytes | str) -> int:
        keys = await self._client.smembers(members)
        async with self._client.pipeline(transaction=True) as pipe:
            if keys:
                pipe.delete(*keys)
            pipe.delete(members)
            results = await pipe.execute()
        return int(results[0]) if keys else 0

    @staticmethod
    def _extend(pipe: Pipeline | ClusterPipeline, key: str, px: int) -> None:
        """Set a ttl on a key that has none, or lengthen a shorter one (PEXPIRE NX, then GT)."""
        pipe.pexpire(key, px, nx=True)
        pipe.pexpire(key, px, gt=True)

    def _record(self, url: UrlKey, variant: str) -> str:
        return f"{self._prefix}{{{url.digest}}}:{variant}"

    def _members(self, url: UrlKey) -> str:
        return f"{self._prefix}{{{url.digest}}}#{url.path}"

    def _lock(self, url: UrlKey, variant: str) -> str:
        return f"{self._prefix}{{{url.digest}}}!{variant}"

    def _tag(self, tag: str) -> str:
        return f"{self._prefix}tag:{tag}"
