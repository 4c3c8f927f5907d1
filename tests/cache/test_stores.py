"""The stored form (pack/unpack), the bounded MemoryStore and the TieredStore over the real Redis."""

from dataclasses import replace

import pytest
import redis.asyncio
from hypothesis import given, strategies as st

from asgi_gateway.middleware.cache import (
    KeyRules,
    MemoryStore,
    StoredResponse,
    TieredStore,
    VaryIndex,
    url_key_for,
)
from asgi_gateway.middleware.cache.store import pack, unpack
from tests.cache.conftest import Clock, RedisStoreFactory

pytestmark = pytest.mark.anyio

BASE = StoredResponse(
    status=200,
    headers=((b"content-type", b"text/plain"),),
    body=b"x" * 100,
    request_time=1.5,
    response_time=2.25,
    initial_age=3.0,
    lifetime=60.0,
)
A, B, C = (url_key_for(f"http://test/{name}", KeyRules()) for name in ("a/1", "a/2", "b/1"))

header_bytes = st.binary(max_size=40)
stored_responses = st.builds(
    StoredResponse,
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(header_bytes, header_bytes), max_size=5).map(tuple),
    body=st.binary(max_size=2000),
    request_time=st.floats(0, 2e9),
    response_time=st.floats(0, 2e9),
    initial_age=st.floats(0, 1e6),
    lifetime=st.floats(0, 1e6),
    stale_while_revalidate=st.floats(0, 1e6),
    stale_if_error=st.floats(0, 1e6),
    vary=st.lists(st.tuples(st.text(), st.none() | st.text()), max_size=3).map(tuple),
    tags=st.lists(st.text(), max_size=3).map(tuple),
)


@given(stored_responses)
def test_pack_round_trips_any_response(stored: StoredResponse) -> None:
    assert unpack(pack(stored)) == stored


@given(st.lists(st.text(), max_size=4).map(tuple))
def test_pack_round_trips_an_index(fields: tuple[str, ...]) -> None:
    assert unpack(pack(VaryIndex(fields))) == VaryIndex(fields)


@given(st.binary())
def test_unpack_never_raises(raw: bytes) -> None:
    assert unpack(raw) is None or isinstance(unpack(raw), (StoredResponse, VaryIndex))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01",
        b"\x01\x00\x00\x00\x02[]",
        b"\x03\x00\x00\x00\x02[]",
        b"\x01\x00\x00\x00\x04nope",
        pack(BASE)[:-101],
    ],
    ids=["empty", "short", "wrong-shape", "unknown-kind", "not-json", "truncated-meta"],
)
def test_damaged_values_are_misses(raw: bytes) -> None:
    assert unpack(raw) is None


def test_age_is_initial_age_plus_residence() -> None:
    """RFC 9111 §4.2.3 current_age; a clock behind the response time adds nothing."""
    assert (BASE.age(12.25), BASE.age(0.0)) == (13.0, 3.0)


async def test_memory_store_evicts_least_recently_used_by_bytes() -> None:
    store = MemoryStore(max_bytes=3 * BASE.size)
    for url in (A, B, C):
        await store.put(url, [("h", BASE)], retention=60, tags=())
    assert await store.get(A, "h") == BASE  # A is now the most recently used
    await store.put(C, [("h.x", BASE)], retention=60, tags=())
    assert [await store.get(url, "h") is not None for url in (A, B, C)] == [True, False, True]
    assert store.size == 3 * BASE.size


async def test_memory_store_skips_objects_larger_than_its_budget() -> None:
    store = MemoryStore(max_bytes=BASE.size - 1)
    await store.put(A, [("h", BASE)], retention=60, tags=("t",))
    assert (await store.get(A, "h"), store.size, await store.purge_tag("t")) == (None, 0, 0)


async def test_memory_store_expires_by_ttl() -> None:
    clock = Clock(0)
    store = MemoryStore(clock=clock)
    await store.put(A, [("h", VaryIndex(("accept",))), ("h.1", BASE)], retention=100, tags=())
    await store.put(A, [("h", VaryIndex(("accept",))), ("h.2", BASE)], retention=10, tags=())
    clock.advance(50)
    assert [await store.get(A, v) for v in ("h", "h.1", "h.2")] == [VaryIndex(("accept",)), BASE, None]
    clock.advance(50)
    assert (await store.get(A, "h"), store.size) == (None, BASE.size)


async def test_memory_store_purges_and_forgets_tags_of_evicted_entries() -> None:
    store = MemoryStore(max_bytes=2 * BASE.size)
    await store.put(A, [("h", BASE)], retention=60, tags=("first",))
    await store.put(B, [("h", BASE)], retention=60, tags=("second", "both"))
    await store.put(C, [("h", BASE)], retention=60, tags=("both",))  # evicts A
    assert await store.purge_tag("first") == 0
    assert await store.purge_prefix("/a/") == 1
    assert await store.purge_tag("both") == 1
    assert (await store.delete(B), store.size) == (0, 0)


def test_memory_store_budget_is_validated() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryStore(max_bytes=0)


async def test_tiered_store_serves_hot_keys_from_l1(
    redis_client: redis.asyncio.Redis, redis_store: RedisStoreFactory
) -> None:
    clock = Clock(0)
    l2 = redis_store(redis_client)
    store = TieredStore(l1=MemoryStore(clock=clock), l2=l2, l1_ttl=1)
    await store.put(A, [("h", BASE)], retention=60, tags=("t",))
    await l2.delete(A)  # gone from Redis: a replica that still holds it in L1 serves it for l1_ttl
    assert await store.get(A, "h") == BASE
    clock.advance(2)
    assert await store.get(A, "h") is None


async def test_tiered_store_fills_l1_from_l2_and_purges_both(
    redis_client: redis.asyncio.Redis, redis_store: RedisStoreFactory
) -> None:
    l1, l2 = MemoryStore(), redis_store(redis_client)
    store = TieredStore(l1=l1, l2=l2)
    await l2.put(A, [("h", BASE)], retention=60, tags=("t",))
    await l2.put(B, [("h", replace(BASE, status=404))], retention=60, tags=())
    assert await store.get(A, "h") == BASE
    assert await l1.get(A, "h") == BASE
    assert await store.get(B, "h") == replace(BASE, status=404)
    assert await store.purge_tag("t") == 1
    assert await store.purge_prefix("/a/") == 1
    assert [await l1.get(url, "h") for url in (A, B)] == [None, None]
    assert await store.delete(C) == 0


def test_tiered_store_l1_ttl_is_validated() -> None:
    with pytest.raises(ValueError, match="l1_ttl"):
        TieredStore(l1=MemoryStore(), l2=MemoryStore(), l1_ttl=0)
