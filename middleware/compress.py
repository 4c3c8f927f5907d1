"""Content codings on the way out (RFC 9110 §8.4): br, zstd or gzip, chosen by the client's Accept-Encoding.

Place it outside a cache and outside conditional requests (gateway/chains.py): the inner layers are asked for
identity, so a cache stores one body that every client gets in its own coding; a coded answer's ETag names its
coding, and a request naming a coded tag reaches the inner layers with the stored tag, so their 304 goes out under
the coded tag again.
"""

import functools
import gzip
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

import brotli
import xxhash
import zstandard

from asgi_gateway.middleware.etags import EntityTag, format_etag_list, parse_etag, parse_etag_list
from asgi_gateway.middleware.types import ASGIApp, Header, Message, RawHeaders, Receive, Scope, Send

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_SKIP_TYPES",
    "LEVEL_RANGES",
    "CodedBodies",
    "Coding",
    "CompressionMiddleware",
    "negotiate",
]

Coding = Literal["br", "zstd", "gzip"]
CODINGS: Final[tuple[Coding, ...]] = get_args(Coding)
LEVEL_RANGES: Final[Mapping[Coding, range]] = {"br": range(12), "zstd": range(1, 23), "gzip": range(1, 10)}
# Fast enough to code on the request path; the slowest levels are meant for bodies coded ahead of time.
DEFAULT_LEVELS: Final[Mapping[Coding, int]] = {"br": 4, "zstd": 3, "gzip": 6}
# Bodies that are compressed already: coding them again costs CPU and saves nothing.
DEFAULT_SKIP_TYPES: Final = (
    "image/*",
    "video/*",
    "audio/*",
    "font/woff",
    "font/woff2",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/vnd.rar",
)

_QVALUE = re.compile(r"[ \t]*q=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)[ \t]*", re.IGNORECASE)  # RFC 9110 §12.4.2
_ALIASES = {"x-gzip": "gzip"}  # RFC 9110 §8.4.1.3
_NOT_CODED_STATUSES = frozenset({204, 206, 304})  # no content, a part of the identity body, no body
_IDENTITY_INWARD: Header = (b"accept-encoding", b"identity")
_VARY: Header = (b"vary", b"Accept-Encoding")


@functools.lru_cache(maxsize=512)
def _weights(accept_encoding: str) -> dict[str, float]:
    """Each listed coding's qvalue, lowercased; an element with a malformed weight is ignored, as is a repeat."""
    weights: dict[str, float] = {}
    for element in accept_encoding.split(","):
        name, _, weight = element.partition(";")
        coding = name.strip(" \t").lower()
        if not coding:
            continue
        if not weight:
            weights.setdefault(_ALIASES.get(coding, coding), 1.0)
        elif (match := _QVALUE.fullmatch(weight)) is not None:
            weights.setdefault(_ALIASES.get(coding, coding), float(match[1]))
    return weights


def negotiate(accept_encoding: str | None, offered: Sequence[str]) -> str | None:
    """The coding to send (RFC 9110 §12.5.3), or None for identity; `offered` is in the server's preference order.

    The highest qvalue wins, ties going to the earlier offered coding and any coding beating an identity of equal
    weight; `*` weighs every coding the field does not name (identity too); q=0 refuses. Identity is sent when the
    field is absent (any coding would do, but clients sending none rarely decode one) and when nothing offered is
    acceptable, even if identity was refused: an answer the client may still use beats a 406.
    """
    if accept_encoding is None:
        return None
    weights = _weights(accept_encoding)
    anything = weights.get("*", 0.0)
    best, best_weight = None, 0.0
    for coding in offered:
        weight = weights.get(coding, anything)
        if weight > best_weight:
            best, best_weight = coding, weight
    return best if best is not None and best_weight >= weights.get("identity", anything) else None


def _compress(coding: Coding, level: int, body: bytes) -> bytes:
    if coding == "br":
        return cast(bytes, brotli.compress(body, quality=level))
    if coding == "zstd":
        return zstandard.ZstdCompressor(level=level).compress(body)
    return gzip.compress(body, compresslevel=level, mtime=0)  # no timestamp: equal bodies, equal bytes


