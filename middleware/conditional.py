"""Conditional requests (RFC 9110 §13): 304 for reads, 412 for writes, and ETags for responses lacking one.

Place it outside (before) anything that changes the body, such as compression: a generated ETag hashes the
bytes this middleware sees, so a body changed further out would keep a tag naming other bytes. Place it
inside a cache (gateway/chains.py): stored entries then carry their tag, and the cache answers conditional
reads itself with `ReadConditions`, as this middleware does.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, get_args

import anyio
from anyio.lowlevel import checkpoint
from starlette.datastructures import Headers

from asgi_gateway.middleware.etags import (
    ANY,
    EntityTag,
    generate_etag,
    parse_etag,
    parse_etag_list,
    strong_match,
    weak_match,
)
from asgi_gateway.middleware.httpdates import parse_http_date
from asgi_gateway.middleware.internal import empty_receive
from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.types import ASGIApp, Header, Message, RawHeaders, Receive, Scope, Send

__all__ = [
    "ConditionalMiddleware",
    "Preconditions",
    "ReadConditions",
    "Validators",
    "failed_precondition",
    "is_not_modified",
    "not_modified_start",
]

Preconditions = Literal["auto", "gateway", "upstream"]

# RFC 9110 §15.4.5: what a 304 carries; Last-Modified guides caches that validate by date.
_NOT_MODIFIED_KEEP = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"last-modified", b"vary"}
)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READ_CONDITIONS = frozenset({b"if-none-match", b"if-modified-since"})
_WRITE_PRECONDITIONS = frozenset({b"if-match", b"if-none-match", b"if-unmodified-since"})
# The internal GET asks for the whole current representation: no conditions, no range, no request body.
_NOT_FOR_INTERNAL_GET = _WRITE_PRECONDITIONS | {
    b"if-modified-since",
    b"if-range",
    b"range",
    b"content-length",
    b"content-type",
    b"content-encoding",
    b"transfer-encoding",
    b"expect",
}
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


@dataclass(frozen=True, slots=True)
class Validators:
    """The validators of a current representation (RFC 9110 §8.8); None for one it lacks or sent malformed."""

    etag: EntityTag | None = None
    last_modified: datetime | None = None

    @classmethod
    def from_headers(cls, headers: Headers) -> "Validators":
        etag, last_modified = headers.get("etag"), headers.get("last-modified")
        return cls(
            None if etag is None else parse_etag(etag),
            None if last_modified is None else parse_http_date(last_modified),
        )


def is_not_modified(request_headers: Headers, response_headers: Headers) -> bool:
    """Whether a GET/HEAD whose 2xx response has these headers is answered 304 instead (RFC 9110 §13.2.2, 3-4).

    If-None-Match (weak comparison, §13.1.2) decides when present; otherwise If-Modified-Since against
    Last-Modified (§13.1.3). Malformed fields, and an If-Modified-Since holding more than one date, are ignored.
    The caller checks the method and the status: preconditions only apply to what would be a 2xx (§13.2.1).
    """
    if_none_match = _etag_condition(request_headers, "if-none-match")
    if if_none_match is not None:
        etag = response_headers.get("etag")
        return _listed(if_none_match, None if etag is None else parse_etag(etag), weak_match)
    since = _date_condition(request_headers, "if-modified-since")
    last_modified = response_headers.get("last-modified") if since is not None else None
    modified = None if last_modified is None else parse_http_date(last_modified)
    return since is not None and modified is not None and modified <= since


class ReadConditions:
    """A GET's If-None-Match and If-Modified-Since; `of` gives None for a request with neither. A request whose
    one If-None-Match names the response's ETag byte for byte is answered without parsing any field."""

    __slots__ = ("asked_tag", "raw")

    def __init__(self, request_headers: RawHeaders, if_none_match: Sequence[bytes]) -> None:
        self.raw = request_headers
        self.asked_tag = if_none_match[0].strip() if len(if_none_match) == 1 else None

    @classmethod
    def of(cls, request_headers: RawHeaders) -> "ReadConditions | None":
        conditional = False
        if_none_match: list[bytes] = []
        for name, value in request_headers:
            if name in _READ_CONDITIONS:
                conditional = True
                if name == b"if-none-match":
                    if_none_match.append(value)
        return cls(request_headers, if_none_match) if conditional else None

    def answer(self, status: int, response_headers: Sequence[Header]) -> Message | None:
        """The start of the 304 that answers a GET/HEAD in place of this response, or None to send the response:
        only a whole 2xx is replaced (§13.2.1), never an event stream. The ETag naming the one asked tag byte for
        byte matches without parsing (§13.1.2), in the one pass that picks the 304's fields."""
        if not _whole_success(status):
            return None
        if self.asked_tag is not None and (kept := _kept_if_tagged(response_headers, self.asked_tag)) is not None:
            return {"type": "http.response.start", "status": 304, "headers": kept}
        parsed = Headers(raw=list(response_headers))
        if _is_event_stream(parsed.get("content-type", "")) or not is_not_modified(Headers(raw=self.raw), parsed):
            return None
        return not_modified_start(response_headers)


