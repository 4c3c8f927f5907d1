"""CompressionMiddleware on plain Starlette apps: negotiation, each coding decoded by its own library, skip rules,
Vary, an ETag per coding and a 304 on it, HEAD, streamed bodies, the memo."""

import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import brotli
import httpx
import pytest
import zstandard
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from asgi_gateway.middleware.compress import CodedBodies, CompressionMiddleware, negotiate
from asgi_gateway.middleware.conditional import ConditionalMiddleware

pytestmark = pytest.mark.anyio

TEXT = b"".join(b"line %d of a document that compresses well\n" % n for n in range(200))
DECODE = {
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
    "gzip": gzip.decompress,
}


@pytest.mark.parametrize(
    ("accept_encoding", "offered", "expected"),
    [
        (None, ("br", "zstd", "gzip"), None),  # no field: identity
        ("", ("br", "zstd", "gzip"), None),  # an empty field asks for identity
        ("gzip", ("br", "zstd", "gzip"), "gzip"),
        ("gzip, br, zstd", ("br", "zstd", "gzip"), "br"),  # ties: the server's order
        ("gzip, br, zstd", ("gzip", "zstd", "br"), "gzip"),
        ("gzip, zstd", ("br", "zstd", "gzip"), "zstd"),
        ("br;q=0.5, gzip;q=0.9", ("br", "zstd", "gzip"), "gzip"),
        ("BR;Q=0.5, GZIP;q=0.4", ("br", "zstd", "gzip"), "br"),  # case does not matter
        ("br ; q=0.5 , gzip;q=0.4", ("br", "zstd", "gzip"), "br"),  # optional white space
        ("x-gzip", ("br", "zstd", "gzip"), "gzip"),
        ("br;q=0, gzip;q=0", ("br", "zstd", "gzip"), None),  # all refused
        ("*", ("br", "zstd", "gzip"), "br"),
        ("*;q=0.1, gzip;q=0.5", ("br", "zstd", "gzip"), "gzip"),
        ("*, br;q=0", ("br", "zstd", "gzip"), "zstd"),
        ("identity;q=0", ("br", "zstd", "gzip"), None),  # nothing acceptable: identity anyway, never a 406
        ("identity;q=0, gzip", ("br", "zstd", "gzip"), "gzip"),
        ("identity, gzip;q=0.5", ("br", "zstd", "gzip"), None),  # identity weighs more
        ("identity;q=0.5, gzip;q=0.5", ("br", "zstd", "gzip"), "gzip"),  # a coding wins a tie with identity
        ("*;q=0.8, gzip;q=0.5", ("gzip",), None),  # `*` weighs identity too
        ("deflate, compress", ("br", "zstd", "gzip"), None),  # nothing offered is listed
        ("br;q=2, gzip", ("br", "zstd", "gzip"), "gzip"),  # a malformed weight drops its element
        ("br;q=0.1234, gzip;q=0.1", ("br", "zstd", "gzip"), "gzip"),  # at most three digits
        ("br;level=3, gzip;q=0.1", ("br", "zstd", "gzip"), "gzip"),  # only q is a parameter here
        ("gzip;q=0.2, gzip;q=0.9, br;q=0.5", ("br", "zstd", "gzip"), "br"),  # the first of a repeat counts
        (" , ,gzip", ("br", "zstd", "gzip"), "gzip"),  # empty elements are skipped
    ],
)
def test_negotiation(accept_encoding: str | None, offered: tuple[str, ...], expected: str | None) -> None:
    assert negotiate(accept_encoding, offered) == expected


@dataclass
class Upstream:
    """Answers with what a test sets, and records the request headers that reached it."""

    body: bytes = TEXT
    media_type: str | None = "text/plain"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None  # streamed, without a length
    seen: list[httpx.Headers] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        self.seen.append(httpx.Headers(request.headers.raw))
        if self.chunks is not None:
            chunks = self.chunks

            async def stream() -> AsyncIterator[bytes]:
                for chunk in chunks:
                    yield chunk

            return StreamingResponse(stream(), media_type=self.media_type, headers=self.headers)
        return Response(self.body, status_code=self.status, media_type=self.media_type, headers=self.headers)

    def app(self, *layers: Middleware) -> Starlette:
        return Starlette(routes=[Route("/doc", self.endpoint, methods=["GET", "HEAD", "PUT"])], middleware=layers)


