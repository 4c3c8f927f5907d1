"""Tracing, request ids and the access log on a plain Starlette app, without the gateway."""

import json
import logging
import os
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

from asgi_gateway.middleware.access_log import AccessLogMiddleware, access_line
from asgi_gateway.middleware.request_id import RequestIdMiddleware, request_id
from asgi_gateway.middleware.tracing import SEMCONV_OPT_IN, opt_in_to_stable_http_conventions, tracing_middleware

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


@pytest.mark.parametrize(
    ("host", "address", "port"),
    [("app", "app", 80), ("App.Example:8443", "app.example", 8443), ("[::1]:9000", "::1", 9000)],
    ids=["no-port", "port", "ipv6"],
)
async def test_server_spans_carry_the_stable_http_attributes(host: str, address: str, port: int) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await get(app_with(Middleware(tracing_middleware, tracer_provider=provider)), "/items/42", headers={"Host": host})
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert {name: span.attributes.get(name) for name in ("http.request.method", "url.path", "http.method")} == {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "http.method": None,  # the old name
    }
    assert (span.attributes["server.address"], span.attributes["server.port"]) == (address, port)


async def test_a_host_with_a_bad_port_leaves_the_socket_address() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = app_with(Middleware(tracing_middleware, tracer_provider=provider))
    await get(app, "/items/1", headers={"Host": "elsewhere:port"})
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["server.address"] == "app"  # ASGITransport's scope["server"], from the base URL


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "http"), ("database", "database,http"), ("http/dup", "http/dup"), ("database, http", "database, http")],
    ids=["unset", "other-signals", "dup", "already"],
)
def test_the_stable_http_conventions_are_asked_for_unless_the_operator_chose(
    monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str
) -> None:
    monkeypatch.setenv(SEMCONV_OPT_IN, given or "")  # restored after the test, whatever it was
    if given is None:
        monkeypatch.delenv(SEMCONV_OPT_IN)
    opt_in_to_stable_http_conventions()
    assert os.environ[SEMCONV_OPT_IN] == expected


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