def not_modified_start(response_headers: Iterable[Header]) -> Message:
    """The `http.response.start` of a 304 for a stored or just-built 200: only §15.4.5's fields, no body's.
    ASGI header names are lowercase."""
    headers = [(name, value) for name, value in response_headers if name in _NOT_MODIFIED_KEEP]
    return {"type": "http.response.start", "status": 304, "headers": headers}


def failed_precondition(request_headers: Headers, current: Validators | None) -> str | None:
    """The first write precondition that does not hold, in RFC 9110 §13.2.2 order (steps 1-3), or None.

    `current` is None when the target has no current representation. If-Unmodified-Since counts only without
    If-Match and only against a known Last-Modified (§13.1.4); If-Match compares strongly (§13.1.1), so a weak
    ETag never satisfies it.
    """
    if_match = _etag_condition(request_headers, "if-match")
    if if_match is not None:
        if current is None or not _listed(if_match, current.etag, strong_match):
            return "If-Match"
    else:
        since = _date_condition(request_headers, "if-unmodified-since")
        modified = None if current is None else current.last_modified
        if since is not None and modified is not None and modified > since:
            return "If-Unmodified-Since"
    if_none_match = _etag_condition(request_headers, "if-none-match")
    if if_none_match is not None and current is not None and _listed(if_none_match, current.etag, weak_match):
        return "If-None-Match"  # `*` with a representation, or a listed tag matching weakly (§13.1.2)
    return None


def _listed(
    condition: tuple[EntityTag, ...] | Literal["*"],
    etag: EntityTag | None,
    compare: Callable[[EntityTag, EntityTag], bool],
) -> bool:
    """`*` names any current representation; otherwise some listed tag must compare equal to its ETag."""
    return condition == ANY or (etag is not None and any(compare(tag, etag) for tag in condition))


def _etag_condition(headers: Headers, name: str) -> tuple[EntityTag, ...] | Literal["*"] | None:
    """A list field may arrive as several lines; they are one comma-joined list (RFC 9110 §5.3)."""
    lines = headers.getlist(name)
    return parse_etag_list(", ".join(lines)) if lines else None


def _date_condition(headers: Headers, name: str) -> datetime | None:
    lines = headers.getlist(name)
    return parse_http_date(lines[0]) if len(lines) == 1 else None


