"""ETags and conditional requests through the gateway, for upstreams with and without their own ETags."""

import asyncio

import httpx
import pytest

from tests.gateway.conftest import GatewayFactory, client_for
from tests.servers import serve
from tests.upstreams import Origin

pytestmark = pytest.mark.anyio

ROUTES = """
upstreams:
  origin: {url: "http://origin.internal"}
routes:
  - path: /items/{id}
    upstream: origin
    etag: {generate: true}
  - path: /own-etag/{id}
    upstream: origin
    etag: {}
  - path: /stream
    upstream: origin
    etag: {}
  - path: /plain/{id}
    upstream: origin
    rewrite: /items/{id}
    etag: false
  - {path: /cached-stream, upstream: origin, rewrite: /stream, etag: {}, cache: {ttl: 30}}
"""
NOT_MODIFIED_ALLOWED = {"etag", "cache-control", "content-location", "date", "expires", "vary", "last-modified"}


@pytest.fixture
def origin() -> Origin:
    return Origin()


async def test_generated_etag_then_304_with_only_the_allowed_headers(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        first = await client.get("/items/1")
        again = await client.get("/items/1", headers={"If-None-Match": first.headers["etag"]})
        weak = await client.get("/items/1", headers={"If-None-Match": f'"x", W/{first.headers["etag"]}'})
        star = await client.get("/items/1", headers={"If-None-Match": "*"})
    assert first.status_code == 200
    assert first.headers["etag"].startswith('"')
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == first.headers["etag"]
    assert set(again.headers) - {"x-request-id"} <= NOT_MODIFIED_ALLOWED
    assert "content-length" not in again.headers
    assert "content-type" not in again.headers
    assert (weak.status_code, star.status_code) == (304, 304)


async def test_a_changed_body_gets_a_new_etag(make_gateway: GatewayFactory, origin: Origin) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        first = await client.get("/items/1")
        origin.versions["1"] = 2
        second = await client.get("/items/1", headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert second.json()["version"] == 2
    assert second.headers["etag"] != first.headers["etag"]


async def test_head_gets_the_same_etag(make_gateway: GatewayFactory, origin: Origin) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        get = await client.get("/items/1")
        head = await client.head("/items/1")
    assert (head.status_code, head.content, head.headers["etag"]) == (200, b"", get.headers["etag"])


async def test_a_stale_if_match_is_412_and_the_write_never_reaches_the_upstream(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        etag = (await client.get("/items/1")).headers["etag"]
        origin.versions["1"] = 2  # someone else wrote meanwhile
        stale = await client.put("/items/1", content=b"{}", headers={"If-Match": etag})
        current_etag = (await client.get("/items/1")).headers["etag"]
        current = await client.put("/items/1", content=b"{}", headers={"If-Match": current_etag})
    assert (stale.status_code, stale.headers["content-type"]) == (412, "application/problem+json")
    assert current.status_code == 200
    assert origin.writes == 1


async def test_an_upstream_with_its_own_etags_answers_its_own_304s(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        first = await client.get("/own-etag/1")
        again = await client.get("/own-etag/1", headers={"If-None-Match": first.headers["etag"]})
        write = await client.put("/own-etag/1", content=b"{}", headers={"If-Match": '"v1"'})
    assert (first.headers["etag"], again.status_code) == ('"v1"', 304)
    assert write.status_code == 200  # auto mode: the upstream's own tags, so the header went to it


async def test_etag_false_leaves_the_route_without_a_conditional_layer(
    make_gateway: GatewayFactory, origin: Origin
) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": origin})
    async with client_for(app) as client:
        response = await client.get("/plain/1")
    assert "etag" not in response.headers


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/stream", "/cached-stream"], ids=["etag", "etag-and-cache"])
async def test_streaming_answers_are_not_buffered(make_gateway: GatewayFactory, origin: Origin, path: str) -> None:
    """The first event arrives while the stream is still open, also through a route's cache."""
    async with serve(origin) as url:
        routes = ROUTES.replace("http://origin.internal", url)
        async with (
            serve(make_gateway(routes), lifespan="on") as gateway,
            httpx.AsyncClient(base_url=gateway) as client,
            client.stream("GET", path) as response,
        ):
            chunks = response.aiter_raw()
            async with asyncio.timeout(5):
                first = await anext(chunks)
            origin.release.set()  # the second event exists only after the first arrived
            rest = b"".join([chunk async for chunk in chunks])
    assert (first, rest) == (b"data: one\n\n", b"data: two\n\n")
    assert "etag" not in response.headers
