"""The transport seam: send one request to an upstream, get status, headers and a body to read or stream.

Two implementations, chosen per upstream. aiohttp's client is the default: httpx 0.28's pool collapses under
concurrency (DESIGN.md, "The hot path"). httpx serves what only it does: HTTP/2 upstreams and in-process
ASGI apps. Both map their failures onto one hierarchy, so the proxy answers 502/504 the same way:

    UpstreamError
     ├── UpstreamTimeout        no answer (or no body bytes) within the configured time     -> 504
     ├── UpstreamUnreachable    refused, reset, closed early, name not resolved             -> 502
     │    └── UpstreamDisconnected  the connection closed or reset before any answer byte      -> 502
     └── UpstreamBadResponse    an answer that is not valid HTTP                            -> 502
"""

import asyncio
import errno
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import aiohttp
import httpx
from aiohttp import hdrs
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict
from starlette.types import ASGIApp
from yarl import URL

from asgi_gateway.gateway.headers import Field
from asgi_gateway.middleware.types import Header

Body = bytes | AsyncIterable[bytes]


class UpstreamError(Exception):
    """The upstream could not be asked, or did not answer properly. `kind` labels the failure in metrics."""

    kind: ClassVar[str] = "error"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"


class UpstreamUnreachable(UpstreamError):
    kind = "unreachable"


class UpstreamDisconnected(UpstreamUnreachable):
    """Nothing of an answer arrived: safe to send an idempotent request again (RFC 9112 §9.3.1.1)."""

    kind = "disconnected"


class UpstreamBadResponse(UpstreamError):
    kind = "bad_response"


# An answer's status as metrics label it: its class, so label values stay few.
STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
ERROR_KINDS = frozenset(
    error.kind
    for error in (UpstreamError, UpstreamTimeout, UpstreamUnreachable, UpstreamDisconnected, UpstreamBadResponse)
)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float  # between two reads of the answer, not for the whole answer
    pool: float  # waiting for a free pooled connection


class UpstreamResponse(Protocol):
    status: int
    headers: Sequence[Header]  # as the upstream sent them: names in its case
    content_length: int | None

    @property
    def protocol_version(self) -> str | None:
        """The answer's HTTP version as the conventions spell it (`1.1`, `2`), read only where a span records it."""
        ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None:
        """Return the connection to the pool (or drop it when the body was not read to the end)."""


class ReleasingResponse:
    """An answer that calls `released` once, when it is closed: a target counts a request in flight until its
    body is done (a streamed one keeps the target busy, and a retired target's connections open)."""

    __slots__ = ("_released", "_response", "content_length", "headers", "status")

    def __init__(self, response: UpstreamResponse, released: Callable[[], None]) -> None:
        self._response = response
        self._released: Callable[[], None] | None = released
        self.status, self.headers, self.content_length = response.status, response.headers, response.content_length

    @property
    def protocol_version(self) -> str | None:
        return self._response.protocol_version

    async def read(self) -> bytes:
        return await self._response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.chunks()

    async def close(self) -> None:
        released, self._released = self._released, None
        try:
            await self._response.close()
        finally:
            if released is not None:
                released()


@dataclass(frozen=True, slots=True)
class Upstream:
    """A named upstream: where requests go, the Host header they carry, and the transport that takes them."""

    name: str
    base_url: str  # scheme://host[:port][/base-path], no trailing slash
    host: str
    transport: "Transport"


@runtime_checkable
class WebSocketOpener(Protocol):
    """A transport that can also open WebSocket sessions (aiohttp's, and pools of it)."""

    async def websocket(
        self, url: str, headers: list[Field], *, protocols: Sequence[str], max_message_bytes: int
    ) -> aiohttp.ClientWebSocketResponse: ...


class Transport(Protocol):
    async def start(self) -> None: ...

    async def send(
        self, method: str, url: str, headers: list[Field], body: Body, *, deadline: float | None = None
    ) -> UpstreamResponse:
        """`headers` is read, never changed: fan-out calls to one upstream share one list. `deadline`: the caller
        gives up on the whole exchange (body included) within that many seconds itself, so a timeout between
        reads that is no shorter could never fire first, and a transport may leave it out."""
        ...

    async def aclose(self) -> None: ...


# aiohttp ---------------------------------------------------------------------------------------------------


class _ForwardingRequest(aiohttp.ClientRequest):
    """aiohttp's request, sending the fields the proxy prepared and none of its own (no Accept,
    Accept-Encoding, User-Agent or Content-Type): a proxy forwards what the client sent.

    The stock way, the session's `skip_auto_headers`, copies every field twice more per request, and the
    stock `update_headers` adds them one by one to a new multidict. The session's own multidict, made for
    this request, is taken as it is instead; fields without a Host (the proxy always sends one) get the
    URL's, as aiohttp would give them.
    """

    def update_headers(self, headers: LooseHeaders | None) -> None:
        if isinstance(headers, CIMultiDict) and hdrs.HOST in headers:
            self.headers = headers
        else:
            super().update_headers(headers)

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NO_CONTENT_TYPE


_NO_CONTENT_TYPE: CIMultiDict[None] = CIMultiDict({hdrs.CONTENT_TYPE: None})


# Everything aiohttp raises for a failed exchange (ServerTimeoutError is both a ClientError and a TimeoutError).
_AIOHTTP_FAILURES = (aiohttp.ClientError, OSError)