class ConditionalMiddleware:
    """Answers conditional requests (RFC 9110 §13) and gives ETags to 2xx GET/HEAD responses lacking one.

    - generate_etag: hash bodies of 2xx GET/HEAD responses without an ETag into one (with Last-Modified alone
      too: §8.8.1 recommends sending both, and the tag is exact where dates have one-second resolution).
      An upstream's own ETag and Last-Modified are never touched. A HEAD is run as a GET inside and its body
      dropped, so HEAD and GET carry the same tag; the app is stopped once the rest of its body is not needed.
    - weak: generate `W/"..."` tags. If-Match compares strongly (§13.1.1), so no write precondition naming a
      weak tag ever holds.
    - max_body_bytes: the most body buffered to hash it. Larger bodies, `text/event-stream` and a Content-Length
      over the limit pass through unbuffered and untagged from the moment that is known.
    - preconditions: who evaluates If-Match, If-Unmodified-Since and If-None-Match on POST/PUT/PATCH/DELETE.
      "gateway" evaluates here against the validators of an internal GET to the inner app (same target and
      headers, no conditions, no body) and strips them before the write, since the upstream cannot know
      generated tags; a failing one is a 412 and the write never reaches the app. "upstream" forwards them.
      "auto" evaluates here only when the tags are generated ones (the internal GET had no ETag of its own).
      The check and the write are not atomic: only an upstream evaluating its own validators closes that gap.

    Conditional headers of a GET are forwarded, so an ETag-aware app's own 304 passes through; If-Range too.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        generate_etag: bool = True,
        weak: bool = False,
        max_body_bytes: int = 1_048_576,
        preconditions: Preconditions = "auto",
    ) -> None:
        if type(max_body_bytes) is not int or max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be a positive integer, got {max_body_bytes!r}")
        if preconditions not in get_args(Preconditions):
            raise ValueError(f"preconditions must be one of {get_args(Preconditions)}, got {preconditions!r}")
        self.app = app
        self.tagging = _Tagging(generate_etag, weak, max_body_bytes)
        self.preconditions = preconditions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["method"] in ("GET", "HEAD"):
            await self._read(scope, receive, send)
        elif scope["method"] in _WRITE_METHODS and self._evaluates_writes(scope):
            await self._write(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _read(self, scope: Scope, receive: Receive, send: Send) -> None:
        head_as_get = scope["method"] == "HEAD" and self.tagging.generate
        responder = _ReadResponder(self.tagging, ReadConditions.of(scope["headers"]), send, head_as_get=head_as_get)
        # A GET answered 304 before its body ended reads the rest and drops it rather than paying for a cancel
        # scope on every request: only an app sending validators it does not evaluate itself gets there, and
        # never with an event stream. A HEAD run as a GET is stopped, as its body is never wanted.
        inner = {**scope, "method": "GET"} if head_as_get else scope
        await responder.run(self.app, inner, receive, stoppable=head_as_get)

    def _evaluates_writes(self, scope: Scope) -> bool:
        """Whether a write may need evaluating here; "auto" without generated tags leaves it to the upstream."""
        if self.preconditions == "upstream" or (self.preconditions == "auto" and not self.tagging.generate):
            return False
        return any(name in _WRITE_PRECONDITIONS for name, _ in scope["headers"])

    async def _write(self, scope: Scope, receive: Receive, send: Send) -> None:
        internal_get = {
            **scope,
            "method": "GET",
            "headers": [(name, value) for name, value in scope["headers"] if name not in _NOT_FOR_INTERNAL_GET],
        }
        current = _CurrentRepresentation(self.tagging)
        await current.run(self.app, internal_get, empty_receive(current.done.wait), stoppable=True)
        if self.preconditions == "auto" and current.own_etag:
            await self.app(scope, receive, send)
            return
        failed = failed_precondition(Headers(scope=scope), current.validators)
        if failed is not None:
            detail = f"{failed} does not hold for the current representation"
            await problem_response(412, detail)(scope, receive, send)
            return
        headers = [(name, value) for name, value in scope["headers"] if name not in _WRITE_PRECONDITIONS]
        await self.app({**scope, "headers": headers}, receive, send)


@dataclass(frozen=True, slots=True)
class _Tagging:
    """The ETag-generation options, fixed at construction."""

    generate: bool
    weak: bool
    limit: int

    def hashes_body(self, status: int, headers: Iterable[Header]) -> bool:
        """Whether to hold a response to hash its body: a whole 2xx (not a 206 part) without an ETag that can end
        and fit the limit. One pass over the raw fields: this runs for every response of a tagging route."""
        if not self.generate or not _whole_success(status):
            return False
        length = b""
        for name, value in headers:
            if name == b"etag" or (name == b"content-type" and _is_event_stream(value.decode("latin-1"))):
                return False
            if name == b"content-length":
                length = value
        return not length.isdigit() or int(length) <= self.limit


def _whole_success(status: int) -> bool:
    return 200 <= status < 300 and status != 206


def _kept_if_tagged(headers: Iterable[Header], tag: bytes) -> list[Header] | None:
    """The fields a 304 keeps, when the response's one ETag is `tag` byte for byte and it is no event stream."""
    kept: list[Header] = []
    etags = 0
    matched = False
    for name, value in headers:
        if name in _NOT_MODIFIED_KEEP:
            kept.append((name, value))
            if name == b"etag":
                etags += 1
                matched = value == tag
        elif name == b"content-type" and _is_event_stream(value.decode("latin-1")):
            return None
    return kept if etags == 1 and matched else None


def _is_event_stream(content_type: str) -> bool:
    """Server-sent events: endless, and live, so neither hashed nor answered 304."""
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


class _Interception(ABC):
    """Per-request: runs the inner app with a `send` of its own. Once the answer is settled, what the app still
    sends is dropped; a stoppable run also cancels an app that keeps streaming, never one whose body has ended
    (its background work still runs)."""

    def __init__(self, tagging: _Tagging) -> None:
        self.tagging = tagging
        self.settled = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.cancel_scope: anyio.CancelScope | None = None

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive, *, stoppable: bool) -> None:
        """Without `stoppable` (a cancel scope costs several microseconds), a body after the answer is dropped."""
        if not stoppable:
            await app(scope, receive, self.send)
            return
        with anyio.CancelScope() as self.cancel_scope:
            await app(scope, receive, self.send)

    @abstractmethod
    async def send(self, message: Message) -> None: ...

    async def discard(self, message: Message) -> None:
        more_body = message["type"] == "http.response.body" and message.get("more_body", False)
        if more_body and self.cancel_scope is not None:
            self.cancel_scope.cancel()
            await checkpoint()  # delivers the cancellation here, even to an app that never yields

    def buffer(self, message: Message) -> bool:
        """Add a held body chunk; False once the body outgrows the limit."""
        chunk = message.get("body", b"")
        self.chunks.append(chunk)
        self.size += len(chunk)
        return self.size <= self.tagging.limit


