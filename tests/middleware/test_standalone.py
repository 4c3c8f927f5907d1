"""Tracing, request ids and the access log on a plain Starlette app, without the gateway."""

import json
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from middleware.access_log import AccessLogMiddleware, access_line
from middleware.request_id import RequestIdMiddleware, request_id
from middleware.tracing import tracing_middleware

pytestmark = pytest.mark.anyio


async def item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"item {request.path_params['id']} for {request_id.get()}")


def app_with(*middleware: Middleware) -> Starlette:
    return Starlette(routes=[Route("/items/{id}", item)], middleware=list(middleware))


async def get(app: Starlette, path: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        return await client.get(path, **kwargs)  # type: ignore[arg-type]


async def test_server_span_is_named_by_the_route_template() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = app_with(
        Middleware(tracing_middleware, tracer_provider=provider, scope_attributes=lambda scope: {"app.tag": "x"})
    )
    await get(app, "/items/42")
    [span] = exporter.get_finished_spans()
    assert span.name == "GET /items/{id}"
    assert span.attributes is not None
    assert (span.attributes["http.route"], span.attributes["app.tag"]) == ("/items/{id}", "x")


async def test_excluded_urls_make_no_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await get(app_with(Middleware(tracing_middleware, tracer_provider=provider, excluded_urls="/items/.*")), "/items/1")
    assert exporter.get_finished_spans() == ()


async def test_request_id_reaches_the_endpoint_and_the_client() -> None:
    response = await get(
        app_with(Middleware(RequestIdMiddleware, header="X-Correlation-ID")),
        "/items/1",
        headers={"X-Correlation-ID": "c-7"},
    )
    assert (response.text, response.headers["x-correlation-id"]) == ("item 1 for c-7", "c-7")


async def test_access_log_on_a_plain_app(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.access")
    caplog.set_level(logging.INFO, logger="test.access")
    app = app_with(Middleware(RequestIdMiddleware), Middleware(AccessLogMiddleware, write=logger.info))
    await get(app, "/items/9", headers={"X-Request-ID": "r-9"})
    line = json.loads(caplog.records[-1].getMessage())
    logged_at = datetime.fromisoformat(line["time"])
    assert logged_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - logged_at) < timedelta(minutes=1)
    assert (line["route"], line["status"], line["request_id"], line["bytes"]) == (
        "/items/{id}",
        200,
        "r-9",
        len("item 9 for r-9"),
    )


def test_access_log_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="log_format"):
        AccessLogMiddleware(app_with(), log_format="xml")  # type: ignore[arg-type]


def test_access_line_is_json_whatever_the_path_holds() -> None:
    scope = {"method": "GET", "path": '/a "b"\\\n/ü', "state": {"cache_status": "hit"}}
    line = access_line(scope, 304, 0, 0.0012345, traced=False)
    assert '"duration_ms":1.234,' in line  # three decimals, as in the text format
    assert json.loads(line) | {"time": None} == {
        "time": None,
        "method": "GET",
        "route": None,
        "path": '/a "b"\\\n/ü',
        "status": 304,
        "duration_ms": 1.234,
        "bytes": 0,
        "upstream": None,
        "cache": "hit",
        "request_id": None,
        "trace_id": None,
        "span_id": None,
    }