@dataclass(frozen=True, slots=True)
class _Stream:
    """A coder for a body of unknown end: each chunk goes out flushed, so nothing waits on the next."""

    process: Callable[[bytes], bytes]
    flush: Callable[[], bytes]
    finish: Callable[[], bytes]

    @classmethod
    def of(cls, coding: Coding, level: int) -> "_Stream":
        if coding == "br":
            coder = brotli.Compressor(quality=level)
            return cls(coder.process, coder.flush, coder.finish)
        if coding == "zstd":
            frames = zstandard.ZstdCompressor(level=level).compressobj()
            return cls(frames.compress, lambda: frames.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK), frames.flush)
        deflate = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # the gzip wrapper
        return cls(deflate.compress, lambda: deflate.flush(zlib.Z_SYNC_FLUSH), deflate.flush)

    def chunk(self, data: bytes, *, last: bool) -> bytes:
        return self.process(data) + (self.finish() if last else self.flush())


class CodedBodies:
    """Coded bodies by (body digest, coding, level) within a byte budget, the least recently used dropped first: a
    hot body (a cache hit) is coded once per coding instead of once per request. Keyed by the bytes, not by a
    URL or an ETag, so one memo may serve many middlewares."""

    def __init__(self, budget: int = 16 << 20) -> None:
        if type(budget) is not int or budget < 0:
            raise ValueError(f"the memo's budget must be a non-negative number of bytes, got {budget!r}")
        self.budget = budget
        self.used = 0
        self.entries: OrderedDict[tuple[bytes, Coding, int], bytes] = OrderedDict()

    def coded(self, body: bytes, coding: Coding, level: int) -> bytes:
        if self.budget == 0:
            return _compress(coding, level, body)
        key = (xxhash.xxh3_128_digest(body), coding, level)
        coded = self.entries.get(key)
        if coded is not None:
            self.entries.move_to_end(key)
            return coded
        coded = _compress(coding, level, body)
        if len(coded) <= self.budget:
            self.entries[key] = coded
            self.used += len(coded)
            while self.used > self.budget:
                self.used -= len(self.entries.popitem(last=False)[1])
        return coded


