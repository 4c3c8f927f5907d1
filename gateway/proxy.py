"""The proxy endpoint: plain ASGI, headers prepared as byte tuples, small bodies sent whole.

A body with a known length up to WHOLE_BODY_BYTES is read in one piece and sent in one message, in both
directions; anything larger or of unknown length is streamed chunk by chunk. Upstream failures become
problem+json only while the response has not started (after that, the connection is cut).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from urllib.parse import quote

from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from asgi_gateway.gateway.headers import NO_RULES, Field, HeaderRules, client_response_headers, upstream_request_headers
from asgi_gateway.gateway.pool import SAFE_TO_RETRY, Pool
from asgi_gateway.gateway.templates import PCHAR_SAFE, split_template
from asgi_gateway.gateway.upstreams import (
    Body,
    Upstream,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from asgi_gateway.middleware.flags import flag_resolutions
from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.state import RequestState
from asgi_gateway.middleware.types import RawHeaders

logger = logging.getLogger("gateway.proxy")

WHOLE_BODY_BYTES = 256 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class BodyTooLarge(Exception):
    pass


class BadRequestBody(Exception):
    pass


class PathRewrite:
    """`/users/{id}` filled from the route's path parameters, each percent-encoded again."""

    __slots__ = ("_catch_all", "_parts")

    def __init__(self, template: str, catch_all: frozenset[str]) -> None:
        self._parts = split_template(template)
        self._catch_all = catch_all

    def __call__(self, params: dict[str, object]) -> str:
        out: list[str] = []
        for literal, name in self._parts:
            out.append(literal)
            if name is not None:
                out.append(quote(str(params[name]), safe=PCHAR_SAFE + ("/" if name in self._catch_all else "")))
        return "".join(out)


def body_framing(headers: RawHeaders) -> tuple[int | None, bool]:
    """Content-Length (None when absent) and whether Transfer-Encoding is present; a malformed or
    contradictory length is a bad request (RFC 9112 §6.3)."""
    lengths: list[bytes] = []
    encoded = False
    for name, value in headers:
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            encoded = True
    if not lengths:
        return None, encoded
    if len(set(lengths)) != 1 or not lengths[0].isdigit():
        raise BadRequestBody("malformed Content-Length")
    return int(lengths[0]), encoded


