"""Request ids and the access log through the gateway: one line per request that leads to its trace."""

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.gateway.conftest import GatewayFactory, client_for
from tests.upstreams import echo

pytestmark = pytest.mark.anyio

ROUTES = """
upstreams:
  users: {url: "http://users.internal"}
routes:
  - path: /api/users/{id}
    upstream: users
"""


def seen_values(response_json: dict, name: str) -> list[str]:
    return [value for key, value in response_json["headers"] if key == name]


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("abc-123_x.y:z", True), ("a" * 128, True), ("a" * 129, False), ("has space", False), ("x\u00e9", False)],
    ids=["token", "longest", "too-long", "space", "non-ascii"],
)
async def test_request_id_is_kept_when_sane_and_replaced_otherwise(
    make_gateway: GatewayFactory, incoming: str, kept: bool
) -> None:
    app = make_gateway(ROUTES, upstreams={"users": echo})
    async with client_for(app) as client:
        response = await client.get("/api/users/1", headers={b"X-Request-ID": incoming.encode("utf-8")})
    returned = response.headers["x-request-id"]
    assert (returned == incoming) is kept
    assert seen_values(response.json(), "x-request-id") == [returned]  # the upstream saw the same one
    assert len(response.headers.get_list("x-request-id")) == 1


async def test_request_id_is_generated_when_absent(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"users": echo})
    async with client_for(app) as client:
        first = await client.get("/api/users/1")
        second = await client.get("/api/users/1")
    assert len(first.headers["x-request-id"]) >= 24
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_access_log_line_carries_request_and_trace_ids(
    make_gateway: GatewayFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_gateway(ROUTES, upstreams={"users": echo}, tracer_provider=provider)
    async with client_for(app) as client:
        response = await client.get("/api/users/1?x=1", headers={"X-Request-ID": "req-1"})
    [line] = [json.loads(text) for text in capfd.readouterr().out.splitlines()]
    server = next(span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER)
    assert line["request_id"] == "req-1"
    assert line["trace_id"] == f"{server.context.trace_id:032x}"
    assert line["span_id"] == f"{server.context.span_id:016x}"
    assert {key: line[key] for key in ("method", "route", "path", "status", "upstream", "cache")} == {
        "method": "GET",
        "route": "/api/users/{id}",
        "path": "/api/users/1",
        "status": 200,
        "upstream": "users",
        "cache": None,
    }
    assert line["bytes"] == len(response.content)
    assert line["duration_ms"] > 0


async def test_access_log_in_text_and_off(make_gateway: GatewayFactory, capfd: pytest.CaptureFixture[str]) -> None:
    text = make_gateway(ROUTES, upstreams={"users": echo}, access_log="text")
    off = make_gateway(ROUTES, upstreams={"users": echo}, access_log="off")
    async with client_for(text) as client:
        await client.get("/nowhere", headers={"X-Request-ID": "r2"})
    async with client_for(off) as client:
        await client.get("/nowhere")
    [message] = capfd.readouterr().out.splitlines()
    assert "method=GET route=- path=/nowhere status=404" in message
    assert "request_id=r2 trace_id=- span_id=-" in message


async def test_an_upstreams_own_request_id_gives_way_to_the_gateways(make_gateway: GatewayFactory) -> None:
    """Also where the route's own response headers name the field: every answer carries one id, the gateway's."""

    async def upstream(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"theirs")]})
        await send({"type": "http.response.body", "body": b"{}"})

    routes = ROUTES + '    headers: {response: {set: {X-Request-Id: mine}, add: {X-Other: "1"}}}\n'
    app = make_gateway(routes, upstreams={"users": upstream})
    async with client_for(app) as client:
        response = await client.get("/api/users/1", headers={"X-Request-ID": "req-9"})
    assert response.headers.get_list("x-request-id") == ["req-9"]
    assert response.headers["x-other"] == "1"
