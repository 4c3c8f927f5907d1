"""Request id, metrics and the access line for every request (and WebSocket session), in one layer with one
`send` wrapper.

The library's RequestIdMiddleware and AccessLogMiddleware do the same things one concern per layer; stacked
with a metrics layer they would wrap `send` three times a request, so the gateway composes their parts
(`take_request_id`, `access_line`) in one layer.
Its answers carry no request id but this one's (proxied answers lose the upstream's on the way), so the id
is appended to the answer's fields rather than put in place of another.
"""

import time
from collections.abc import Callable

from asgi_gateway.gateway.metrics import RequestMetrics
from asgi_gateway.gateway.websocket import STATE_SESSION, SessionStats, session_line
from asgi_gateway.middleware.access_log import AccessLogFormat, access_line
from asgi_gateway.middleware.request_id import take_request_id
from asgi_gateway.middleware.types import ASGIApp, Message, Receive, Scope, Send


class RequestRecorder:
    def __init__(
        self,
        app: ASGIApp,
        *,
        request_id_header: str,
        metrics: RequestMetrics,
        write_line: Callable[[str], object] | None,
        log_format: AccessLogFormat = "json",
        traced: bool = True,
    ) -> None:
        """`write_line` takes each access line; None writes none. `traced=False`: no spans to name in it."""
        self.app = app
        self.header = request_id_header.lower().encode("latin-1")
        self.metrics = metrics
        self.write_line = write_line
        self.log_format = log_format
        self.traced = traced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._session(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        header = self.header
        request_id = take_request_id(scope, header)
        status = 500  # what the server answers if the app raises before starting a response
        sent = 0

        async def recording_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                # appended, not replaced: proxied answers come without an id of the upstream's (chains.proxy_handler)
                message["headers"] = [*message.get("headers", ()), (header, request_id)]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            in_flight.dec()
            duration = time.perf_counter() - started
            self.metrics.record(scope, status, duration)
            if self.write_line is not None:
                self.write_line(access_line(scope, status, sent, duration, self.log_format, traced=self.traced))

    async def _session(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket session: its id on the handshake's answer, counted while open, one line when it ends."""
        started = time.perf_counter()
        header = self.header
        request_id = take_request_id(scope, header)
        stats = scope["state"][STATE_SESSION] = SessionStats()

        async def identified_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept" or kind == "websocket.http.response.start":
                message["headers"] = [*message.get("headers", ()), (header, request_id)]
                stats.status = message.get("status", 101)
            await send(message)

        self.metrics.sessions.inc()
        try:
            await self.app(scope, receive, identified_send)
        finally:
            self.metrics.sessions.dec()
            self.metrics.session_ended(scope, stats)
            if self.write_line is not None:
                duration = time.perf_counter() - started
                self.write_line(session_line(scope, stats, duration, self.log_format, traced=self.traced))