def _from_aiohttp(exc: BaseException) -> UpstreamError:
    """The hierarchy's error for an aiohttp failure (a function, not a context manager: zero-cost on success)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(message)
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):  # malformed status or headers
        return UpstreamBadResponse(message)
    reset = isinstance(exc, aiohttp.ClientOSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE)
    if reset or isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError | BrokenPipeError):
        return UpstreamDisconnected(message)
    return UpstreamUnreachable(message)


class _AiohttpResponse:
    __slots__ = ("_response", "content_length", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Sequence[Header] = response.raw_headers
        self.content_length = response.content_length

    @property
    def protocol_version(self) -> str | None:
        version = self._response.version
        return None if version is None else f"{version.major}.{version.minor}"

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _AIOHTTP_FAILURES as exc:
            raise _from_aiohttp(exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _AIOHTTP_FAILURES as exc:
            raise _from_aiohttp(exc) from exc

    async def close(self) -> None:
        self._response.release()


def _client_timeout(timeouts: Timeouts, read: float | None) -> aiohttp.ClientTimeout:
    """The pool wait and the connection's set-up bound together, as aiohttp's `connect` does."""
    return aiohttp.ClientTimeout(
        total=None, connect=timeouts.pool + timeouts.connect, sock_connect=timeouts.connect, sock_read=read
    )


class AiohttpTransport:
    """A keep-alive pool per upstream and worker; created in the app's lifespan, closed at shutdown."""

    def __init__(self, *, pool_size: int, timeouts: Timeouts) -> None:
        self._pool_size = pool_size
        self._read = timeouts.read
        self._timeout = _client_timeout(timeouts, timeouts.read)
        # Under a caller's deadline no longer than the read timeout: aiohttp re-arms its read timer on every
        # read (a loop timer made and cancelled each time), for nothing.
        self._within_deadline = _client_timeout(timeouts, None)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=self._pool_size),
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                request_class=_ForwardingRequest,
            )
            # aiohttp resends every RFC-idempotent method (PUT and DELETE too) after a disconnect; which
            # requests may be sent twice is each route's decision (ProxyHandler), so its own retry is off.
            self._session._retry_connection = False

    async def send(
        self, method: str, url: str, headers: list[Field], body: Body, *, deadline: float | None = None
    ) -> UpstreamResponse:
        if self._session is None:
            raise RuntimeError("transport used before start(): run the app's lifespan")
        timeout = self._timeout if deadline is None or deadline > self._read else self._within_deadline
        try:
            response = await self._session.request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            )
        except _AIOHTTP_FAILURES as exc:
            raise _from_aiohttp(exc) from exc
        return _AiohttpResponse(response)

    async def websocket(
        self, url: str, headers: list[Field], *, protocols: Sequence[str], max_message_bytes: int
    ) -> aiohttp.ClientWebSocketResponse:
        """A WebSocket handshake on this pool's session, timed like a request; a refused one is a bad response."""
        if self._session is None:
            raise RuntimeError("transport used before start(): run the app's lifespan")
        try:
            return await self._session.ws_connect(
                URL(url, encoded=True),
                headers=headers,
                protocols=protocols,
                max_msg_size=max_message_bytes + 1,  # aiohttp's bound is exclusive
                autoping=True,
                compress=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise UpstreamBadResponse(f"handshake answered with {exc.status} {exc.message}") from exc
        except _AIOHTTP_FAILURES as exc:
            raise _from_aiohttp(exc) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# httpx -----------------------------------------------------------------------------------------------------


_HTTPX_FAILURES = (httpx.TransportError, OSError)  # TimeoutError is an OSError


def _from_httpx(exc: BaseException) -> UpstreamError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return UpstreamTimeout(message)
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending a response" in message:  # httpcore's wording for a connection closed early
            return UpstreamDisconnected(message)
        return UpstreamBadResponse(message)
    if isinstance(exc, httpx.ReadError):
        return UpstreamDisconnected(message)
    return UpstreamUnreachable(message)


class _HttpxResponse:
    __slots__ = ("_response", "content_length", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Sequence[Header] = response.headers.raw
        length = response.headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None

    @property
    def protocol_version(self) -> str | None:
        return self._response.http_version.removeprefix("HTTP/")

    async def read(self) -> bytes:
        try:
            return b"".join([chunk async for chunk in self._response.aiter_raw()])
        except _HTTPX_FAILURES as exc:
            raise _from_httpx(exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except _HTTPX_FAILURES as exc:
            raise _from_httpx(exc) from exc

    async def close(self) -> None:
        await self._response.aclose()


class HttpxTransport:
    """HTTP/2 upstreams, and ASGI apps called in-process (`app=`), through httpx's transport layer.

    Requests go to the transport directly, not through `AsyncClient`, which would add its own default
    headers (Accept-Encoding among them) to what the client sent.
    """

    def __init__(self, *, pool_size: int, timeouts: Timeouts, http2: bool = False, app: ASGIApp | None = None) -> None:
        self._timeout = httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.read, pool=timeouts.pool
        )
        self._extensions = {"timeout": self._timeout.as_dict()}
        self._app_timeout = timeouts.read
        self._transport: httpx.AsyncBaseTransport
        if app is not None:
            self._transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        else:
            limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
            self._transport = httpx.AsyncHTTPTransport(http2=http2, limits=limits)
        self._in_process = app is not None

    async def start(self) -> None:
        """Nothing to open: httpx connects on first use."""

    async def send(
        self, method: str, url: str, headers: list[Field], body: Body, *, deadline: float | None = None
    ) -> UpstreamResponse:
        """httpx times each read as configured, under a deadline or not: it is not the hot path."""
        fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]  # the client's bytes
        request = httpx.Request(method, url, headers=fields, content=body, extensions=self._extensions)
        try:
            if self._in_process:  # an in-process app has no socket timeouts to trip
                async with asyncio.timeout(self._app_timeout):
                    response = await self._transport.handle_async_request(request)
            else:
                response = await self._transport.handle_async_request(request)
        except _HTTPX_FAILURES as exc:
            raise _from_httpx(exc) from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._transport.aclose()