async def read_whole(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequestBody("client disconnected during the request body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit and size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class StreamedBody:
    """The request body as an async iterator for the transport, with the size limit checked as it flows."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive, self._limit = receive, limit
        self.too_large = False
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        while not self.finished:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise BadRequestBody("client disconnected during the request body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if self._limit and size > self._limit:
                self.too_large = True
                raise BodyTooLarge
            self.finished = not message.get("more_body", False)
            if chunk:
                yield chunk


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ProxyHandler:
    """Forwards a request to one upstream and relays its answer."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        rewrite: PathRewrite | None = None,
        request_rules: HeaderRules = NO_RULES,
        response_rules: HeaderRules = NO_RULES,
        max_body_bytes: int = 0,
        steering: Sequence[tuple[str, object, Upstream]] = (),
        retry_methods: frozenset[str] = SAFE_TO_RETRY,
    ) -> None:
        self.upstream = upstream
        self.rewrite = rewrite
        self.request_rules = request_rules
        self.response_rules = response_rules
        self.max_body_bytes = max_body_bytes
        self.steering = tuple(steering)  # (flag key, value, upstream): the first match picks the upstream
        self.retry_methods = retry_methods  # sent once more when the connection dropped before any answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upstream = self.steered(scope) if self.steering else self.upstream
        state: RequestState = scope.setdefault("state", {})
        state["upstream"] = upstream.name  # for spans and the access log
        headers: RawHeaders = scope["headers"]
        body: Body
        try:
            length, encoded = body_framing(headers)
            if length is not None and self.max_body_bytes and length > self.max_body_bytes:
                raise BodyTooLarge
            if length is None and not encoded:
                body = b""  # neither Content-Length nor Transfer-Encoding: no body (RFC 9112 §6.3)
            elif length is not None and length <= WHOLE_BODY_BYTES:
                body = await read_whole(receive, self.max_body_bytes)
            else:
                body = StreamedBody(receive, self.max_body_bytes)
        except BodyTooLarge:
            await _too_large(self.max_body_bytes)(scope, receive, send)
            return
        except BadRequestBody as exc:
            await problem_response(400, str(exc))(scope, receive, send)
            return

        outgoing = upstream_request_headers(
            headers, host=upstream.host, scheme=scope["scheme"], client=scope.get("client"), rules=self.request_rules
        )
        try:
            response = await self._send(upstream, scope, outgoing, body)
        except (UpstreamError, BodyTooLarge, BadRequestBody) as exc:
            failure: Exception | None = exc
        else:
            failure = None
        if isinstance(body, StreamedBody) and body.too_large:  # however the transport reported it
            if failure is None:
                await response.close()
            await _too_large(self.max_body_bytes)(scope, receive, send)
            return
        if failure is not None:
            await _upstream_problem(upstream, failure)(scope, receive, send)
            return
        try:
            body_done = not isinstance(body, StreamedBody) or body.finished
            await self._relay(upstream, response, scope, receive, send, body_done=body_done)
        finally:
            await response.close()

    def steered(self, scope: Scope) -> Upstream:
        resolutions = flag_resolutions(scope)
        for key, equals, target in self.steering:
            resolution = resolutions.get(key)
            if resolution is not None and resolution.value == equals:
                return target
        return self.upstream

    def target(self, upstream: Upstream, scope: Scope) -> str:
        if self.rewrite is not None:
            path = self.rewrite(scope["path_params"])
        else:
            raw = scope.get("raw_path")
            path = raw.decode("latin-1") if raw else quote(scope["path"], safe="/" + PCHAR_SAFE)
        query = scope["query_string"]
        return f"{upstream.base_url}{path}?{query.decode('latin-1')}" if query else upstream.base_url + path

    async def _send(self, upstream: Upstream, scope: Scope, headers: list[Field], body: Body) -> UpstreamResponse:
        """One retry for requests this route may repeat, when a (pooled) connection closed before any
        byte of an answer; a streamed body cannot be sent twice."""
        method, target = scope["method"], self.target(upstream, scope)
        if isinstance(upstream.transport, Pool):  # it retries on another target itself
            return await upstream.transport.send(method, target, headers, body, retry=method in self.retry_methods)
        try:
            return await upstream.transport.send(method, target, headers, body)
        except UpstreamDisconnected as exc:
            if method not in self.retry_methods or not isinstance(body, bytes):
                raise
            logger.info("upstream %s dropped the connection (%s); sending %s once more", upstream.name, exc, method)
            return await upstream.transport.send(method, target, headers, body)

    async def _relay(
        self,
        upstream: Upstream,
        response: UpstreamResponse,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        body_done: bool,
    ) -> None:
        start: Message = {
            "type": "http.response.start",
            "status": response.status,
            "headers": client_response_headers(response.headers, self.response_rules),
        }
        if scope["method"] == "HEAD" or response.status in _NO_BODY_STATUSES:
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        length = response.content_length
        if length is not None and length <= WHOLE_BODY_BYTES:
            try:
                content = await response.read()
            except UpstreamError as exc:
                await _upstream_problem(upstream, exc)(scope, receive, send)
                return
            await send(start)
            await send({"type": "http.response.body", "body": content})
            return
        await send(start)
        # Nobody reads `receive` any more once the request body is in, so a disconnect can be watched for.
        disconnected = asyncio.ensure_future(_wait_for_disconnect(receive)) if body_done else None
        try:
            async for chunk in response.chunks():
                if disconnected is not None and disconnected.done():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            if disconnected is not None:
                disconnected.cancel()


def _too_large(limit: int) -> JSONResponse:
    return problem_response(413, f"The request body exceeds {limit} bytes.")


def _upstream_problem(upstream: Upstream, exc: Exception) -> JSONResponse:
    if isinstance(exc, UpstreamTimeout):
        logger.warning("upstream %s timed out: %s", upstream.name, exc)
        return problem_response(504, "The upstream did not answer in time.", upstream=upstream.name)
    logger.warning("upstream %s failed: %s: %s", upstream.name, type(exc).__name__, exc)
    return problem_response(502, "The upstream could not be reached or answered badly.", upstream=upstream.name)
