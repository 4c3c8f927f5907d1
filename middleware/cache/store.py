"""What a store keeps (`StoredResponse`, `VaryIndex`), their binary form, and the `CacheStore` protocol.

A stored response carries what every hit needs already worked out at store time (ASGI header pairs,
the corrected initial age, the freshness lifetime and stale windows), so a hit only adds `Age` and
`Cache-Status` and sends the body in one message.
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from asgi_gateway.middleware.cache.keys import UrlKey
from asgi_gateway.middleware.types import Header

__all__ = ["CacheStore", "Record", "StoreUnavailable", "StoredResponse", "VaryIndex", "pack", "unpack"]


_ENTRY = 1
_INDEX = 2
_PREFIX = struct.Struct(">BI")  # record kind, length of the JSON metadata that follows
_OVERHEAD = 256  # rough per-entry bookkeeping, so a flood of empty bodies still counts against a byte budget
_encode = msgspec.json.Encoder().encode
# status, flat headers, request and response times, initial age, lifetime, stale windows, vary, tags: typed, so
# a damaged record fails in the decoder rather than as a wrong value further on
_ENTRY_META = msgspec.json.Decoder(
    tuple[int, list[str], float, float, float, float, float, float, list[tuple[str, str | None]], list[str]]
)
_INDEX_META = msgspec.json.Decoder(tuple[str, ...])


class StoreUnavailable(Exception):
    """An invalidation or purge did not happen because the store cannot be reached."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as a shared cache keeps it (RFC 9111 §3), with its age and lifetime precomputed."""

    status: int
    headers: tuple[Header, ...]
    body: bytes
    request_time: float
    response_time: float
    initial_age: float  # corrected_initial_age of §4.2.3
    lifetime: float  # freshness lifetime of §4.2.1
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    vary: tuple[tuple[str, str | None], ...] = ()  # the varied request headers it was stored for
    tags: tuple[str, ...] = ()

    def age(self, now: float) -> float:
        """current_age (§4.2.3): the age it arrived with plus the time it has been resident here."""
        return self.initial_age + max(now - self.response_time, 0.0)

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(name) + len(value) for name, value in self.headers) + _OVERHEAD


@dataclass(frozen=True, slots=True)
class VaryIndex:
    """Stored under a URL's head variant when its responses vary: the request headers that select one."""

    fields: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(len(name) for name in self.fields) + _OVERHEAD


Record = StoredResponse | VaryIndex


def pack(record: Record) -> bytes:
    """Kind, metadata length, compact JSON metadata, then the raw body: binary-safe and not pickle."""
    if isinstance(record, VaryIndex):
        meta = _encode(record.fields)
        return _PREFIX.pack(_INDEX, len(meta)) + meta
    headers = [part.decode("latin-1") for header in record.headers for part in header]
    fields = [
        record.status,
        headers,
        record.request_time,
        record.response_time,
        record.initial_age,
        record.lifetime,
        record.stale_while_revalidate,
        record.stale_if_error,
        record.vary,
        record.tags,
    ]
    meta = _encode(fields)
    return _PREFIX.pack(_ENTRY, len(meta)) + meta + record.body


def unpack(raw: bytes) -> Record | None:
    """The record `pack` wrote, or None for anything else (a foreign or damaged value is a miss)."""
    try:
        kind, length = _PREFIX.unpack_from(raw)
        meta = memoryview(raw)[_PREFIX.size : _PREFIX.size + length]
        if kind == _INDEX:
            return VaryIndex(_INDEX_META.decode(meta))
        if kind != _ENTRY:
            return None
        fields = _ENTRY_META.decode(meta)
        status, flat, request_time, response_time, initial_age, lifetime, swr, sie, vary, tags = fields
        encoded = [part.encode("latin-1") for part in flat]
        return StoredResponse(
            status=status,
            headers=tuple(zip(encoded[::2], encoded[1::2], strict=True)),
            body=raw[_PREFIX.size + length :],
            request_time=request_time,
            response_time=response_time,
            initial_age=initial_age,
            lifetime=lifetime,
            stale_while_revalidate=swr,
            stale_if_error=sie,
            vary=tuple(vary),
            tags=tuple(tags),
        )
    except (ValueError, struct.error):  # msgspec's errors are ValueErrors
        return None


class CacheStore(Protocol):
    """Where responses live. On the request path nothing raises: an unreachable store reads as a miss,
    drops writes, and reports itself unavailable so the middleware steps aside. `delete` and the purges
    raise `StoreUnavailable` instead, since their callers must know they did not happen.

    Records are addressed by a `UrlKey` and a variant name (see keys.py). Fill locks let replicas that
    share a store send one request upstream per key: `acquire` returns a token when the caller should
    fill (an empty one when the store is not shared), or None when another holder is filling, in which
    case `wait_filled` returns once a record lands (True) or the holder's lock is gone (False).
    """

    @property
    def available(self) -> bool: ...

    async def get(self, url: UrlKey, variant: str) -> Record | None: ...

    async def put(
        self, url: UrlKey, records: Sequence[tuple[str, Record]], *, retention: float, tags: Sequence[str]
    ) -> None:
        """Write records of one URL together; they are kept `retention` seconds (an index is kept at least
        as long as the longest-lived variant written after it)."""

    async def delete(self, url: UrlKey) -> int:
        """Remove every record of one URL; returns how many there were."""

    async def purge_prefix(self, path_prefix: str) -> int: ...

    async def purge_tag(self, tag: str) -> int: ...

    async def acquire(self, url: UrlKey, variant: str, lease: float) -> str | None: ...

    async def release(self, url: UrlKey, variant: str, token: str) -> None: ...

    async def wait_filled(self, url: UrlKey, variant: str, within: float) -> bool: ...

    async def aclose(self) -> None: ...