async def fetch(
    app: Any, accept_encoding: str | None, method: str = "GET", **headers: str
) -> tuple[httpx.Response, bytes]:
    """The answer and its body as sent, not decoded."""
    sent = dict(headers)
    if accept_encoding is not None:
        sent["accept-encoding"] = accept_encoding
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        del client.headers["accept-encoding"]  # httpx's own
        async with client.stream(method, "/doc", headers=sent) as response:
            return response, b"".join([chunk async for chunk in response.aiter_raw()])


def compressed(upstream: Upstream, **options: Any) -> Starlette:
    return upstream.app(Middleware(CompressionMiddleware, **options))


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
async def test_each_coding_decodes_to_the_body(coding: str) -> None:
    upstream = Upstream()
    response, raw = await fetch(compressed(upstream), coding)
    assert response.headers["content-encoding"] == coding
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) == len(raw) < len(TEXT)
    assert DECODE[coding](raw) == TEXT
    assert upstream.seen[0]["accept-encoding"] == "identity"  # the inner app is asked for one body for all


async def test_levels_and_order_are_the_callers() -> None:
    app = compressed(Upstream(), codings=["gzip", "br"], levels={"gzip": 1})
    response, raw = await fetch(app, "br, gzip, zstd")
    assert response.headers["content-encoding"] == "gzip"
    assert raw == gzip.compress(TEXT, compresslevel=1, mtime=0)


@pytest.mark.parametrize(
    ("upstream", "vary"),
    [
        (Upstream(body=b"short"), True),  # under min_size: identity, but the answer still varies
        (Upstream(media_type="image/png"), False),
        (Upstream(media_type="font/woff2"), False),
        (Upstream(media_type="application/zip"), False),
        (Upstream(media_type="text/event-stream"), False),
        (Upstream(media_type="application/x-custom"), False),  # a caller's skip type
        (Upstream(headers={"content-encoding": "gzip"}), False),  # coded already: the upstream's Vary stands
        (Upstream(headers={"cache-control": "public, no-transform"}), False),
        (Upstream(status=206, headers={"content-range": f"bytes 0-{len(TEXT) - 1}/{len(TEXT) * 2}"}), False),
        (Upstream(status=204, body=b""), False),
    ],
)
async def test_answers_left_as_they_are(upstream: Upstream, vary: bool) -> None:
    response, raw = await fetch(compressed(upstream, skip_types=["application/x-custom"]), "br, gzip")
    assert "content-encoding" not in response.headers or response.headers["content-encoding"] == "gzip"
    assert raw == upstream.body
    assert response.headers.get_list("vary") == (["Accept-Encoding"] if vary else [])


async def test_svg_and_json_suffixes_are_coded_though_their_type_is_skipped() -> None:
    for media_type in ("image/svg+xml", "application/problem+json"):
        response, raw = await fetch(compressed(Upstream(media_type=media_type)), "gzip")
        assert response.headers["content-encoding"] == "gzip"
        assert gzip.decompress(raw) == TEXT


async def test_an_answer_without_a_type_is_coded() -> None:
    _, raw = await fetch(compressed(Upstream(media_type=None)), "gzip")
    assert gzip.decompress(raw) == TEXT


async def test_identity_answers_still_vary() -> None:
    response, raw = await fetch(compressed(Upstream()), None)
    assert raw == TEXT
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


async def test_an_existing_vary_gains_accept_encoding() -> None:
    response, _ = await fetch(compressed(Upstream(headers={"vary": "Accept-Language"})), "gzip")
    assert response.headers.get_list("vary") == ["Accept-Language", "Accept-Encoding"]


