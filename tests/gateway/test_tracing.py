"""Tracing: a server span per request, a client span per upstream call, W3C context carried across."""

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from asgi_gateway.config.errors import ConfigError
from asgi_gateway.config.loader import load_route_file
from asgi_gateway.config.settings import OtelSettings, Settings, apply_otel_environment
from asgi_gateway.gateway.app import Gateway
from asgi_gateway.gateway.telemetry import build_tracer_provider
from tests.gateway.conftest import GatewayFactory, client_for
from tests.servers import serve
from tests.upstreams import echo, status

pytestmark = pytest.mark.anyio

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT = "00f067aa0ba902b7"
SAMPLED = 0x01  # W3C trace-flags bit


STABLE_SERVER_ATTRIBUTES = (
    "http.request.method",
    "url.scheme",
    "url.path",
    "server.address",
    "server.port",
    "network.protocol.version",
    "http.response.status_code",
)
OLD_HTTP_ATTRIBUTES = frozenset(
    {"http.method", "http.scheme", "http.target", "http.url", "http.host", "http.flavor", "http.status_code"}
)


def routes_for(url: str) -> str:
    return f"""
upstreams:
  users: {{url: "{url}"}}
routes:
  - path: /api/users/{{id}}
    name: user-by-id
    upstream: users
    rewrite: /users/{{id}}
  - path: /status/{{code}}
    upstream: users
"""


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def provider_for(exporter: InMemorySpanExporter, ratio: float = 1.0) -> TracerProvider:
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> ReadableSpan:
    [span] = [span for span in spans if span.kind == kind]
    return span


def traceparent_seen(response_json: dict) -> str:
    [value] = [str(value) for name, value in response_json["headers"] if name == "traceparent"]
    return value


@pytest.mark.integration
async def test_server_and_client_spans_are_linked_and_the_upstream_joins_the_trace(
    make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    async with serve(echo) as upstream:
        app = make_gateway(routes_for(upstream), tracer_provider=provider_for(exporter))
        async with client_for(app) as client:
            response = await client.get("/api/users/7")
    spans = exporter.get_finished_spans()
    server, client_span = by_kind(spans, SpanKind.SERVER), by_kind(spans, SpanKind.CLIENT)
    assert len(spans) == 2
    assert server.name == "GET /api/users/{id}"
    assert server.attributes is not None
    assert client_span.attributes is not None
    assert (server.attributes["http.route"], server.attributes["gateway.route"]) == ("/api/users/{id}", "user-by-id")
    assert server.attributes["gateway.upstream"] == "users"
    assert client_span.parent is not None
    assert client_span.parent.span_id == server.context.span_id
    assert client_span.context.trace_id == server.context.trace_id
    host, port = upstream.removeprefix("http://").split(":")
    assert dict(client_span.attributes) == {
        "http.request.method": "GET",
        "server.address": host,
        "server.port": int(port),
        "url.full": f"{upstream}/users/7",
        "url.scheme": "http",
        "url.path": "/users/7",
        "network.protocol.version": "1.1",
        "gateway.upstream": "users",
        "http.response.status_code": 200,
    }
    assert {name: server.attributes[name] for name in STABLE_SERVER_ATTRIBUTES} == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/api/users/7",
        "server.address": "gw.test",  # the client's Host, without a port
        "server.port": 80,
        "network.protocol.version": "1.1",
        "http.response.status_code": 200,
    }
    assert not OLD_HTTP_ATTRIBUTES & (set(server.attributes) | set(client_span.attributes))
    version, trace_id, parent_id, flags = traceparent_seen(response.json()).split("-")
    assert (version, trace_id, parent_id) == (
        "00",
        f"{server.context.trace_id:032x}",
        f"{client_span.context.span_id:016x}",
    )
    assert int(flags, 16) & SAMPLED


