"""The proxy on its default transport (aiohttp) against upstreams served by uvicorn on loopback."""

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from asgi_gateway.gateway.upstreams import AiohttpTransport, Timeouts, UpstreamTimeout
from tests.gateway.conftest import GatewayFactory, client_for
from tests.servers import bound_socket, serve
from tests.upstreams import Stalling, echo, streaming

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def routes_for(url: str, *, read_timeout: float = 5.0) -> str:
    return f"""
upstreams:
  backend: {{url: "{url}", timeout: {{connect: 1.0, read: {read_timeout}}}}}
routes:
  - path: /api/{{rest:path}}
    upstream: backend
    rewrite: /{{rest}}
"""


async def test_requests_reach_a_real_upstream_with_repeated_headers_and_query(make_gateway: GatewayFactory) -> None:
    async with serve(echo) as upstream:
        app = make_gateway(routes_for(upstream))
        async with client_for(app) as client:
            response = await client.post(
                "/api/items?b=2&a=1&a=%20", content=b"hello", headers=[("X-Repeat", "1"), ("X-Repeat", "2")]
            )
    seen = response.json()
    assert response.status_code == 200
    assert (seen["method"], seen["raw_path"], seen["query"], seen["body_size"]) == (
        "POST",
        "/items",
        "b=2&a=1&a=%20",
        5,
    )
    assert [value for name, value in seen["headers"] if name == "x-repeat"] == ["1", "2"]
    assert [value for name, value in seen["headers"] if name == "host"] == [upstream.removeprefix("http://")]
    for name in ("user-agent", "accept", "accept-encoding"):  # the client's, not ones aiohttp would add
        assert [value for key, value in seen["headers"] if key == name] == [response.request.headers[name]]
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]


async def test_a_client_without_agent_accept_or_content_type_fields_gets_none_added(
    make_gateway: GatewayFactory,
) -> None:
    """aiohttp adds Accept, Accept-Encoding, User-Agent and a body's Content-Type to requests of its own."""
    async with serve(echo) as upstream:
        app = make_gateway(routes_for(upstream))
        async with client_for(app) as client:
            client.headers.clear()
            posted = await client.post("/api/items", content=b"hello")
            got = await client.get("/api/items")
    for response in (posted, got):
        names = [name for name, _ in response.json()["headers"]]
        assert not {"accept", "accept-encoding", "user-agent", "content-type"} & set(names)


async def test_the_transport_gives_fields_without_a_host_the_urls() -> None:
    transport = AiohttpTransport(pool_size=2, timeouts=Timeouts(connect=1.0, read=5.0, pool=1.0))
    async with serve(echo) as upstream:
        await transport.start()
        try:
            response = await transport.send("GET", f"{upstream}/x", [("x-only", "1")], b"")
            seen = json.loads(await response.read())
            await response.close()
        finally:
            await transport.aclose()
    assert seen["headers"] == [["host", upstream.removeprefix("http://")], ["x-only", "1"]]


async def test_reads_under_a_callers_deadline_within_the_read_timeout_are_not_timed_again() -> None:
    """A fan-out call gives up by its deadline itself: a read timer that could not fire first is left out,
    while a request with a longer deadline (or none) keeps the read timeout."""
    stalling = Stalling()
    transport = AiohttpTransport(pool_size=2, timeouts=Timeouts(connect=1.0, read=0.1, pool=1.0))
    async with serve(stalling) as upstream:
        await transport.start()
        try:
            bounded = asyncio.create_task(transport.send("GET", f"{upstream}/bounded", [], b"", deadline=0.1))
            await stalling.arrived.wait()
            with pytest.raises(UpstreamTimeout):  # sent second: a read timer on the bounded one would fire before
                await transport.send("GET", f"{upstream}/longer", [], b"", deadline=0.5)
            assert not bounded.done()
            stalling.release.set()
            response = await bounded
            assert (response.status, await response.read()) == (200, b"late")
            await response.close()
        finally:
            stalling.release.set()  # the server waits for its handlers, a failed run's too
            await transport.aclose()


async def test_upstream_timeout_is_a_504_problem(make_gateway: GatewayFactory) -> None:
    stalling = Stalling()
    async with serve(stalling) as upstream:
        app = make_gateway(routes_for(upstream, read_timeout=0.2))
        async with client_for(app) as client:
            response = await client.get("/api/slow")
        stalling.release.set()
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["upstream"] == "backend"