async def test_vary_names_accept_encoding_once() -> None:
    response, _ = await fetch(compressed(Upstream(headers={"vary": "accept-encoding"})), "gzip")
    assert response.headers.get_list("vary") == ["accept-encoding"]


async def test_vary_star_is_left_alone() -> None:
    response, _ = await fetch(compressed(Upstream(headers={"vary": "*"})), "gzip")
    assert response.headers.get_list("vary") == ["*"]


async def test_a_body_sent_whole_under_min_size_without_a_length_goes_out_as_it_is() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"tiny"})

    response, raw = await fetch(CompressionMiddleware(app), "gzip")
    assert raw == b"tiny"
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
async def test_a_streamed_body_is_coded_chunk_by_chunk(coding: str) -> None:
    chunks = [TEXT[:100], b"", TEXT[100:3000], TEXT[3000:]]
    response, raw = await fetch(compressed(Upstream(chunks=chunks)), coding)
    assert response.headers["content-encoding"] == coding
    assert "content-length" not in response.headers
    assert DECODE[coding](raw) == TEXT


async def test_each_chunk_is_flushed_as_it_comes() -> None:
    """Every chunk leaves the middleware decodable up to where the app is: nothing waits for the next one."""
    sent: list[bytes] = []
    decoder = zstandard.ZstdDecompressor().decompressobj()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"first part ", b"second part"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            assert decoder.decompress(sent.pop()) == part
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    scope = {"type": "http", "method": "GET", "headers": [(b"accept-encoding", b"zstd")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await CompressionMiddleware(app)(scope, receive, send)
    assert sent  # the end of the frame


async def test_head_gets_the_headers_of_its_get() -> None:
    upstream = Upstream(headers={"etag": '"v1"'})
    get, _ = await fetch(compressed(upstream), "br")
    head, raw = await fetch(compressed(upstream), "br", method="HEAD")
    assert raw == b""
    assert head.status_code == 200
    for name in ("content-encoding", "vary", "etag"):
        assert head.headers[name] == get.headers[name]
    assert "content-length" not in head.headers


async def test_head_of_a_short_body_is_identity() -> None:
    head, _ = await fetch(compressed(Upstream(body=b"short")), "br", method="HEAD")
    assert "content-encoding" not in head.headers
    assert head.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize(
    ("etag", "coded"), [('"abc"', '"abc-br"'), ('W/"abc"', 'W/"abc-br"'), ("malformed", "malformed")]
)
async def test_each_coding_has_its_own_etag(etag: str, coded: str) -> None:
    response, _ = await fetch(compressed(Upstream(headers={"etag": etag})), "br")
    assert response.headers["etag"] == coded
    identity, _ = await fetch(compressed(Upstream(headers={"etag": etag})), "identity")
    assert identity.headers["etag"] == etag


def conditional_app(upstream: Upstream) -> Starlette:
    """Conditional requests inside compression, as the gateway places them."""
    return upstream.app(Middleware(CompressionMiddleware), Middleware(ConditionalMiddleware))


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
async def test_a_coded_etag_is_answered_304_under_that_etag(coding: str) -> None:
    upstream = Upstream()
    first, _ = await fetch(conditional_app(upstream), coding)
    tag = first.headers["etag"]
    assert tag.endswith(f'-{coding}"')
    again, raw = await fetch(conditional_app(upstream), coding, **{"if-none-match": f'"other", {tag}'})
    assert again.status_code == 304
    assert raw == b""
    assert again.headers["etag"] == tag
    assert again.headers["vary"] == "Accept-Encoding"
    assert upstream.seen[1]["if-none-match"] == f'"other", {tag.replace(f"-{coding}", "")}'


async def test_a_coded_etag_of_another_coding_does_not_match() -> None:
    upstream = Upstream()
    first, _ = await fetch(conditional_app(upstream), "br")
    again, raw = await fetch(conditional_app(upstream), "gzip", **{"if-none-match": first.headers["etag"]})
    assert again.status_code == 200
    assert again.headers["etag"] == first.headers["etag"].replace("-br", "-gzip")
    assert gzip.decompress(raw) == TEXT


async def test_the_identity_etag_is_answered_304_under_itself() -> None:
    upstream = Upstream()
    identity, _ = await fetch(conditional_app(upstream), None)
    again, _ = await fetch(conditional_app(upstream), "br", **{"if-none-match": identity.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["etag"] == identity.headers["etag"]


async def test_if_match_names_the_stored_tag_inside() -> None:
    upstream = Upstream(headers={"etag": '"abc"'})
    await fetch(compressed(upstream), "gzip", method="PUT", **{"if-match": '"abc-gzip", "def-br"'})
    await fetch(compressed(upstream), "gzip", method="PUT", **{"if-match": "*"})
    assert upstream.seen[0]["if-match"] == '"abc", "def-br"'
    assert upstream.seen[1]["if-match"] == "*"


async def test_the_memo_codes_a_body_once_per_coding_within_its_budget() -> None:
    budget = len(brotli.compress(TEXT, quality=4)) + len(gzip.compress(TEXT, 6, mtime=0))  # two bodies' worth
    middleware = CompressionMiddleware(Upstream().app(), memo=CodedBodies(budget))
    for _ in range(3):
        for coding in ("br", "gzip"):
            _, raw = await fetch(middleware, coding)
            assert DECODE[coding](raw) == TEXT
    assert len(middleware.memo.entries) == 2
    other = Upstream(body=TEXT.upper())
    middleware.app = other.app()
    for coding in ("br", "zstd", "gzip"):
        await fetch(middleware, coding)
    assert sum(map(len, middleware.memo.entries.values())) == middleware.memo.used <= budget
    assert [coding for _, coding, _ in middleware.memo.entries] == ["br", "zstd", "gzip"][
        -len(middleware.memo.entries) :
    ]


@pytest.mark.parametrize("budget", [0, 100])  # none, or less than one coded body
async def test_what_does_not_fit_the_memo_is_coded_afresh(budget: int) -> None:
    middleware = CompressionMiddleware(Upstream().app(), memo=CodedBodies(budget))
    _, raw = await fetch(middleware, "br")
    assert brotli.decompress(raw) == TEXT
    assert not middleware.memo.entries


async def test_websocket_and_lifespan_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await CompressionMiddleware(app)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"codings": []}, "codings must name"),
        ({"codings": ["br", "br"]}, "codings must name"),
        ({"codings": ["deflate"]}, "codings must name"),
        ({"levels": {"br": 12}}, r"'br' takes an integer level in 0\.\.11, got 12"),
        ({"levels": {"gzip": 0}}, r"'gzip' takes an integer level in 1\.\.9"),
        ({"levels": {"zstd": 1.5}}, r"'zstd' takes an integer level in 1\.\.22"),
        ({"levels": {"deflate": 1}}, r"'deflate' takes an integer level in none \(not a coding\)"),
        ({"min_size": -1}, "min_size must be a non-negative integer"),
        ({"skip_types": ["image"]}, "'image' is not a media type"),
        ({"skip_types": ["image/p*"]}, "'image/p\\*' is not a media type"),
    ],
)
def test_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompressionMiddleware(Upstream().app(), **options)


def test_the_memo_budget_is_checked() -> None:
    with pytest.raises(ValueError, match="the memo's budget must be a non-negative number of bytes, got -1"):
        CodedBodies(-1)


async def test_one_memo_serves_many_middlewares_apart_by_level() -> None:
    memo = CodedBodies()
    fast, small = (CompressionMiddleware(Upstream().app(), memo=memo, levels={"gzip": level}) for level in (1, 9))
    for middleware in (fast, small, fast):
        _, raw = await fetch(middleware, "gzip")
        assert gzip.decompress(raw) == TEXT
    assert sorted(level for _, _, level in memo.entries) == [1, 9]
