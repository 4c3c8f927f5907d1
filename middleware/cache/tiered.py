"""A small in-process tier in front of a shared store, so hot keys skip the network round trip.

An L1 copy lives at most `l1_ttl` seconds: that bounds how long a replica can serve a response that
another replica has since replaced or purged. Freshness is still judged from the record itself, so a
stale L1 copy is never served as fresh.
"""

from collections.abc import Sequence

from asgi_gateway.middleware.cache.keys import UrlKey
from asgi_gateway.middleware.cache.memory import MemoryStore
from asgi_gateway.middleware.cache.store import CacheStore, Record

__all__ = ["TieredStore"]


class TieredStore:
    """`CacheStore` reading L1 first, then L2 (filling L1); writes and purges go to both; the fill locks
    are L2's. Stays available while L2 is down: L1 keeps serving what it holds."""

    def __init__(self, *, l1: MemoryStore, l2: CacheStore, l1_ttl: float = 1.0) -> None:
        if not l1_ttl > 0:
            raise ValueError(f"l1_ttl must be positive, got {l1_ttl}")
        self.l1, self.l2, self.l1_ttl = l1, l2, l1_ttl

    @property
    def available(self) -> bool:
        return True

    async def get(self, url: UrlKey, variant: str) -> Record | None:
        record = await self.l1.get(url, variant)
        if record is None:
            record = await self.l2.get(url, variant)
            if record is not None:
                await self.l1.put(url, [(variant, record)], retention=self.l1_ttl, tags=())
        return record

    async def put(
        self, url: UrlKey, records: Sequence[tuple[str, Record]], *, retention: float, tags: Sequence[str]
    ) -> None:
        await self.l1.put(url, records, retention=min(retention, self.l1_ttl), tags=tags)
        await self.l2.put(url, records, retention=retention, tags=tags)

    async def delete(self, url: UrlKey) -> int:
        await self.l1.delete(url)
        return await self.l2.delete(url)

    async def purge_prefix(self, path_prefix: str) -> int:
        await self.l1.purge_prefix(path_prefix)
        return await self.l2.purge_prefix(path_prefix)

    async def purge_tag(self, tag: str) -> int:
        await self.l1.purge_tag(tag)
        return await self.l2.purge_tag(tag)

    async def acquire(self, url: UrlKey, variant: str, lease: float) -> str | None:
        return await self.l2.acquire(url, variant, lease)

    async def release(self, url: UrlKey, variant: str, token: str) -> None:
        await self.l2.release(url, variant, token)

    async def wait_filled(self, url: UrlKey, variant: str, within: float) -> bool:
        return await self.l2.wait_filled(url, variant, within)

    async def aclose(self) -> None:
        await self.l1.aclose()
        await self.l2.aclose()
