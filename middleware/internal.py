"""Requests a layer makes itself to the app it wraps: a cache's refresh, a conditional write's look at the
current representation, a fan-out call through a route's cache. One shape for all of them: no request body,
and no client who could disconnect before the answer is in.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from asgi_gateway.middleware.types import ASGIApp, Header, Message, RawHeaders, Receive, Scope

__all__ = ["call_internal", "empty_receive"]


def empty_receive(answered: Callable[[], Awaitable[object]] | None = None) -> Receive:
    """An empty request body, then a disconnect once `answered()` returns (apps may listen for one while they
    stream), or nothing ever without it."""
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if answered is None:
            never: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            return await never
        await answered()
        return {"type": "http.disconnect"}

    return receive


async def call_internal(app: ASGIApp, scope: Scope) -> tuple[int, Sequence[Header], bytes]:
    """Run `app` for one bodiless request and collect its answer: status (500 if it never started), headers
    and the whole body."""
    status = 500
    headers: RawHeaders = []
    chunks: list[bytes] = []
    complete = asyncio.Event()

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                complete.set()

    await app(scope, empty_receive(complete.wait), send)
    return status, headers, b"".join(chunks)
