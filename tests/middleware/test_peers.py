"""TrustedPeerHeaders on a plain Starlette app."""

import json
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from asgi_gateway.middleware.peers import TrustedPeerHeaders, TrustedPeers

pytestmark = pytest.mark.anyio


async def echo_identity(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.headers.get("x-user-id"), "org": request.headers.get("x-org-id")})


@pytest.mark.parametrize(
    ("trusted", "peer", "kept"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "203.0.113.7", False),
        ("10.0.0.0/8, 192.168.1.1", "10.2.3.4", True),
        ("10.0.0.0/8", "not-an-ip", False),
        ("/run/proxy.sock", "/run/proxy.sock", True),
        ("*", "203.0.113.7", True),
        ("", "127.0.0.1", False),
    ],
    ids=["listed", "not-listed", "network", "not-an-address", "literal", "everyone", "no-one"],
)
async def test_identity_headers_count_only_from_trusted_peers(trusted: str, peer: str, kept: bool) -> None:
    app = Starlette(
        routes=[Route("/", echo_identity)],
        middleware=[Middleware(TrustedPeerHeaders, trusted=trusted, headers=["X-User-Id", "X-Org-Id"])],
    )
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/", headers={"X-User-Id": "u-1", "X-Org-Id": "acme"})
    assert response.json() == ({"user": "u-1", "org": "acme"} if kept else {"user": None, "org": None})


async def peer_seen(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps({"client": scope["client"][0], "scheme": scope["scheme"], "via": scope.get("via")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


_PROXY_HEADERS: Any = ProxyHeadersMiddleware(cast(Any, peer_seen), trusted_hosts="10.0.0.1")  # uvicorn's ASGI types


async def applying_forwarded_fields(scope: Scope, receive: Receive, send: Send) -> None:
    await _PROXY_HEADERS({**scope, "via": "forwarded"}, receive, send)


FORWARDING = {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize(
    ("peer", "fields", "seen"),
    [
        ("10.0.0.1", FORWARDING, ["198.51.100.1", "https", "forwarded"]),
        ("10.0.0.1", {"X-Forwarded-Proto": "https"}, ["10.0.0.1", "https", "forwarded"]),
        ("10.0.0.1", {}, ["10.0.0.1", "http", None]),
        ("203.0.113.7", FORWARDING, ["203.0.113.7", "http", None]),
    ],
    ids=["trusted-forwarding", "trusted-proto-only", "trusted-plain", "untrusted-forwarding"],
)
async def test_only_trusted_peers_forwarding_requests_take_the_forwarded_path(
    peer: str, fields: dict[str, str], seen: list[str | None]
) -> None:
    app = TrustedPeerHeaders(peer_seen, trusted="10.0.0.1", headers=[], forwarded=applying_forwarded_fields)
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        answer = (await client.get("/", headers=fields)).json()
    assert [answer["client"], answer["scheme"], answer["via"]] == seen


def test_trusted_peers_remember_their_answers() -> None:
    peers = TrustedPeers(["10.0.0.0/8"])
    assert ["10.0.0.1" in peers, "10.0.0.1" in peers, "11.0.0.1" in peers] == [True, True, False]
