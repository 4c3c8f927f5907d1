"""One log line per request, written when the response is complete: JSON by default, or plain text.

Fields come from the request, from the response as sent, and from what inner layers recorded in
`scope["state"]` (request_id, upstream, cache_status). The trace and span ids are those of the current
OpenTelemetry span, so a log line leads to its trace.

Lines go to `write`: by default the `access` logger, or anything that takes a line, such as a buffered
stream's `write`, which spares a logging record per request (the gateway does that).
`access_line` formats one, for layers that write it among other things.
"""

import logging
import time
from collections.abc import Callable
from typing import Literal

import msgspec
from opentelemetry.trace import SpanContext, get_current_span

from asgi_gateway.middleware.state import RequestState
from asgi_gateway.middleware.types import ASGIApp, Message, Receive, Scope, Send

AccessLogFormat = Literal["json", "text"]
FORMATS: tuple[AccessLogFormat, ...] = ("json", "text")


class _JsonLine(msgspec.Struct):
    """The JSON line's members, in order; a Struct, so the line is encoded without building a dict."""

    time: str
    method: str
    route: str | None
    path: str
    status: int
    duration_ms: msgspec.Raw  # three decimals, as the text line has them
    bytes: int
    upstream: str | None
    cache: str | None
    request_id: str | None
    trace_id: str | None
    span_id: str | None


encode_line = msgspec.json.Encoder().encode


class AccessLogMiddleware:
    def __init__(
        self, app: ASGIApp, *, write: Callable[[str], object] | None = None, log_format: AccessLogFormat = "json"
    ) -> None:
        if log_format not in FORMATS:
            raise ValueError(f"log_format must be 'json' or 'text', got {log_format!r}")
        self.app = app
        self.write = write or logging.getLogger("access").info
        self.log_format = log_format

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting a response
        sent = 0

        async def recording_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.write(access_line(scope, status, sent, time.perf_counter() - started, self.log_format))


def access_line(
    scope: Scope,
    status: int,
    sent: int,
    duration: float,
    log_format: AccessLogFormat = "json",
    *,
    traced: bool = True,
) -> str:
    """The line for a finished request, which runs for every request.

    `traced=False` skips the lookup of the current span where no tracing runs."""
    state: RequestState = scope.get("state") or {}
    route = getattr(scope.get("route"), "path_format", None)
    upstream, cache, request_id = state.get("upstream"), state.get("cache_status"), state.get("request_id")
    ids = span_ids(get_current_span().get_span_context()) if traced else None
    if log_format == "text":
        trace_id, span_id = ids or ("-", "-")
        return (
            f"time={timestamp()} method={scope['method']} route={route or '-'} path={scope['path']} "
            f"status={status} duration_ms={duration * 1000:.3f} bytes={sent} upstream={upstream or '-'} "
            f"cache={cache or '-'} request_id={request_id or '-'} trace_id={trace_id} span_id={span_id}"
        )
    line = _JsonLine(
        timestamp(),
        scope["method"],
        route,
        scope["path"],
        status,
        msgspec.Raw(b"%.3f" % (duration * 1000)),
        sent,
        upstream,
        cache,
        request_id,
        ids[0] if ids else None,
        ids[1] if ids else None,
    )
    return encode_line(line).decode()


def span_ids(context: SpanContext) -> tuple[str, str] | None:
    return (f"{context.trace_id:032x}", f"{context.span_id:016x}") if context.is_valid else None


_second: tuple[int, str] = (-1, "")
_stamp: tuple[int, str] = (-1, "")


def timestamp() -> str:
    """ISO 8601 UTC with milliseconds, formatted once per millisecond (several requests end in each under load),
    its date and time of day once per second."""
    global _second, _stamp
    millis = int(time.time() * 1000)
    if millis != _stamp[0]:
        second, fraction = divmod(millis, 1000)
        if second != _second[0]:
            _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _stamp = (millis, f"{_second[1]}.{fraction:03d}+00:00")
    return _stamp[1]