async def test_an_incoming_traceparent_is_continued(
    make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    app = make_gateway(
        routes_for("http://users.internal"), upstreams={"users": echo}, tracer_provider=provider_for(exporter)
    )
    async with client_for(app) as client:
        response = await client.get(
            "/api/users/1", headers={"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"}
        )
    server = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert f"{server.context.trace_id:032x}" == INCOMING_TRACE
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == INCOMING_PARENT
    assert traceparent_seen(response.json()).split("-")[1] == INCOMING_TRACE


async def test_ratio_zero_records_nothing_but_still_propagates(
    make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    provider = provider_for(exporter, ratio=0.0)
    app = make_gateway(routes_for("http://users.internal"), upstreams={"users": echo}, tracer_provider=provider)
    async with client_for(app) as client:
        response = await client.get("/api/users/1")
    assert exporter.get_finished_spans() == ()
    version, trace_id, _, flags = traceparent_seen(response.json()).split("-")
    assert version == "00"
    assert not int(flags, 16) & SAMPLED
    assert int(trace_id, 16) != 0


@pytest.mark.parametrize(
    ("code", "server_status", "server_error"),
    [(404, StatusCode.UNSET, None), (503, StatusCode.ERROR, "503")],
    ids=["4xx", "5xx"],
)
async def test_an_upstream_error_fails_the_client_span_and_only_a_5xx_the_server_span(
    make_gateway: GatewayFactory,
    exporter: InMemorySpanExporter,
    code: int,
    server_status: StatusCode,
    server_error: str | None,
) -> None:
    app = make_gateway(
        routes_for("http://users.internal"), upstreams={"users": status}, tracer_provider=provider_for(exporter)
    )
    async with client_for(app) as client:
        await client.get(f"/status/{code}")
    spans = exporter.get_finished_spans()
    server, client_span = by_kind(spans, SpanKind.SERVER), by_kind(spans, SpanKind.CLIENT)
    assert server.attributes is not None
    assert client_span.attributes is not None
    assert (client_span.status.status_code, client_span.attributes["error.type"]) == (StatusCode.ERROR, str(code))
    assert (server.status.status_code, server.attributes.get("error.type")) == (server_status, server_error)
    assert server.attributes["http.response.status_code"] == client_span.attributes["http.response.status_code"]


async def test_an_unmatched_request_is_named_by_its_method_alone(
    make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    app = make_gateway(
        routes_for("http://users.internal"), upstreams={"users": echo}, tracer_provider=provider_for(exporter)
    )
    async with client_for(app) as client:
        response = await client.get("/no/such/path/4711", headers={"Host": "[::1]:8443"})
    [server] = exporter.get_finished_spans()
    assert response.status_code == 404
    assert server.name == "GET"
    assert server.attributes is not None
    assert (server.attributes["url.path"], server.attributes["http.response.status_code"]) == (
        "/no/such/path/4711",
        404,
    )
    assert (server.attributes["server.address"], server.attributes["server.port"]) == ("::1", 8443)


async def test_unreachable_upstream_records_the_error_type(
    make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    app = make_gateway(routes_for("http://127.0.0.1:1"), tracer_provider=provider_for(exporter))
    async with client_for(app) as client:
        response = await client.get("/api/users/1")
    client_span = by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    assert response.status_code == 502
    assert client_span.attributes is not None
    assert client_span.attributes["error.type"] == "UpstreamUnreachable"
    assert client_span.status.status_code is StatusCode.ERROR
    assert [event.name for event in client_span.events] == ["exception"]


async def test_health_paths_make_no_spans(make_gateway: GatewayFactory, exporter: InMemorySpanExporter) -> None:
    app = make_gateway(
        routes_for("http://users.internal"), upstreams={"users": echo}, tracer_provider=provider_for(exporter)
    )
    async with client_for(app) as client:
        await client.get("/_gateway/health")
        await client.get("/_gateway/ready")
    assert exporter.get_finished_spans() == ()


async def test_exporter_none_installs_nothing_and_leaves_the_client_context_alone(make_gateway: GatewayFactory) -> None:
    assert build_tracer_provider(OtelSettings()) is None
    app = make_gateway(routes_for("http://users.internal"), upstreams={"users": echo})
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"
    async with client_for(app) as client:
        response = await client.get("/api/users/1", headers={"traceparent": incoming})
    assert traceparent_seen(response.json()) == incoming


@pytest.fixture
def otel_free_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("otel_free_environment")
@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {"exporter": "otlp", "sample_ratio": 0.5, "service_name": "gw", "headers": {"a": "1"}}),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "edge", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
            {"exporter": "console", "service_name": "edge", "sample_ratio": 0.25},
        ),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, {"sample_ratio": 0.0}),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "x-key=a%20b,y=2"}, {"headers": {"x-key": "a b", "y": "2"}}),
        ({"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "t=1", "OTEL_EXPORTER_OTLP_HEADERS": "x=2"}, {"headers": {"t": "1"}}),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "env=prod,team=core"},
            {"resource_attributes": {"region": "eu", "env": "prod", "team": "core"}},
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
            {"protocol": "grpc", "endpoint": "http://c:4317"},
        ),
    ],
    ids=[
        "gateway-values",
        "standard-wins",
        "fixed-sampler",
        "headers-decoded",
        "traces-specific-first",
        "attributes-merge",
        "grpc",
    ],
)
def test_standard_otel_variables_win(environ: dict[str, str], expected: dict[str, object]) -> None:
    mine = OtelSettings(
        exporter="otlp",
        sample_ratio=0.5,
        service_name="gw",
        headers={"a": "1"},
        resource_attributes={"region": "eu", "env": "dev"},
    )
    resolved = apply_otel_environment(mine, environ).model_dump()
    assert {key: resolved[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "jaeger"},
            "environment: OTEL_TRACES_EXPORTER: Input should be 'none', 'console' or 'otlp'",
        ),
        (
            {"OTEL_TRACES_SAMPLER_ARG": "2"},
            "environment: OTEL_TRACES_SAMPLER_ARG: Input should be less than or equal to 1",
        ),
    ],
)
def test_bad_standard_variables_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        apply_otel_environment(OtelSettings(), environ)
    assert str(caught.value).startswith(message)


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, Callable[[], Awaitable[dict]]]]:
    """A real OTLP/HTTP receiver in its own process; yields its endpoint and a way to await the next span."""
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.otlp_receiver", stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    assert receiver.stdout is not None
    stdout = receiver.stdout

    async def next_span() -> dict:
        async with asyncio.timeout(10):
            return dict(json.loads(await stdout.readline()))

    try:
        port = (await stdout.readline()).decode().split()[-1]
        yield f"http://127.0.0.1:{port}", next_span
    finally:
        receiver.terminate()
        await receiver.wait()