async def test_upstream_down_is_a_502_problem(make_gateway: GatewayFactory) -> None:
    closed = bound_socket()
    port = closed.getsockname()[1]
    closed.close()
    app = make_gateway(routes_for(f"http://127.0.0.1:{port}"))
    async with client_for(app) as client:
        response = await client.get("/api/anything")
    assert response.status_code == 502
    assert response.json()["title"] == "Bad Gateway"


@asynccontextmanager
async def tcp_upstream(answer: bytes | None) -> AsyncIterator[str]:
    """A loopback server that reads a request, then sends `answer` and closes, or resets (None)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is None:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            writer.write(answer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    "answer", [None, b"this is not HTTP\r\n\r\n", b""], ids=["connection-reset", "not-http", "closed-without-answer"]
)
async def test_broken_upstream_answers_are_502(make_gateway: GatewayFactory, answer: bytes | None) -> None:
    async with tcp_upstream(answer) as upstream:
        app = make_gateway(routes_for(upstream))
        async with client_for(app) as client:
            response = await client.get("/api/anything")
    assert response.status_code == 502
    assert response.json()["upstream"] == "backend"


async def test_large_bodies_stream_both_ways_through_the_served_gateway(make_gateway: GatewayFactory) -> None:
    size = 8 * 1024 * 1024
    async with serve(echo) as echo_url, serve(streaming(size)) as stream_url:
        routes = f"""
upstreams:
  echo: {{url: "{echo_url}"}}
  stream: {{url: "{stream_url}"}}
routes:
  - {{path: /upload, upstream: echo}}
  - {{path: /download, upstream: stream}}
"""
        async with serve(make_gateway(routes), lifespan="on") as gateway, httpx.AsyncClient(base_url=gateway) as client:

            async def body():
                for _ in range(size // 65536):
                    yield b"y" * 65536

            upload = await client.post("/upload", content=body())
            received = 0
            async with client.stream("GET", "/download") as download:
                assert download.headers.get("transfer-encoding") == "chunked"
                async for chunk in download.aiter_raw():
                    received += len(chunk)
    assert upload.json()["body_size"] == size
    assert [value for name, value in upload.json()["headers"] if name == "transfer-encoding"] == ["chunked"]
    assert received == size


async def test_absolute_form_and_dot_segments_never_leave_the_configured_upstream(make_gateway: GatewayFactory) -> None:
    async with serve(echo) as upstream, serve(make_gateway(routes_for(upstream)), lifespan="on") as gateway:
        host, port = gateway.removeprefix("http://").split(":")
        absolute = await raw_request(
            host, int(port), b"GET http://evil.example/api/x HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        )
        dotted = await raw_request(host, int(port), b"GET /api/a/../../admin HTTP/1.1\r\nHost: gw\r\n\r\n")
    status_line, _, body = absolute.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert b'"raw_path": "/x"' in body  # reached the configured upstream, at the route's path
    assert dotted.startswith(b"HTTP/1.1 400 ")


async def raw_request(host: str, port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response


@asynccontextmanager
async def drops_first_connection() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An upstream that closes its first connection without answering, then answers normally."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        if len(requests) > 1:
            body = b"" if requests[-1].startswith(b"HEAD ") else b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n" + body)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", requests


@pytest.mark.parametrize(
    ("method", "idempotent", "status", "attempts"),
    [
        ("GET", "[]", 200, 2),
        ("HEAD", "[]", 200, 2),
        ("POST", "[]", 502, 1),
        ("PUT", "[]", 502, 1),
        ("PUT", "[PUT]", 200, 2),
    ],
    ids=["get-retried", "head-retried", "post-not", "put-not-by-default", "put-marked-idempotent"],
)
async def test_a_dropped_connection_is_retried_only_for_idempotent_requests(
    make_gateway: GatewayFactory, method: str, idempotent: str, status: int, attempts: int
) -> None:
    async with drops_first_connection() as (url, requests):
        routes = routes_for(url) + f"    idempotent: {idempotent}\n"
        async with client_for(make_gateway(routes)) as client:
            response = await client.request(method, "/api/thing", content=b"{}" if method in ("POST", "PUT") else None)
    assert (response.status_code, len(requests)) == (status, attempts)
