"""In-process request coalescing: concurrent misses for one key wait for the first one's result."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

__all__ = ["Flight", "Flights"]

T = TypeVar("T")


class Flight(Generic[T]):
    """The leader's handle: `land(result)` hands the result to every follower."""

    def __init__(self, future: "asyncio.Future[T | None]") -> None:
        self._future = future

    def land(self, result: T | None) -> None:
        if not self._future.done():
            self._future.set_result(result)


class Flights(Generic[T]):
    """One future per key in flight. Followers get None when the leader ended without a result (it
    failed, or its response could not be shared) and then go their own way."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[T | None]] = {}

    def following(self, key: str) -> "asyncio.Future[T | None] | None":
        """The flight to wait for (with `asyncio.shield`, so a follower leaving does not cancel it)."""
        return self._futures.get(key)

    @contextmanager
    def leading(self, key: str) -> Iterator[Flight[T]]:
        """Register as the leader for `key`; followers are released when the block ends, however it ends."""
        future: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._futures[key] = future
        try:
            yield Flight(future)
        finally:
            del self._futures[key]
            if not future.done():
                future.set_result(None)
