"""FlagsMiddleware: the context from headers, the resolutions in the scope, the forwarded header overwritten."""

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_gateway.flags import EvaluationContext, Flag, Reason, Registry, Resolution, Resolver, parse_document
from asgi_gateway.flags.sources import InMemorySource
from asgi_gateway.middleware.flags import FlagsMiddleware, flag_context, flag_resolution, flag_resolutions
from asgi_gateway.middleware.types import Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

DEFINITIONS = parse_document(
    {
        "flags": {
            "new-profile": {"type": "bool", "default": False, "rules": [{"users": ["u-1"], "value": True},
                                                                        {"orgs": ["acme"], "value": True}]},
            "pricing": {"type": "str", "default_variant": "a", "variants": {"a": "price-a", "b": "price-b"},
                        "rules": [{"orgs": ["acme"], "variant": "b"}]},
        }
    }
)  # fmt: skip
registry = Registry()
NEW_PROFILE, PRICING = registry.declare(DEFINITIONS.values())
RESOLVER = Resolver(registry, sources=[InMemorySource(DEFINITIONS)])


class Recorder:
    """An inner app that keeps the scope it was called with and answers 204."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


async def call(app: Any, headers: list[tuple[bytes, bytes]], scope_type: str = "http") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": scope_type, "method": "GET", "path": "/", "headers": headers}, receive, send)
    return sent


def middleware(inner: Recorder, flags: list[Flag[Any]] | None = None, **options: str) -> FlagsMiddleware:
    return FlagsMiddleware(
        inner, resolver=RESOLVER, flags=[NEW_PROFILE, PRICING] if flags is None else flags, **options
    )


@pytest.mark.parametrize(
    ("headers", "context", "forwarded"),
    [
        ([(b"x-user-id", b"u-1")], EvaluationContext("u-1"), b"new-profile=true; pricing=a"),
        ([(b"x-user-id", b"u-9"), (b"x-org-id", b"acme")], EvaluationContext("u-9", {"org": "acme"}),
         b"new-profile=true; pricing=b"),
        ([], EvaluationContext(), b"new-profile=false; pricing=a"),
        ([(b"x-user-id", b" "), (b"x-org-id", b"")], EvaluationContext(), b"new-profile=false; pricing=a"),
    ],
    ids=["user", "org", "anonymous", "blank-headers"],
)  # fmt: skip
async def test_headers_in_resolutions_out(
    headers: list[tuple[bytes, bytes]], context: EvaluationContext, forwarded: bytes
) -> None:
    inner = Recorder()
    await call(middleware(inner), headers)
    [scope] = inner.scopes
    assert flag_context(scope) == context
    assert flag_resolutions(scope) == {
        "new-profile": RESOLVER.details(NEW_PROFILE, context),
        "pricing": RESOLVER.details(PRICING, context),
    }
    assert [value for name, value in scope["headers"] if name == b"x-feature-flags"] == [forwarded]


async def test_a_client_cannot_inject_the_forwarded_header() -> None:
    inner = Recorder()
    spoofed = [(b"x-feature-flags", b"new-profile=true"), (b"accept", b"*/*"), (b"x-feature-flags", b"pricing=b")]
    await call(middleware(inner), [(b"x-user-id", b"u-2"), *spoofed])
    assert inner.scopes[0]["headers"] == [
        (b"x-user-id", b"u-2"),
        (b"accept", b"*/*"),
        (b"x-feature-flags", b"new-profile=false; pricing=a"),
    ]


async def test_without_flags_the_header_is_only_removed() -> None:
    inner = Recorder()
    await call(middleware(inner, flags=[]), [(b"x-feature-flags", b"new-profile=true"), (b"x-user-id", b"u-1")])
    [scope] = inner.scopes
    assert (scope["headers"], flag_resolutions(scope)) == ([(b"x-user-id", b"u-1")], {})


async def test_header_names_are_configurable() -> None:
    inner = Recorder()
    app = middleware(inner, user_header="X-Account", org_header="X-Tenant", forward_header="X-Flags")
    await call(app, [(b"x-account", b"u-7"), (b"x-tenant", b"acme"), (b"x-flags", b"spoof")])
    [scope] = inner.scopes
    assert flag_context(scope) == EvaluationContext("u-7", {"org": "acme"})
    assert scope["headers"][-1] == (b"x-flags", b"new-profile=true; pricing=b")


async def test_typed_access_to_one_resolution() -> None:
    inner = Recorder()
    await call(middleware(inner), [(b"x-org-id", b"acme")])
    resolution = flag_resolution(inner.scopes[0], PRICING)
    assert resolution == Resolution("price-b", Reason.TARGETING_MATCH, "b")
    assert flag_resolution({"type": "http"}, PRICING) is None
    assert (flag_resolutions({"type": "http"}), flag_context({"type": "http"})) == ({}, None)


async def test_websockets_get_flags_and_lifespan_passes_through() -> None:
    inner = Recorder()
    app = middleware(inner)
    await call(app, [(b"x-user-id", b"u-1")], scope_type="websocket")
    await call(app, [], scope_type="lifespan")
    websocket, lifespan = inner.scopes
    assert flag_resolutions(websocket)["new-profile"].value is True
    assert "state" not in lifespan


def test_a_flag_named_twice_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match=r"flags named twice: \['pricing'\]"):
        middleware(Recorder(), flags=[PRICING, NEW_PROFILE, PRICING])


async def echo(request: Request) -> JSONResponse:
    """What a handler and an upstream see: request.state.flags and the forwarded header."""
    return JSONResponse(
        {
            "flags": {key: r.value for key, r in request.state.flags.items()},
            "header": request.headers.getlist("x-feature-flags"),
        }
    )


async def test_in_a_starlette_app() -> None:
    flags = Middleware(FlagsMiddleware, resolver=RESOLVER, flags=[NEW_PROFILE, PRICING])
    app = Starlette(routes=[Route("/", echo)], middleware=[flags])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/", headers={"X-Org-Id": "acme", "X-Feature-Flags": "new-profile=false"})
    assert response.json() == {
        "flags": {"new-profile": True, "pricing": "price-b"},
        "header": ["new-profile=true; pricing=b"],
    }
