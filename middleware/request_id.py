"""X-Request-ID in and out: one id per request, for the upstream, the client and every log line.

A client's id is kept when it is a sane token (bounded length and charset), so ids can be followed across
services; anything else is replaced by a fresh one, so a client cannot inject log-breaking text.
"""

import itertools
import os
import re
from collections.abc import Callable
from contextvars import ContextVar

from middleware.types import ASGIApp, Message, Receive, Scope, Send

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_SANE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")


class _Ids:
    """Unique without a system call per request: 64 random bits per process (so workers and replicas
    differ) and a counter. A forked child draws new random bits."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.process, self.sequence = os.urandom(8).hex(), itertools.count(1)

    def __call__(self) -> str:
        return f"{self.process}{next(self.sequence):08x}"


_new_id = _Ids()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, *, header: str = "X-Request-ID", generator: Callable[[], str] = _new_id) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.generator = generator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((value for name, value in scope["headers"] if name == self.header), None)
        value = incoming.decode("latin-1") if incoming is not None and _SANE.fullmatch(incoming) else self.generator()
        encoded = value.encode("latin-1")
        if incoming is None or incoming != encoded:
            scope["headers"] = [(name, raw) for name, raw in scope["headers"] if name != self.header]
            scope["headers"].append((self.header, encoded))
        scope.setdefault("state", {})["request_id"] = value
        token = request_id.set(value)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, raw) for name, raw in message.get("headers", []) if name != self.header]
                message["headers"] = [*headers, (self.header, encoded)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
