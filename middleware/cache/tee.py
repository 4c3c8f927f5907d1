"""`ResponseTee`: one upstream response, streamed to the client while a copy is kept for the store."""

import asyncio
from collections.abc import Callable, Sequence

from asgi_gateway.middleware.cache.keys import request_vary_values
from asgi_gateway.middleware.cache.policy import CacheOptions, Storable, assess
from asgi_gateway.middleware.cache.request import CacheRequest
from asgi_gateway.middleware.cache.status import CacheStatus
from asgi_gateway.middleware.cache.store import StoredResponse
from asgi_gateway.middleware.state import RequestState
from asgi_gateway.middleware.types import Header, Message, Send

__all__ = ["ResponseTee", "send_not_modified"]

_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class ResponseTee:
    """Held until its first body chunk (so the storing decision is known when Cache-Status is written), then
    streamed to `client` (None: nobody is waiting, as in a background refresh). Past `max_object_bytes` the
    copy is dropped and streaming goes on. Statuses in `divert` (and 5xx with `errors_divert`) are held back
    entirely, for the caller to answer otherwise."""

    def __init__(
        self,
        options: CacheOptions,
        clock: Callable[[], float],
        request: CacheRequest,
        client: Send | None,
        reason: str,
        *,
        divert: tuple[int, ...],
        errors_divert: bool,
    ) -> None:
        self.options, self.clock, self.request, self.client, self.reason = options, clock, request, client, reason
        self.divert, self.errors_divert = divert, errors_divert
        self.request_time = clock()
        self.response_time = self.request_time
        self.status = 0
        self.headers: list[Header] = []
        self.start: Message | None = None
        self.deadline: asyncio.Timeout | None = None
        self.committed = self.diverted = self.storing = self.complete = False
        self.decision: Storable | str | None = None
        self.chunks: list[bytes] = []
        self.size = 0

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers", []))
            self.response_time = self.clock()
            self.diverted = self.status in self.divert or (self.errors_divert and self.status >= 500)
            self.start = message
            return
        if self.diverted:
            return
        if kind != "http.response.body":
            if self.client is not None:
                await self.client(message)
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        if not self.committed:
            await self._commit(len(body), more)
        if self.storing:
            self.size += len(body)
            if self.size > self.options.max_object_bytes:
                self.storing, self.chunks = False, []
            else:
                self.chunks.append(body)
        self.complete = not more
        if self.client is None:
            return
        if not self.request.is_head:
            await self.client(message)
        elif not more:
            await self.client({"type": "http.response.body", "body": b""})

    async def finish(self) -> None:
        """An app that ended after its start message without a body message gets an empty one."""
        if self.start is not None and not self.committed:
            await self.send({"type": "http.response.body", "body": b""})

    def stored(self) -> StoredResponse | None:
        if not (self.storing and self.complete and isinstance(self.decision, Storable)):
            return None
        values = request_vary_values(self.request.scope, self.decision.vary)
        return self.decision.entry(b"".join(self.chunks), values)

    async def _commit(self, first_chunk: int, more: bool) -> None:
        self.committed = True
        if self.deadline is not None:
            self.deadline.reschedule(None)  # the client is being answered: no falling back now
        options = self.options
        request = self.request
        decision = assess(
            self.status,
            self.headers,
            request_time=self.request_time,
            response_time=self.response_time,
            authorized=request.authorized,
            request_no_store=request.demands.no_store,
            options=options,
        )
        if isinstance(decision, Storable) and _too_large(self.headers, first_chunk, more, options.max_object_bytes):
            decision = "too-large"
        self.decision = decision
        self.storing = isinstance(decision, Storable)
        if self.client is None:
            return
        assert self.start is not None
        state: RequestState = request.scope["state"]
        state["cache_status"] = "miss"
        status = CacheStatus(
            fwd=self.reason,
            # a stored response was there: say how the upstream answered
            fwd_status=self.status if self.reason in ("stale", "request") else None,
            stored=self.storing,
            not_stored=decision if isinstance(decision, str) else None,
        )
        answer = [(b"cache-status", status.encode(options.name.encode()))]
        if request.conditions is not None and (start := request.conditions.answer(self.status, self.headers)):
            await send_not_modified(start, answer, self.client)
            self.client = None  # answered: the body is only read to store it
            return
        await self.client({**self.start, "headers": [*self.headers, *answer]})


def _too_large(headers: Sequence[Header], first_chunk: int, more: bool, limit: int) -> bool:
    """Known too large before streaming: by its first and only chunk, or by its Content-Length."""
    if not more:
        return first_chunk > limit
    length = next((value for name, value in headers if name == b"content-length"), None)
    return length is not None and length.isdigit() and int(length) > limit


async def send_not_modified(start: Message, answer: list[Header], send: Send) -> None:
    """A 304 in place of a 200 the cache would send, saying how the cache answered (Age, Cache-Status)."""
    start["headers"] += answer
    await send(start)
    await send(_END)