class CompressionMiddleware:
    """Codes answers in the best of `codings` the client accepts (RFC 9110 §12.5.3); see `negotiate`.

    - codings: offered, in the server's order of preference. levels: per coding (LEVEL_RANGES; DEFAULT_LEVELS).
    - min_size: bodies shorter than this (by Content-Length, or a body sent whole) go out as they are.
    - skip_types: media types (`type/*` for a whole type) never coded, beside DEFAULT_SKIP_TYPES; `+json` and
      `+xml` types always are. `text/event-stream` never is: events must reach the client as they happen.
    - memo: where coded bodies are kept for the next answer with the same body; by default one of its own.

    Left as they are: answers with a Content-Encoding or `Cache-Control: no-transform`, 1xx, 204, 206 and 304
    (whose ETag is mapped, see below). Every other answer of a codable type gets `Vary: Accept-Encoding`, coded or
    not. A HEAD gets the headers its GET would. A body sent whole is coded whole, with its length; a streamed
    one chunk by chunk, flushed, without a length.

    The inner app is asked for identity (Accept-Encoding: identity), so a cache inside keeps one body for all.
    A coded answer's ETag gets the coding as a suffix (`"abc"` -> `"abc-br"`, weak stays weak); tags with the
    suffix of the coding this request negotiated lose it in If-None-Match and If-Match on the way in, and a 304
    for such a tag goes out with the coded ETag.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        codings: Sequence[Coding] = CODINGS,
        levels: Mapping[Coding, int] | None = None,
        min_size: int = 1024,
        skip_types: Iterable[str] = (),
        memo: CodedBodies | None = None,
    ) -> None:
        codings = tuple(codings)
        if not codings or len(set(codings)) != len(codings) or not set(codings) <= set(CODINGS):
            raise ValueError(f"codings must name some of {CODINGS} once each, got {codings!r}")
        given = dict(levels or {})
        for coding, level in given.items():
            allowed = LEVEL_RANGES.get(coding)
            if allowed is None or type(level) is not int or level not in allowed:
                raise ValueError(f"levels: {coding!r} takes an integer level in {_span(allowed)}, got {level!r}")
        if type(min_size) is not int or min_size < 0:
            raise ValueError(f"min_size must be a non-negative integer, got {min_size!r}")
        skipped = {media_type.lower() for media_type in (*DEFAULT_SKIP_TYPES, *skip_types)}
        for media_type in skipped:
            major, slash, minor = media_type.partition("/")
            if not (major and slash and minor) or (minor != "*" and "*" in minor):
                raise ValueError(f"skip_types: {media_type!r} is not a media type (type/subtype or type/*)")
        self.app = app
        self.codings = codings
        self.levels: dict[Coding, int] = {**DEFAULT_LEVELS, **given}
        self.min_size = min_size
        self.skip_types = frozenset(skipped)
        self.memo = CodedBodies() if memo is None else memo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lines = [value for name, value in scope["headers"] if name == b"accept-encoding"]
        coding = cast(Coding | None, negotiate(b",".join(lines).decode("latin-1") if lines else None, self.codings))
        headers, stripped = _inward(scope["headers"], coding)
        responder = _Responder(self, coding, stripped, scope["method"] == "HEAD", send)
        await self.app({**scope, "headers": headers}, receive, responder.send)

    def codes(self, content_type: bytes | None) -> bool:
        """Whether a body of this type is worth coding: unknown types are, compressed formats and events not."""
        if content_type is None:
            return True
        media_type = content_type.decode("latin-1").partition(";")[0].strip(" \t").lower()
        if media_type.endswith(("+json", "+xml")):
            return True
        if media_type == "text/event-stream":
            return False
        return media_type not in self.skip_types and media_type.partition("/")[0] + "/*" not in self.skip_types


def _span(allowed: range | None) -> str:
    return "none (not a coding)" if allowed is None else f"{allowed.start}..{allowed.stop - 1}"


def _inward(headers: RawHeaders, coding: Coding | None) -> tuple[RawHeaders, frozenset[str]]:
    """The request's fields for the inner app, and the stored tags whose coded form the request named."""
    inward: RawHeaders = [_IDENTITY_INWARD]
    stripped: set[str] = set()
    suffix = f"-{coding}"
    for name, value in headers:
        if name == b"accept-encoding":
            continue
        if coding is not None and name in (b"if-none-match", b"if-match"):
            tags = parse_etag_list(value.decode("latin-1"))
            if isinstance(tags, tuple) and any(tag.opaque.endswith(suffix) for tag in tags):
                stored = tuple(_uncoded(tag, suffix) for tag in tags)
                stripped.update(tag.opaque for tag, given in zip(stored, tags, strict=True) if tag is not given)
                value = format_etag_list(stored).encode("latin-1")
        inward.append((name, value))
    return inward, frozenset(stripped)


def _uncoded(tag: EntityTag, suffix: str) -> EntityTag:
    return EntityTag(tag.opaque.removesuffix(suffix), tag.weak) if tag.opaque.endswith(suffix) else tag


def _coded_etag(value: bytes, coding: Coding) -> bytes:
    """The tag of the coded variant; a malformed ETag is left alone."""
    tag = parse_etag(value.decode("latin-1"))
    return value if tag is None else str(EntityTag(f"{tag.opaque}-{coding}", tag.weak)).encode("latin-1")


@dataclass(slots=True)
class _Fields:
    """What deciding on a coding reads of an answer's fields, in one pass."""

    content_type: bytes | None = None
    content_length: int | None = None
    encoded: bool = False
    no_transform: bool = False
    etag: bytes | None = None
    varies: bool = False  # already on Accept-Encoding, or on everything

    @classmethod
    def of(cls, headers: Iterable[Header]) -> "_Fields":
        fields = cls()
        for name, value in headers:
            if name == b"content-type":
                fields.content_type = fields.content_type or value
            elif name == b"content-length":
                fields.content_length = int(value) if value.isdigit() else None
            elif name == b"content-encoding":
                fields.encoded = fields.encoded or value.strip().lower() != b"identity"
            elif name == b"cache-control":
                fields.no_transform = fields.no_transform or b"no-transform" in _tokens(value)
            elif name == b"etag":
                fields.etag = value
            elif name == b"vary":
                fields.varies = fields.varies or not {b"accept-encoding", b"*"}.isdisjoint(_tokens(value))
        return fields


