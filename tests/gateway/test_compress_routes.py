"""`compress:` on routes: one cached identity body served to each client in its coding, a 304 on a coded ETag,
event streams left unbuffered, upstream codings left alone, and the route file's mistakes."""

import asyncio
import gzip
from pathlib import Path

import brotli
import httpx
import pytest
import zstandard

from asgi_gateway.config.errors import ConfigError
from asgi_gateway.config.loader import load_route_file
from asgi_gateway.middleware.types import Receive, Scope, Send
from tests.gateway.conftest import GatewayFactory, client_for
from tests.servers import serve
from tests.upstreams import Origin

pytestmark = pytest.mark.anyio

ROUTES = """
upstreams:
  docs: {url: "http://docs.internal"}
  origin: {url: "http://origin.internal"}
routes:
  - {path: "/docs/{id}", upstream: docs, cache: {ttl: 60}, compress: {}}
  - {path: "/tagged/{id}", upstream: docs, rewrite: "/docs/{id}", etag: {}, cache: {ttl: 60}, compress: {}}
  - {path: "/plain/{id}", upstream: docs, rewrite: "/docs/{id}", compress: {codings: [gzip], min_size: 10}}
  - {path: /stream, upstream: origin, etag: {}, cache: {ttl: 30}, compress: {min_size: 0}}
"""
BODY = b"".join(b'{"line": %d, "text": "a document that compresses well"}\n' % n for n in range(100))
DECODE = {
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
    "gzip": gzip.decompress,
}


class Documents:
    """An upstream that codes its answers itself when asked to (`/docs/coded`), and varies on Accept-Encoding as
    such an origin must; it records the Accept-Encoding of each request that reaches it."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fields = dict(scope["headers"])
        accept_encoding = fields.get(b"accept-encoding")
        self.asked.append(None if accept_encoding is None else accept_encoding.decode())
        headers = [(b"content-type", b"application/json"), (b"vary", b"Accept-Encoding")]
        body = BODY
        if scope["path"] == "/docs/coded":
            body = gzip.compress(BODY)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def raw_get(client: httpx.AsyncClient, path: str, **headers: str) -> tuple[httpx.Response, bytes]:
    async with client.stream("GET", path, headers=headers) as response:
        return response, b"".join([chunk async for chunk in response.aiter_raw()])


async def test_one_stored_body_serves_every_coding(make_gateway: GatewayFactory) -> None:
    docs = Documents()
    async with client_for(make_gateway(ROUTES, upstreams={"docs": docs})) as client:
        answers = {
            coding: await raw_get(client, "/docs/1", **{"accept-encoding": coding})
            for coding in ("gzip", "br", "zstd", "identity")
        }
    assert docs.asked == ["identity"]  # one upstream call, for identity
    for coding, (response, raw) in answers.items():
        assert response.headers["vary"] == "Accept-Encoding"
        if coding == "identity":
            assert "content-encoding" not in response.headers
            assert raw == BODY
        else:
            assert response.headers["content-encoding"] == coding
            assert DECODE[coding](raw) == BODY
    assert [response.headers["cache-status"].split(";")[1].strip() for response, _ in answers.values()] == [
        "fwd=uri-miss",
        "hit",
        "hit",
        "hit",
    ]


async def test_a_coded_etag_gets_a_304_from_the_cache(make_gateway: GatewayFactory) -> None:
    docs = Documents()
    async with client_for(make_gateway(ROUTES, upstreams={"docs": docs})) as client:
        first, _ = await raw_get(client, "/tagged/1", **{"accept-encoding": "br"})
        again, raw = await raw_get(
            client, "/tagged/1", **{"accept-encoding": "br", "if-none-match": first.headers["etag"]}
        )
        other, _ = await raw_get(
            client, "/tagged/1", **{"accept-encoding": "gzip", "if-none-match": first.headers["etag"]}
        )
    assert first.headers["etag"].endswith('-br"')
    assert (again.status_code, raw, again.headers["etag"]) == (304, b"", first.headers["etag"])
    assert "hit" in again.headers["cache-status"]
    assert other.status_code == 200
    assert other.headers["etag"] == first.headers["etag"].replace('-br"', '-gzip"')
    assert docs.asked == ["identity"]


async def test_an_answer_the_upstream_coded_passes_through(make_gateway: GatewayFactory) -> None:
    docs = Documents()
    async with client_for(make_gateway(ROUTES, upstreams={"docs": docs})) as client:
        response, raw = await raw_get(client, "/plain/coded", **{"accept-encoding": "br, gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == BODY
    assert response.headers.get_list("vary") == ["Accept-Encoding"]


async def test_a_route_offers_only_its_codings(make_gateway: GatewayFactory) -> None:
    docs = Documents()
    async with client_for(make_gateway(ROUTES, upstreams={"docs": docs})) as client:
        offered, raw = await raw_get(client, "/plain/1", **{"accept-encoding": "gzip;q=0.5, br"})
        refused, plain = await raw_get(client, "/plain/1", **{"accept-encoding": "br"})
    assert offered.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == BODY
    assert "content-encoding" not in refused.headers
    assert plain == BODY


@pytest.mark.integration
async def test_event_streams_stay_unbuffered_and_uncoded(make_gateway: GatewayFactory) -> None:
    """The first event arrives while the stream is still open, through compression and a cache."""
    origin = Origin()
    async with serve(origin) as url:
        routes = ROUTES.replace("http://origin.internal", url)
        async with (
            serve(make_gateway(routes), lifespan="on") as gateway,
            httpx.AsyncClient(base_url=gateway) as client,
            client.stream("GET", "/stream", headers={"accept-encoding": "gzip, br, zstd"}) as response,
        ):
            chunks = response.aiter_raw()
            async with asyncio.timeout(5):
                first = await anext(chunks)
            origin.release.set()  # the second event exists only after the first arrived
            rest = b"".join([chunk async for chunk in chunks])
    assert (first, rest) == (b"data: one\n\n", b"data: two\n\n")
    assert "content-encoding" not in response.headers


ROUTE = """\
upstreams:
  docs: {url: "http://127.0.0.1:9001"}
routes:
  - path: /docs
    upstream: docs
    compress: COMPRESS
"""


@pytest.mark.parametrize(
    ("compress", "expected"),
    [
        ("{codings: []}", ":6: routes[0].compress.codings: must name at least one coding"),
        ("{codings: [gzip, gzip]}", ":6: routes[0].compress.codings: lists a coding twice"),
        ("{codings: [deflate]}", ":6: routes[0].compress.codings[0]: Input should be 'br', 'zstd' or 'gzip'"),
        ("{levels: {br: 12}}", ":6: routes[0].compress.levels.br: Input should be less than or equal to 11"),
        ("{levels: {zstd: 0}}", ":6: routes[0].compress.levels.zstd: Input should be greater than or equal to 1"),
        ("{levels: {deflate: 1}}", ":6: routes[0].compress.levels.deflate: unknown key"),
        ("{min_size: -1}", ":6: routes[0].compress.min_size: Input should be greater than or equal to 0"),
        (
            "{skip_types: [image]}",
            ":6: routes[0].compress.skip_types: 'image' is not a media type (type/subtype or type/*)",
        ),
        ("{gzip: true}", ":6: routes[0].compress.gzip: unknown key"),
    ],
)
def test_route_file_mistakes(tmp_path: Path, compress: str, expected: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTE.replace("COMPRESS", compress))
    with pytest.raises(ConfigError) as caught:
        load_route_file(path, environ={})
    assert [str(issue).removeprefix(str(path)) for issue in caught.value.issues] == [expected]