@pytest.mark.integration
async def test_spans_are_exported_over_otlp_http_to_a_real_receiver(tmp_path: Path) -> None:
    async with otlp_receiver() as (endpoint, spans):
        routes = tmp_path / "routes.yaml"
        routes.write_text(routes_for("http://users.internal"))
        otel = OtelSettings(exporter="otlp", endpoint=endpoint, service_name="gateway-test")
        app = Gateway(Settings(routes_file=routes, otel=otel), load_route_file(routes), upstream_apps={"users": echo})
        async with client_for(app) as client:
            await client.get("/api/users/1")
        received = [await spans() for _ in range(2)]  # leaving the lifespan flushed the batch
    assert {span["name"] for span in received} == {"GET /api/users/{id}", "GET"}
    assert {(span["path"], span["service"]) for span in received} == {("/v1/traces", "gateway-test")}
    assert len({span["trace_id"] for span in received}) == 1


@pytest.mark.integration
async def test_at_ratio_zero_only_sampled_parents_are_instrumented_and_every_request_propagates(
    make_gateway: GatewayFactory,
) -> None:
    """Ratio 0 from the settings: requests without a sampled parent skip the instrumentation entirely."""
    sampled_parent = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"
    unsampled_parent = f"00-{'a' * 32}-{INCOMING_PARENT}-00"
    async with otlp_receiver() as (endpoint, spans):
        otel = {"exporter": "otlp", "endpoint": endpoint, "sample_ratio": 0.0}
        app = make_gateway(routes_for("http://users.internal"), upstreams={"users": echo}, otel=otel)
        async with client_for(app) as client:
            fresh = await client.get("/api/users/1")
            unsampled = await client.get("/api/users/1", headers={"traceparent": unsampled_parent})
            sampled = await client.get("/api/users/1", headers={"traceparent": sampled_parent})
        received = [await spans() for _ in range(2)]  # leaving the lifespan flushed the batch
    assert int(traceparent_seen(fresh.json()).split("-")[1], 16) != 0
    assert traceparent_seen(unsampled.json()).split("-")[1] == "a" * 32
    assert traceparent_seen(sampled.json()).split("-")[1] == INCOMING_TRACE
    assert {span["trace_id"] for span in received} == {INCOMING_TRACE}


@contextmanager
def hanging_otlp_endpoint() -> Iterator[str]:
    """A backend that is down the slow way: it takes connections and never answers, so each export waits out
    the exporter's timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/traces"


@pytest.mark.integration
async def test_a_backend_that_never_answers_keeps_the_export_queue_bounded_and_drops_the_rest(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0.2")
    with hanging_otlp_endpoint() as endpoint:
        otel = {"exporter": "otlp", "traces_endpoint": endpoint}
        app = make_gateway(routes_for("http://users.internal"), upstreams={"users": echo}, otel=otel)
        assert app.tracer_provider is not None
        [processor] = app.tracer_provider._active_span_processor._span_processors
        assert isinstance(processor, BatchSpanProcessor)
        queue = processor._batch_processor._queue
        longest = 0
        async with client_for(app) as client:
            for _ in range(20):
                assert (await client.get("/api/users/1")).status_code == 200
                longest = max(longest, len(queue))
    assert longest == 8  # filled up to its bound, and no further
    assert "Queue full, dropping Span" in caplog.text  # 40 spans, 8 queued and 4 in flight: the rest dropped