def _tokens(value: bytes) -> set[bytes]:
    return {part.strip(b" \t").lower() for part in value.split(b",")}


class _Responder:
    """Per request: holds the start of a codable answer until its first body chunk says how to send it."""

    __slots__ = ("coding", "head", "owner", "send_inner", "start", "stream", "stripped")

    def __init__(
        self, owner: CompressionMiddleware, coding: Coding | None, stripped: frozenset[str], head: bool, send: Send
    ) -> None:
        self.owner = owner
        self.coding = coding
        self.stripped = stripped
        self.head = head
        self.send_inner = send
        self.start: Message | None = None  # held until the first body chunk
        self.stream: _Stream | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._started(message)
        elif kind == "http.response.body" and self.start is not None:
            await self._first_body(self.start, message)
        elif kind == "http.response.body" and self.stream is not None:
            more = message.get("more_body", False)
            coded = self.stream.chunk(message.get("body", b""), last=not more)
            if coded or not more:
                await self.send_inner({"type": "http.response.body", "body": coded, "more_body": more})
        else:
            await self.send_inner(message)

    async def _started(self, message: Message) -> None:
        status: int = message["status"]
        headers: RawHeaders = list(message.get("headers", ()))
        fields = _Fields.of(headers)
        if status == 304:
            await self.send_inner(self._not_modified(message, headers, fields))
            return
        owner = self.owner
        if (
            status < 200
            or status in _NOT_CODED_STATUSES
            or fields.encoded
            or fields.no_transform
            or not owner.codes(fields.content_type)
        ):
            await self.send_inner(message)
            return
        if not fields.varies:
            headers.append(_VARY)
        message = {**message, "headers": headers}
        length = fields.content_length
        if self.coding is None or (length is not None and length < owner.min_size):
            await self.send_inner(message)
        elif self.head:
            await self.send_inner(self._coded_start(message, None))
        else:
            self.start = message

    def _not_modified(self, message: Message, headers: RawHeaders, fields: _Fields) -> Message:
        """A 304 for a tag the client named in its coded form names that form again."""
        tag = None if fields.etag is None else parse_etag(fields.etag.decode("latin-1"))
        if self.coding is None or tag is None or tag.opaque not in self.stripped:
            return message
        coded = [(name, _coded_etag(value, self.coding) if name == b"etag" else value) for name, value in headers]
        return {**message, "headers": coded if fields.varies else [*coded, _VARY]}

    def _coded_start(self, start: Message, length: int | None) -> Message:
        coding = self.coding
        assert coding is not None  # only coded answers get here
        headers = [
            (name, _coded_etag(value, coding) if name == b"etag" else value)
            for name, value in start["headers"]
            if name != b"content-length"
        ]
        headers.append((b"content-encoding", coding.encode("latin-1")))
        if length is not None:
            headers.append((b"content-length", str(length).encode("latin-1")))
        return {**start, "headers": headers}

    async def _first_body(self, start: Message, message: Message) -> None:
        self.start = None
        coding = self.coding
        assert coding is not None  # a start is held only for a coded answer
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        owner = self.owner
        level = owner.levels[coding]
        if not more and len(body) < owner.min_size:
            await self.send_inner(start)
            await self.send_inner(message)
        elif not more:
            coded = owner.memo.coded(body, coding, level)
            await self.send_inner(self._coded_start(start, len(coded)))
            await self.send_inner({"type": "http.response.body", "body": coded, "more_body": False})
        else:
            self.stream = _Stream.of(coding, level)
            await self.send_inner(self._coded_start(start, None))
            first = self.stream.chunk(body, last=False)
            await self.send_inner({"type": "http.response.body", "body": first, "more_body": True})
