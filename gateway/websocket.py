"""WebSocket sessions through the gateway: the client's handshake is accepted once the upstream's succeeded,
then messages are relayed in each direction, in order, until either side closes.

The server side is the ASGI websocket scope (uvicorn, granian); the upstream side is aiohttp's `ws_connect` on
the upstream's own pool. The handshake goes upstream like an HTTP request of the route (path rewrite, header
rules, X-Forwarded-*, request id, flags, trace context; `when:` steering picks the upstream); the client's
`Sec-WebSocket-Protocol` list is offered upstream and the upstream's choice is the client's answer.

Backpressure: each direction awaits the send of a message before it receives the next, so a session holds at
most one message per direction (at most `max_message_bytes`) beside the transports' own buffers: uvicorn stops
reading the client's socket while a message waits for the gateway, aiohttp stops reading the upstream's once
64 KiB wait, and both sides' sends wait while the peer's socket buffer is full. Ping frames do not cross (ASGI
carries none): each hop answers its peer's pings.
"""

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, replace

import aiohttp
import msgspec
from opentelemetry import propagate, trace

from asgi_gateway.gateway.headers import Field, upstream_request_headers
from asgi_gateway.gateway.proxy import ProxyHandler
from asgi_gateway.gateway.upstreams import UpstreamError, WebSocketOpener
from asgi_gateway.gateway.wrapped import innermost
from asgi_gateway.middleware.access_log import AccessLogFormat, encode_line, span_ids, timestamp
from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.tracing import PROPAGATION_FIELDS
from asgi_gateway.middleware.types import Receive, Scope, Send

STATE_SESSION = "websocket"  # scope["state"] key of the session's SessionStats
# The client's handshake fields: aiohttp makes the upstream's own (key, version, offered protocols); extensions
# (compression) are each hop's own.
HANDSHAKE_FIELDS = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-protocol", b"sec-websocket-extensions"}
)
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}
_PROPAGATION_NAMES = frozenset(name.decode("latin-1") for name in PROPAGATION_FIELDS)
# Close codes a close frame may not carry (RFC 6455 §7.4.1), and what the other side is told instead.
_NO_CODE, _ABNORMAL, _TLS_FAILED = 1005, 1006, 1015
_GOING_AWAY, _TOO_BIG, _BAD_GATEWAY = 1001, 1009, 1014


@dataclass(slots=True)
class SessionStats:
    """What a session did, for its access line, metrics and span: messages and bytes each way, how it ended."""

    status: int = 403  # of the handshake: 101 once accepted
    messages_in: int = 0  # from the client
    bytes_in: int = 0
    messages_out: int = 0  # to the client
    bytes_out: int = 0
    close_code: int | None = None  # the client connection's
    closed_by: str | None = None  # client, upstream or gateway
    last_message: float = 0.0  # loop time, for the idle timeout


@dataclass(frozen=True, slots=True)
class _End:
    """How a session ends: the close each side still has to be sent (None: that side closed itself)."""

    client: tuple[int, str] | None
    upstream: tuple[int, str] | None
    code: int  # the client connection's close code
    by: str


