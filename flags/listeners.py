"""Change listeners for sources and resolvers: one failing listener never stops the others."""

import logging
from collections.abc import Callable
from typing import Generic, ParamSpec

P = ParamSpec("P")
logger = logging.getLogger(__name__)


class Listeners(Generic[P]):
    def __init__(self) -> None:
        self._listeners: list[Callable[P, None]] = []

    def add(self, listener: Callable[P, None]) -> Callable[[], None]:
        """Returns a function that removes the listener again (calling it twice is harmless)."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def notify(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(*args, **kwargs)
            except Exception:
                logger.exception("flag change listener %r failed", listener)