class _ReadResponder(_Interception):
    """One GET/HEAD: holds the start while the body is hashed, then answers 304 or sends it on."""

    def __init__(self, tagging: _Tagging, conditions: ReadConditions | None, send: Send, *, head_as_get: bool) -> None:
        super().__init__(tagging)
        self.conditions = conditions  # None: not conditional, so never a 304
        self.downstream = send
        self.head_as_get = head_as_get
        self.held: Message | None = None  # the start, while its body is being hashed

    async def send(self, message: Message) -> None:
        if self.settled:
            await self.discard(message)
        elif message["type"] == "http.response.start":
            await self.start(message)
        elif self.held is None:
            await self.downstream(message)
        elif message["type"] != "http.response.body":  # e.g. pathsend: no body here to hash
            await self.flush(more_body=True)
            await self.send(message)
        elif not self.buffer(message):
            await self.flush(more_body=message.get("more_body", False))
        elif not message.get("more_body", False):
            await self.finish()

    async def start(self, message: Message) -> None:
        message.setdefault("headers", [])  # Headers(raw=...) needs the key
        headers, status = message["headers"], message["status"]
        if self.tagging.hashes_body(status, headers) and not message.get("trailers", False):
            self.held = message
        elif self.conditions is not None and (answer := self.conditions.answer(status, headers)) is not None:
            await self.not_modified(answer)
        else:
            await self.pass_start(message)

    async def finish(self) -> None:
        assert self.held is not None
        start, self.held = self.held, None
        etag = str(generate_etag(self.chunks, weak=self.tagging.weak)).encode()
        headers = [*start["headers"], (b"etag", etag)]  # hashes_body saw no ETag
        if self.conditions is not None and (answer := self.conditions.answer(start["status"], headers)) is not None:
            await self.not_modified(answer)
            return
        await self.downstream({**start, "headers": headers})
        body = b"" if self.head_as_get else b"".join(self.chunks)
        await self.downstream({"type": "http.response.body", "body": body, "more_body": False})
        self.settled = True

    async def flush(self, *, more_body: bool) -> None:
        """The body is not to be tagged after all: send what was held, in order, and stream the rest."""
        assert self.held is not None
        start, self.held = self.held, None
        await self.pass_start(start)
        if not self.settled:
            last = len(self.chunks) - 1
            for index, chunk in enumerate(self.chunks):
                await self.downstream(
                    {"type": "http.response.body", "body": chunk, "more_body": more_body or index < last}
                )
        self.chunks.clear()

    async def pass_start(self, message: Message) -> None:
        if not self.head_as_get:
            await self.downstream(message)
            return
        await self.downstream({**message, "trailers": False})  # the GET's trailers are dropped with its body
        await self.downstream(_END)
        self.settled = True

    async def not_modified(self, start: Message) -> None:
        await self.downstream(start)
        await self.downstream(_END)
        self.settled = True


class _CurrentRepresentation(_Interception):
    """The internal GET of a write: collects the current representation's validators (None: there is none)."""

    def __init__(self, tagging: _Tagging) -> None:
        super().__init__(tagging)
        self.validators: Validators | None = None
        self.own_etag = False
        self.done = anyio.Event()  # the answer is known

    async def send(self, message: Message) -> None:
        if self.settled:
            await self.discard(message)
        elif message["type"] == "http.response.start":
            raw = message.get("headers", [])
            headers = Headers(raw=raw)
            if _whole_success(message["status"]):
                self.validators = Validators.from_headers(headers)
                self.own_etag = self.validators.etag is not None
            if not self.tagging.hashes_body(message["status"], raw):
                self.settle()
        elif message["type"] != "http.response.body" or not self.buffer(message):
            self.settle()
        elif not message.get("more_body", False):
            assert self.validators is not None
            self.validators = replace(self.validators, etag=generate_etag(self.chunks, weak=self.tagging.weak))
            self.settle()

    def settle(self) -> None:
        self.settled = True
        self.chunks.clear()
        self.done.set()
