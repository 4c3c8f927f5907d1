"""An in-process store: least recently used entries go first once the byte budget is spent."""

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asgi_gateway.middleware.cache.keys import UrlKey
from asgi_gateway.middleware.cache.store import Record, VaryIndex

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Slot:
    record: Record
    expires: float
    size: int


@dataclass(slots=True)
class _Group:
    """Everything stored for one URL, so invalidation and purges find all its variants."""

    url: UrlKey
    variants: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)


class MemoryStore:
    """The embedded default store, and the L1 of `TieredStore`. Not shared between processes, so its
    fill locks are the middleware's in-process coalescing alone."""

    def __init__(self, *, max_bytes: int = 64 << 20, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._clock = clock
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self._groups: dict[str, _Group] = {}
        self._tags: dict[str, set[str]] = {}
        self._bytes = 0

    @property
    def available(self) -> bool:
        return True

    @property
    def size(self) -> int:
        """Bytes currently held, as the budget counts them."""
        return self._bytes

    async def get(self, url: UrlKey, variant: str) -> Record | None:
        key = (url.digest, variant)
        slot = self._slots.get(key)
        if slot is None:
            return None
        if slot.expires <= self._clock():
            self._remove(key)
            return None
        self._slots.move_to_end(key)
        return slot.record

    async def put(
        self, url: UrlKey, records: Sequence[tuple[str, Record]], *, retention: float, tags: Sequence[str]
    ) -> None:
        now = self._clock()
        group = self._groups.get(url.digest)
        if group is None:
            group = self._groups[url.digest] = _Group(url)
        for variant, record in records:
            size = record.size
            if size > self.max_bytes:
                continue
            key = (url.digest, variant)
            expires = now + retention
            previous = self._slots.get(key)
            if previous is not None:
                if isinstance(record, VaryIndex):  # an index outlives the variants it points to
                    expires = max(expires, previous.expires)
                self._remove(key, keep_group=True)
            self._slots[key] = _Slot(record, expires, size)
            self._bytes += size
            group.variants.add(variant)
        for tag in tags:
            group.tags.add(tag)
            self._tags.setdefault(tag, set()).add(url.digest)
        while self._bytes > self.max_bytes:
            self._remove(next(iter(self._slots)))
        if not group.variants and self._groups.get(url.digest) is group:
            self._drop_group(group)

    async def delete(self, url: UrlKey) -> int:
        group = self._groups.get(url.digest)
        if group is None:
            return 0
        count = len(group.variants)
        for variant in list(group.variants):
            self._remove((url.digest, variant))
        return count

    async def purge_prefix(self, path_prefix: str) -> int:
        matching = [group.url for group in self._groups.values() if group.url.path.startswith(path_prefix)]
        return sum([await self.delete(url) for url in matching])

    async def purge_tag(self, tag: str) -> int:
        digests = self._tags.pop(tag, set())
        return sum([await self.delete(self._groups[digest].url) for digest in digests if digest in self._groups])

    async def acquire(self, url: UrlKey, variant: str, lease: float) -> str | None:
        return ""

    async def release(self, url: UrlKey, variant: str, token: str) -> None:
        return None

    async def wait_filled(self, url: UrlKey, variant: str, within: float) -> bool:
        return False

    async def aclose(self) -> None:
        self._slots.clear()
        self._groups.clear()
        self._tags.clear()
        self._bytes = 0

    def _remove(self, key: tuple[str, str], *, keep_group: bool = False) -> None:
        slot = self._slots.pop(key)
        self._bytes -= slot.size
        group = self._groups[key[0]]
        group.variants.discard(key[1])
        if not group.variants and not keep_group:
            self._drop_group(group)

    def _drop_group(self, group: _Group) -> None:
        del self._groups[group.url.digest]
        for tag in group.tags:
            digests = self._tags.get(tag)
            if digests is not None:
                digests.discard(group.url.digest)
                if not digests:
                    del self._tags[tag]
