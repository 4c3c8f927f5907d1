"""TrustedPeerHeaders on a plain Starlette app."""

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

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


def test_trusted_peers_remember_their_answers() -> None:
    peers = TrustedPeers(["10.0.0.0/8"])
    assert ["10.0.0.1" in peers, "10.0.0.1" in peers, "11.0.0.1" in peers] == [True, True, False]
