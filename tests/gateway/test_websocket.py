"""WebSocket sessions through the gateway: the gateway and a Starlette WebSocket upstream both served by uvicorn
on loopback, a real aiohttp client in front."""

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.types import Message

from asgi_gateway.gateway.app import Gateway
from asgi_gateway.gateway.websocket import refuse
from asgi_gateway.gateway.wsserver import GracefulWebSocketProtocol
from asgi_gateway.middleware.auth import api_key_digest
from tests.gateway.conftest import GatewayFactory
from tests.gateway.test_served import memory_kib
from tests.servers import bound_socket, gateway_process, serve
from tests.upstreams import WebSocketOrigin

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FLAGS = """
flags:
  beta: {type: bool, default: false, rules: [{users: [u-1], value: true}]}
"""


def routes_for(url: str, *, websocket: str = "{idle_timeout: 300, max_message_bytes: 1024}", extra: str = "") -> str:
    return f"""
upstreams:
  origin: {{url: "{url}"}}
{extra}
routes:
  - path: /ws/{{rest:path}}
    upstream: origin
    rewrite: /{{rest}}
    websocket: {websocket}
"""


@asynccontextmanager
async def session_through(
    make_gateway: GatewayFactory, routes: str, app: list[Gateway] | None = None, **settings: object
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The gateway for `routes` under uvicorn with the gateway's WebSocket protocol, and a client session;
    the gateway is put in `app` when given (its server has stopped, its sessions ended, once this exits)."""
    gateway = make_gateway(routes, **settings)
    if app is not None:
        app.append(gateway)
    async with (
        serve(gateway, lifespan="on", ws=GracefulWebSocketProtocol) as url,
        aiohttp.ClientSession() as client,
    ):
        yield url.replace("http://", "ws://"), client


@asynccontextmanager
async def origin_served(origin: WebSocketOrigin) -> AsyncIterator[str]:
    async with serve(origin, ws="websockets-sansio") as url:
        yield url


@pytest.fixture
def origin() -> WebSocketOrigin:
    return WebSocketOrigin()


async def test_text_and_binary_messages_cross_both_ways_in_order(
    make_gateway: GatewayFactory, origin: WebSocketOrigin
) -> None:
    sent: list[str | bytes] = [f"text {n} é" if n % 2 else n.to_bytes(4, "big") * 50 for n in range(40)]
    async with (
        origin_served(origin) as url,
        session_through(make_gateway, routes_for(url)) as (gateway, client),
        client.ws_connect(f"{gateway}/ws/echo") as ws,
    ):
        for message in sent:
            await (ws.send_str(message) if isinstance(message, str) else ws.send_bytes(message))
        received = [(await ws.receive()).data for _ in sent]
    assert received == sent


async def test_close_codes_and_reasons_pass_both_ways(make_gateway: GatewayFactory, origin: WebSocketOrigin) -> None:
    async with origin_served(origin) as url, session_through(make_gateway, routes_for(url)) as (gateway, client):
        async with client.ws_connect(f"{gateway}/ws/echo") as ws:
            await ws.close(code=4001, message=b"client leaves")
        by_client = await origin.ended.get()
        async with client.ws_connect(f"{gateway}/ws/echo") as ws:
            await ws.send_str("close 4002 upstream leaves")
            closing = await ws.receive()
        by_upstream = await origin.ended.get()
    assert by_client == (4001, "client leaves")
    assert by_upstream == (4002, "upstream leaves")
    assert (closing.type, closing.data, closing.extra) == (aiohttp.WSMsgType.CLOSE, 4002, "upstream leaves")


async def test_the_subprotocol_is_the_upstreams_choice(make_gateway: GatewayFactory, origin: WebSocketOrigin) -> None:
    async with origin_served(origin) as url, session_through(make_gateway, routes_for(url)) as (gateway, client):
        async with client.ws_connect(f"{gateway}/ws/seen", protocols=("chat.v1", "chat.v2")) as ws:
            seen = json.loads((await ws.receive()).data)
            chosen = ws.protocol
        async with client.ws_connect(f"{gateway}/ws/seen", protocols=("chat.v1",)) as ws:
            none_chosen = ws.protocol
    assert seen["subprotocols"] == ["chat.v1", "chat.v2"]
    assert (chosen, none_chosen) == ("chat.v2", None)


async def test_the_handshake_carries_what_an_http_request_would(
    make_gateway: GatewayFactory, origin: WebSocketOrigin
) -> None:
    routes = routes_for(url="URL", extra=FLAGS).replace("    websocket:", "    flags: [beta]\n    websocket:")
    headers = {
        "Cookie": "session=abc",
        "X-Request-ID": "ws-req-1",
        "X-User-Id": "u-1",
        "X-Feature-Flags": "beta=false",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Forwarded-For": "198.51.100.1",
    }
    async with (
        origin_served(origin) as url,
        session_through(make_gateway, routes.replace("URL", url)) as (gw, client),
        client.ws_connect(f"{gw}/ws/seen?room=7", headers=headers) as ws,
    ):
        seen = json.loads((await ws.receive()).data)
        answered_id = ws._response.headers.get("x-request-id")
    fields: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        fields.setdefault(name, []).append(value)
    assert (seen["path"], seen["query"]) == ("/seen", "room=7")
    assert fields["cookie"] == ["session=abc"]
    assert fields["x-request-id"] == ["ws-req-1"]
    assert fields["x-feature-flags"] == ["beta=true"]
    assert fields["traceparent"] == [headers["traceparent"]]  # tracing off: the client's passes on
    # uvicorn takes the client's address from X-Forwarded-For of a trusted peer, as for HTTP
    assert fields["x-forwarded-for"] == ["198.51.100.1, 198.51.100.1"]
    assert fields["x-forwarded-proto"] == ["http"]
    assert fields["host"] == [url.removeprefix("http://")]
    assert len(fields["sec-websocket-key"]) == 1  # the gateway's own handshake, not the client's as well
    assert answered_id == "ws-req-1"


async def test_flags_steer_the_handshake(make_gateway: GatewayFactory) -> None:
    stable, beta = WebSocketOrigin("stable"), WebSocketOrigin("beta")
    async with origin_served(stable) as stable_url, origin_served(beta) as beta_url:
        routes = routes_for(stable_url, extra=f'  beta: {{url: "{beta_url}"}}\n{FLAGS}')
        routes = routes.replace(
            "    websocket:", "    when: [{flag: beta, equals: true, upstream: beta}]\n    websocket:"
        )
        async with session_through(make_gateway, routes) as (gateway, client):
            origins = []
            for user in ("u-1", "u-2"):
                async with client.ws_connect(f"{gateway}/ws/seen", headers={"X-User-Id": user}) as ws:
                    origins.append(json.loads((await ws.receive()).data)["origin"])
    assert origins == ["beta", "stable"]


async def test_sessions_spread_over_a_pools_targets(make_gateway: GatewayFactory) -> None:
    """A pooled upstream opens each session on a target its balancer picks, like a request."""
    first, second = WebSocketOrigin("first"), WebSocketOrigin("second")
    async with origin_served(first) as first_url, origin_served(second) as second_url:
        routes = routes_for("POOL").replace(
            '{url: "POOL"}', f'{{targets: ["{first_url}", "{second_url}"], balance: round_robin}}'
        )
        async with session_through(make_gateway, routes) as (gateway, client):
            origins = set()
            for _ in range(4):
                async with client.ws_connect(f"{gateway}/ws/seen") as ws:
                    origins.add(json.loads((await ws.receive()).data)["origin"])
    assert origins == {"first", "second"}


async def test_a_refused_or_unreachable_upstream_is_a_502_handshake(
    make_gateway: GatewayFactory, origin: WebSocketOrigin
) -> None:
    closed = bound_socket()
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    routes = routes_for("URL", extra=f'  dead: {{url: "{dead}"}}') + "  - {path: /dead, upstream: dead}\n"
    async with origin_served(origin) as url, session_through(make_gateway, routes.replace("URL", url)) as (gw, client):
        statuses = []
        for path in ("/ws/refuse", "/dead"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(f"{gw}{path}")
            statuses.append(refused.value.status)
    assert statuses == [502, 502]


async def test_handshakes_pass_the_routes_auth_and_rate_limit(
    make_gateway: GatewayFactory, origin: WebSocketOrigin, tmp_path: Path
) -> None:
    """An upgrade is a request of its route: without a key 401, past the limit 429, never reaching the upstream."""
    (tmp_path / "keys.txt").write_text(f"{api_key_digest('k-1')} svc\n")
    extra = "    auth: {api_key: {keys_file: keys.txt}}\n    rate_limit: {requests: 1, per: 60, key: api_key}\n"
    async with origin_served(origin) as url, session_through(make_gateway, routes_for(url) + extra) as (gw, client):
        statuses = []
        for headers in ({}, {"X-API-Key": "k-1"}, {"X-API-Key": "k-1"}):
            try:
                async with client.ws_connect(f"{gw}/ws/echo", headers=headers) as ws:
                    await ws.send_str("hi")
                    statuses.append(101 if (await ws.receive()).data == "hi" else 0)
            except aiohttp.WSServerHandshakeError as refused:
                statuses.append(refused.status)
    assert statuses == [401, 101, 429]


async def test_without_http_answers_a_failed_upstream_is_close_1014() -> None:
    """Servers without the websocket.http.response extension: the handshake completes, then closes with 1014."""
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    async def nothing() -> Message:
        raise AssertionError("not read")

    scope = {"type": "websocket", "path": "/x", "headers": [], "extensions": {}}
    await refuse(scope, nothing, record, 502, "The upstream did not take the WebSocket.")
    await refuse(scope, nothing, record, 404, "No WebSocket route for /x.")
    assert [message["type"] for message in sent] == ["websocket.accept", "websocket.close", "websocket.close"]
    assert (sent[1]["code"], sent[2]["code"]) == (1014, 1008)


async def test_routes_without_websockets_and_unknown_paths_are_404(
    make_gateway: GatewayFactory, origin: WebSocketOrigin
) -> None:
    routes = routes_for("URL") + "  - {path: /plain, upstream: origin, websocket: false}\n"
    async with origin_served(origin) as url, session_through(make_gateway, routes.replace("URL", url)) as (gw, client):
        statuses = []
        for path in ("/plain", "/nowhere", "/ws/a%2Fb"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(f"{gw}{path}")
            statuses.append(refused.value.status)
    assert statuses == [404, 404, 400]


async def test_a_message_over_the_limit_closes_with_1009(make_gateway: GatewayFactory, origin: WebSocketOrigin) -> None:
    async with origin_served(origin) as url, session_through(make_gateway, routes_for(url)) as (gateway, client):
        async with client.ws_connect(f"{gateway}/ws/echo") as ws:
            await ws.send_bytes(b"x" * 1024)
            echoed = await ws.receive()
            await ws.send_bytes(b"x" * 1025)
            closing = await ws.receive()
        upstream_end = await origin.ended.get()
    assert len(echoed.data) == 1024
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    assert upstream_end[0] == 1001


async def test_an_idle_session_is_closed_on_both_sides(make_gateway: GatewayFactory, origin: WebSocketOrigin) -> None:
    routes = routes_for("URL", websocket="{idle_timeout: 0.2}")
    async with origin_served(origin) as url, session_through(make_gateway, routes.replace("URL", url)) as (gw, client):
        async with client.ws_connect(f"{gw}/ws/echo") as ws:
            await ws.send_str("still here")
            echoed = await ws.receive()
            closing = await ws.receive()
        upstream_end = await origin.ended.get()
    assert echoed.data == "still here"
    assert (closing.data, closing.extra) == (1001, "idle timeout")
    assert upstream_end == (1001, "idle timeout")


async def test_pings_are_answered(make_gateway: GatewayFactory, origin: WebSocketOrigin) -> None:
    async with (
        origin_served(origin) as url,
        session_through(make_gateway, routes_for(url)) as (gateway, client),
        client.ws_connect(f"{gateway}/ws/echo", autoping=False) as ws,
    ):
        await ws.ping(b"are you there")
        pong = await ws.receive()
    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"are you there")


async def test_a_session_has_one_span_an_access_line_and_metrics(
    make_gateway: GatewayFactory, origin: WebSocketOrigin, capfd: pytest.CaptureFixture[str]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app: list[Gateway] = []
    async with (
        origin_served(origin) as url,
        session_through(make_gateway, routes_for(url), app, tracer_provider=provider) as (gateway, client),
        client.ws_connect(f"{gateway}/ws/seen", headers={"X-Request-ID": "ws-2"}) as ws,
    ):
        seen = json.loads((await ws.receive()).data)
        await ws.send_str("héllo")
        await ws.receive()
        open_sessions = app[0].metrics.websocket_sessions._value.get()
        await ws.close(code=4000, message=b"bye")
    metrics = app[0].metrics.exposition().decode()
    lines = [json.loads(text) for text in capfd.readouterr().out.splitlines() if '"WEBSOCKET"' in text]
    [server] = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    [line] = lines
    traceparent = dict(seen["headers"])["traceparent"]
    assert server.name == "WEBSOCKET /ws/{rest}"
    assert traceparent.split("-")[1] == f"{server.context.trace_id:032x}"
    assert server.attributes is not None
    assert (server.attributes["gateway.upstream"], server.attributes["gateway.websocket.close_code"]) == (
        "origin",
        4000,
    )
    assert {key: line[key] for key in ("route", "status", "close_code", "closed_by", "request_id", "upstream")} == {
        "route": "/ws/{rest}",
        "status": 101,
        "close_code": 4000,
        "closed_by": "client",
        "request_id": "ws-2",
        "upstream": "origin",
    }
    assert (line["messages_in"], line["bytes_in"], line["messages_out"]) == (1, len("héllo".encode()), 2)
    assert line["trace_id"] == f"{server.context.trace_id:032x}"
    assert 'gateway_websocket_messages_total{direction="in",route="/ws/{rest:path}"} 1.0' in metrics
    assert 'gateway_websocket_bytes_total{direction="in",route="/ws/{rest:path}"} 6.0' in metrics
    assert (open_sessions, "gateway_websocket_sessions 0.0" in metrics) == (1, True)


async def test_sigterm_closes_sessions_with_1001_after_the_grace(tmp_path: Path, origin: WebSocketOrigin) -> None:
    async with origin_served(origin) as url:
        routes = tmp_path / "routes.yaml"
        routes.write_text(routes_for(url))
        command = [sys.executable, "-m", "asgi_gateway.gateway", "run", "--routes", str(routes)]
        async with (
            gateway_process(*command, env={"GATEWAY_SHUTDOWN_GRACE": "1"}) as (process, gateway),
            aiohttp.ClientSession() as client,
            client.ws_connect(gateway.replace("http://", "ws://") + "/ws/echo") as ws,
        ):
            process.send_signal(signal.SIGTERM)
            await ws.send_str("during the grace")
            echoed = await ws.receive()
            closing = await ws.receive()
            upstream_end = await origin.ended.get()
            async with asyncio.timeout(10):
                returncode = await process.wait()
    assert echoed.data == "during the grace"
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert upstream_end[0] == 1001
    assert returncode == -signal.SIGTERM


async def test_a_slow_reader_does_not_make_the_gateway_buffer(tmp_path: Path, origin: WebSocketOrigin) -> None:
    """100 MiB in 256 KiB messages to a client that reads one message at a time: the gateway holds about one."""
    count, size = 400, 256 * 1024
    async with origin_served(origin) as url:
        routes = tmp_path / "routes.yaml"
        routes.write_text(routes_for(url, websocket=f"{{max_message_bytes: {size}}}"))
        command = [sys.executable, "-m", "asgi_gateway.gateway", "run", "--routes", str(routes)]
        async with (
            gateway_process(*command) as (process, gateway),
            aiohttp.ClientSession() as client,
        ):
            base = gateway.replace("http://", "ws://")
            async with client.ws_connect(f"{base}/ws/flood/2/{size}") as ws:  # imports and pools settle first
                while (await ws.receive()).type is not aiohttp.WSMsgType.CLOSE:
                    pass
            baseline = memory_kib(process.pid, "VmRSS")
            numbers = []
            async with client.ws_connect(f"{base}/ws/flood/{count}/{size}", max_msg_size=0) as ws:
                while (message := await ws.receive()).type is aiohttp.WSMsgType.BINARY:
                    numbers.append(int.from_bytes(message.data[:8], "big"))
                    memory_kib(process.pid, "VmRSS")  # the reader's own work between messages
            peak = memory_kib(process.pid, "VmHWM")
    assert numbers == list(range(count))
    assert (message.data, message.extra) == (1000, "done")
    assert peak - baseline < 12 * 1024, f"gateway peak RSS grew by {(peak - baseline) / 1024:.1f} MiB"


async def test_shutdown_of_an_in_process_server_closes_sessions_with_1001(
    make_gateway: GatewayFactory, origin: WebSocketOrigin
) -> None:
    """uvicorn's Server told to exit, as its SIGTERM handler does: the session ends with 1001, not uvicorn's 1012."""
    async with origin_served(origin) as url:
        sock = bound_socket()
        config = uvicorn.Config(
            make_gateway(routes_for(url)),
            lifespan="on",
            log_level="warning",
            ws=GracefulWebSocketProtocol,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))  # the handshake waits in the socket's backlog
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(f"ws://127.0.0.1:{sock.getsockname()[1]}/ws/echo") as ws,
        ):
            server.should_exit = True
            closing = await ws.receive()
        await serving
        sock.close()
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
