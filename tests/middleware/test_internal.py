"""The internal-request helper: an empty body, a disconnect only once answered, the answer collected."""

import asyncio

import pytest

from asgi_gateway.middleware.internal import call_internal, empty_receive
from asgi_gateway.middleware.types import Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}


async def streaming_watcher(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body, streams two chunks, then waits for the disconnect a client would send."""
    first = await receive()
    await send({"type": "http.response.start", "status": 203, "headers": [(b"x-body", first["body"] or b"-")]})
    await send({"type": "http.response.body", "body": b"ab", "more_body": True})
    await send({"type": "http.response.body", "body": b"cd"})
    assert (await receive())["type"] == "http.disconnect"


async def test_call_internal_collects_a_streamed_answer() -> None:
    assert await call_internal(streaming_watcher, SCOPE) == (203, [(b"x-body", b"-")], b"abcd")


async def test_empty_receive_disconnects_only_once_answered() -> None:
    answered = asyncio.Event()
    receive = empty_receive(answered.wait)
    assert await receive() == {"type": "http.request", "body": b"", "more_body": False}
    order: list[str] = []

    async def listen() -> None:
        message: Message = await receive()
        order.append(message["type"])

    async def answer() -> None:
        order.append("answered")
        answered.set()

    async with asyncio.TaskGroup() as group:
        group.create_task(listen())  # starts first, so it would be first to record without the wait
        group.create_task(answer())
    assert order == ["answered", "http.disconnect"]
