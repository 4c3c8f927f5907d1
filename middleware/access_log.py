"""One log line per request, written when the response is complete: JSON by default, or plain text.

Fields come from the request, from the response as sent, and from what inner layers recorded in
`scope["state"]` (request_id, upstream, cache_status). The trace and span ids are those of the current
OpenTelemetry span, so a log line leads to its trace.

Lines go to `write`: by default the `access` logger, or anything that takes a line, such as a buffered
stream's `write`, which costs a fraction of a logging record per request (the gateway does that).
"""

import logging
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Literal

from opentelemetry import trace

from middleware.types import ASGIApp, Message, Receive, Scope, Send

AccessLogFormat = Literal["json", "text"]


class AccessLogMiddleware:
    def __init__(
        self, app: ASGIApp, *, write: Callable[[str], object] | None = None, log_format: AccessLogFormat = "json"
    ) -> None:
        if log_format not in ("json", "text"):
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
            self.write(self._line(scope, status, sent, time.perf_counter() - started))

    def _line(self, scope: Scope, status: int, sent: int, duration: float) -> str:
        state = scope.get("state", {})
        context = trace.get_current_span().get_span_context()
        valid = context.is_valid
        fields: tuple[tuple[str, str | int | float | None], ...] = (
            ("time", _timestamp()),
            ("method", scope["method"]),
            ("route", getattr(scope.get("route"), "path_format", None)),
            ("path", scope["path"]),
            ("status", status),
            ("duration_ms", round(duration * 1000, 3)),
            ("bytes", sent),
            ("upstream", state.get("upstream")),
            ("cache", state.get("cache_status")),
            ("request_id", state.get("request_id")),
            ("trace_id", f"{context.trace_id:032x}" if valid else None),
            ("span_id", f"{context.span_id:016x}" if valid else None),
        )
        if self.log_format == "json":
            return "{" + ",".join(f'"{key}":{_json(value)}' for key, value in fields) + "}"
        return " ".join(f"{key}={'-' if value is None else value}" for key, value in fields)


def _json(value: str | int | float | None) -> str:
    """One JSON value; the C string escaper alone costs a fraction of json.dumps on a whole dict."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    return str(value)


_second: tuple[int, str] = (-1, "")


def _timestamp() -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is formatted once per second."""
    global _second
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second[1]}.{int((now - second) * 1000):03d}+00:00"
