"""X-Request-ID in and out: one id per request, for the upstream, the client and every log line.

A client's id is kept when it is a sane token (bounded length and charset), so ids can be followed across
services; anything else is replaced by a fresh one, so a client cannot inject log-breaking text.
`take_request_id` and `with_request_id` are the two halves, for layers that do this among other things.
"""

import itertools
import os
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar

from asgi_gateway.middleware.state import RequestState
from asgi_gateway.middleware.types import ASGIApp, Header, Message, RawHeaders, Receive, Scope, Send

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_SANE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")


class _Ids:
    """Unique without a system call per request: 64 random bits per process (so workers and replicas
    differ) and a counter. A forked child draws new random bits."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.template, self.sequence = os.urandom(8).hex() + "%08x", itertools.count(1)

    def __call__(self) -> str:
        return self.template % next(self.sequence)


new_request_id = _Ids()


def take_request_id(scope: Scope, header: bytes, generator: Callable[[], str] = new_request_id) -> bytes:
    """The request's id, also put in its headers (for the upstream) and in `scope["state"]["request_id"]`.

    `header` is the lower-case field name.
    """
    headers: RawHeaders = scope["headers"]
    incoming = None
    for name, field_value in headers:
        if name == header:
            incoming = field_value
            break
    if incoming is not None and _SANE.fullmatch(incoming):
        value, encoded = incoming.decode("latin-1"), incoming
    else:
        value = generator()
        encoded = value.encode("latin-1")
        kept = headers if incoming is None else [field for field in headers if field[0] != header]
        scope["headers"] = [*kept, (header, encoded)]
    state: RequestState = scope.setdefault("state", {})
    state["request_id"] = value
    return encoded


def with_request_id(headers: Iterable[Header], header: bytes, encoded: bytes) -> RawHeaders:
    """Response headers carrying the request's id, in place of any the app set."""
    return [*[field for field in headers if field[0] != header], (header, encoded)]


class RequestIdMiddleware:
    def __init__(
        self, app: ASGIApp, *, header: str = "X-Request-ID", generator: Callable[[], str] = new_request_id
    ) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.generator = generator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = self.header
        encoded = take_request_id(scope, header, self.generator)
        token = request_id.set(scope["state"]["request_id"])

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_request_id(message.get("headers", ()), header, encoded)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