class WebSocketProxy:
    """Relays one route's WebSocket sessions to the upstream its HTTP requests go to."""

    def __init__(self, http: ProxyHandler, *, idle_timeout: float, max_message_bytes: int) -> None:
        """`http` is the route's proxy: its upstream, steering, rewrite and request header rules apply."""
        self.http = http
        self.request_rules = replace(
            http.request_rules, upstream_drop=http.request_rules.upstream_drop | HANDSHAKE_FIELDS
        )
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        stats: SessionStats = state.setdefault(STATE_SESSION, SessionStats())
        if (await receive())["type"] != "websocket.connect":
            return  # gone before the handshake was read
        http = self.http
        upstream = http.steered(scope) if http.steering else http.upstream
        state["upstream"] = upstream.name
        span = trace.get_current_span()
        if span.is_recording():
            template = scope["route"].path_format
            span.update_name(f"WEBSOCKET {template}")
            span.set_attributes({"http.route": template, "gateway.route": scope["route"].name})
            span.set_attribute("gateway.upstream", upstream.name)
        transport = innermost(upstream.transport)
        if not isinstance(transport, WebSocketOpener):  # httpx serves HTTP/2 and in-process apps: no sessions
            await refuse(scope, receive, send, 502, "The upstream does not take WebSocket sessions.", upstream.name)
            return
        headers = upstream_request_headers(
            scope["headers"],
            host=upstream.host,
            scheme=_HTTP_SCHEMES.get(scope.get("scheme", "ws"), "http"),
            client=scope.get("client"),
            rules=self.request_rules,
        )
        try:
            upstream_ws = await transport.websocket(
                http.target(upstream, scope),
                with_trace_context(headers),
                protocols=scope.get("subprotocols", ()),
                max_message_bytes=self.max_message_bytes,
            )
        except UpstreamError as exc:
            await refuse(scope, receive, send, 502, f"The upstream did not take the WebSocket: {exc}", upstream.name)
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream_ws.protocol})
            stats.last_message = asyncio.get_running_loop().time()
            end = await self._relay(upstream_ws, receive, send, stats)
            await _close(end, upstream_ws, send)
            stats.close_code, stats.closed_by = end.code, end.by
        finally:
            await upstream_ws.close()
            if span.is_recording():
                span.set_attributes(_span_attributes(stats))

    async def _relay(
        self, upstream: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send, stats: SessionStats
    ) -> _End:
        """Both directions and the idle timer at once; the first to end ends the session."""
        tasks = [
            asyncio.ensure_future(self._to_upstream(upstream, receive, stats)),
            asyncio.ensure_future(self._to_client(upstream, send, stats)),
            asyncio.ensure_future(self._idle(stats)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(task for task in tasks if task in done).result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _to_upstream(
        self, upstream: aiohttp.ClientWebSocketResponse, receive: Receive, stats: SessionStats
    ) -> _End:
        limit = self.max_message_bytes
        time = asyncio.get_running_loop().time
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":  # websocket.disconnect
                code = message.get("code", _NO_CODE)
                upstream_code = 1000 if code == _NO_CODE else _GOING_AWAY if code in (_ABNORMAL, _TLS_FAILED) else code
                return _End(None, (upstream_code, message.get("reason") or ""), code, "client")
            text = message.get("text")
            size = _size(text) if text is not None else len(message.get("bytes") or b"")
            if size > limit:
                reason = f"message over {limit} bytes"
                return _End((_TOO_BIG, reason), (_GOING_AWAY, "client sent a " + reason), _TOO_BIG, "gateway")
            try:
                if text is not None:
                    await upstream.send_str(text)
                else:
                    await upstream.send_bytes(message.get("bytes") or b"")
            except (aiohttp.ClientError, OSError):
                return _End((_BAD_GATEWAY, "upstream connection lost"), None, _BAD_GATEWAY, "upstream")
            stats.messages_in += 1
            stats.bytes_in += size
            stats.last_message = time()

    async def _to_client(self, upstream: aiohttp.ClientWebSocketResponse, send: Send, stats: SessionStats) -> _End:
        time = asyncio.get_running_loop().time
        while True:
            message = await upstream.receive()
            kind = message.type
            if kind is aiohttp.WSMsgType.TEXT:
                size = _size(message.data)
                outgoing = {"type": "websocket.send", "text": message.data}
            elif kind is aiohttp.WSMsgType.BINARY:
                size = len(message.data)
                outgoing = {"type": "websocket.send", "bytes": message.data}
            elif kind is aiohttp.WSMsgType.CLOSE:  # aiohttp has answered it
                code = message.data if message.data not in (None, _NO_CODE) else 1000
                code = _BAD_GATEWAY if code in (_ABNORMAL, _TLS_FAILED) else code
                return _End((code, message.extra or ""), None, code, "upstream")
            else:  # ERROR (a message over the limit, a broken frame) or a lost connection: aiohttp closed it
                failure = "upstream connection lost"
                if isinstance(message.data, aiohttp.WebSocketError) and message.data.code == _TOO_BIG:
                    failure = f"upstream sent a message over {self.max_message_bytes} bytes"
                return _End((_BAD_GATEWAY, failure), None, _BAD_GATEWAY, "upstream")
            try:
                await send(outgoing)
            except OSError:  # the client went away (uvicorn's ClientDisconnected)
                return _End(None, (_GOING_AWAY, ""), _ABNORMAL, "client")
            stats.messages_out += 1
            stats.bytes_out += size
            stats.last_message = time()

    async def _idle(self, stats: SessionStats) -> _End:
        loop = asyncio.get_running_loop()
        # the deadline moves with every message: re-armed only when it passes, not once per message
        while (left := stats.last_message + self.idle_timeout - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)
        closing = (_GOING_AWAY, "idle timeout")
        return _End(closing, closing, _GOING_AWAY, "gateway")


async def _close(end: _End, upstream: aiohttp.ClientWebSocketResponse, send: Send) -> None:
    """Tell each side what the other did; a side already gone is not an error."""
    if end.client is not None:
        with contextlib.suppress(OSError, RuntimeError):  # closed meanwhile (uvicorn's ClientDisconnected)
            await send({"type": "websocket.close", "code": end.client[0], "reason": end.client[1]})
    if end.upstream is not None:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await upstream.close(code=end.upstream[0], message=end.upstream[1].encode())


def _size(text: str) -> int:
    """A text message's length in UTF-8 bytes, without encoding it when it is ASCII."""
    return len(text) if text.isascii() else len(text.encode())


def with_trace_context(headers: list[Field]) -> list[Field]:
    """The session span's trace context in place of the client's, when tracing is on (otherwise the client's
    passes on, as on HTTP routes)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return headers
    return [(name, value) for name, value in headers if name not in _PROPAGATION_NAMES] + list(carrier.items())


def refuse(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str, upstream: str | None = None
) -> Awaitable[None]:
    """An answer to a handshake the gateway will not complete: problem+json over HTTP where the server can send
    one (the ASGI websocket.http.response extension); otherwise a gateway failure is a close with 1014 after
    the handshake, anything else a refused handshake (the server's 403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        return problem_response(status, detail, upstream=upstream)(scope, receive, send)
    return _close_instead(send, status, detail)


async def _close_instead(send: Send, status: int, detail: str) -> None:
    if status >= 500:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": _BAD_GATEWAY, "reason": detail[:120]})
    else:
        await send({"type": "websocket.close", "code": 1008})


def _span_attributes(stats: SessionStats) -> dict[str, int | str]:
    attributes: dict[str, int | str] = {
        "gateway.websocket.messages_in": stats.messages_in,
        "gateway.websocket.messages_out": stats.messages_out,
        "gateway.websocket.bytes_in": stats.bytes_in,
        "gateway.websocket.bytes_out": stats.bytes_out,
    }
    if stats.close_code is not None:
        attributes["gateway.websocket.close_code"] = stats.close_code
    return attributes


def session_line(
    scope: Scope, stats: SessionStats, duration: float, log_format: AccessLogFormat, *, traced: bool
) -> str:
    """The access line of a finished session: the request line's fields, with bytes and messages each way and
    the close code."""
    state = scope.get("state") or {}
    route = getattr(scope.get("route"), "path_format", None)
    upstream, request_id = state.get("upstream"), state.get("request_id")
    ids = span_ids(trace.get_current_span().get_span_context()) if traced else None
    if log_format == "text":
        trace_id, span_id = ids or ("-", "-")
        return (
            f"time={timestamp()} method=WEBSOCKET route={route or '-'} path={scope['path']} status={stats.status} "
            f"duration_ms={duration * 1000:.3f} bytes_in={stats.bytes_in} bytes_out={stats.bytes_out} "
            f"messages_in={stats.messages_in} messages_out={stats.messages_out} close_code={stats.close_code or '-'} "
            f"closed_by={stats.closed_by or '-'} upstream={upstream or '-'} request_id={request_id or '-'} "
            f"trace_id={trace_id} span_id={span_id}"
        )
    line = _SessionLine(
        timestamp(),
        "WEBSOCKET",
        route,
        scope["path"],
        stats.status,
        msgspec.Raw(b"%.3f" % (duration * 1000)),
        stats.bytes_in,
        stats.bytes_out,
        stats.messages_in,
        stats.messages_out,
        stats.close_code,
        stats.closed_by,
        upstream,
        request_id,
        ids[0] if ids else None,
        ids[1] if ids else None,
    )
    return encode_line(line).decode()


class _SessionLine(msgspec.Struct):
    """The session's JSON line: the request line's members where they share them, in the same order."""

    time: str
    method: str
    route: str | None
    path: str
    status: int
    duration_ms: msgspec.Raw
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    close_code: int | None
    closed_by: str | None
    upstream: str | None
    request_id: str | None
    trace_id: str | None
    span_id: str | None
