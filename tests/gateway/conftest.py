from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import ASGIApp

from asgi_gateway.config.loader import load_route_file
from asgi_gateway.config.settings import Settings
from asgi_gateway.gateway.app import Gateway

GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def make_gateway(tmp_path: Path) -> GatewayFactory:
    """Build the gateway from a route file's text; `upstreams` serves named upstreams in-process."""

    def build(
        routes_yaml: str,
        *,
        upstreams: Mapping[str, ASGIApp] | None = None,
        tracer_provider: TracerProvider | None = None,
        **settings: Any,
    ) -> Gateway:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_yaml)
        routes = load_route_file(path)
        return Gateway(
            Settings(routes_file=path, **settings), routes, upstream_apps=upstreams, tracer_provider=tracer_provider
        )

    return build


# The address client_for calls from: trusting it stands for a proxy in front that set the identity headers.
TRUSTED_CLIENT = {"forwarded_allow_ips": "203.0.113.7"}


@asynccontextmanager
async def client_for(app: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling `app` in-process, with the app's lifespan run around it."""
    async with app.running():
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            yield client
