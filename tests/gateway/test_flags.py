"""Flags at the gateway: resolved once per request, forwarded upstream, steering routes, live through Redis."""

import asyncio

import pytest
import redis.asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from asgi_gateway.flags.definitions import FlagDefinition
from asgi_gateway.flags.sources import RedisSource
from tests.gateway.conftest import TRUSTED_CLIENT, GatewayFactory, client_for
from tests.upstreams import echo

pytestmark = pytest.mark.anyio

ROUTES = """
upstreams:
  users: {url: "http://users.internal"}
  users-v2: {url: "http://users-v2.internal"}
flags:
  new-profile:
    type: bool
    default: false
    rules:
      - {users: [u-1], value: true}
      - {orgs: [acme], value: true}
  pricing:
    type: str
    default: a
    rules:
      - {users: [u-2], value: b}
routes:
  - path: /api/users/{id}
    upstream: users
    flags: [pricing]
    when: [{flag: new-profile, equals: true, upstream: users-v2}]
  - path: /plain
    upstream: users
"""


def seen(response_json: dict, name: str) -> list[str]:
    return [value for key, value in response_json["headers"] if key == name]


def host_seen(response_json: dict) -> str:
    [host] = seen(response_json, "host")
    return host


@pytest.fixture
def two_upstreams() -> dict[str, object]:
    return {"users": echo, "users-v2": echo}


@pytest.mark.parametrize(
    ("headers", "host", "forwarded"),
    [
        ({}, "users.internal", "pricing=a; new-profile=false"),
        ({"X-User-Id": "u-1"}, "users-v2.internal", "pricing=a; new-profile=true"),
        ({"X-Org-Id": "acme"}, "users-v2.internal", "pricing=a; new-profile=true"),
        ({"X-User-Id": "u-2"}, "users.internal", "pricing=b; new-profile=false"),
    ],
    ids=["default", "user-targeted", "org-targeted", "other-flag"],
)
async def test_flags_steer_the_route_and_reach_the_upstream(
    make_gateway: GatewayFactory, two_upstreams: dict, headers: dict[str, str], host: str, forwarded: str
) -> None:
    app = make_gateway(ROUTES, upstreams=two_upstreams, **TRUSTED_CLIENT)
    async with client_for(app) as client:
        response = await client.get("/api/users/1", headers=headers)
    assert host_seen(response.json()) == host
    assert seen(response.json(), "x-feature-flags") == [forwarded]


async def test_a_client_cannot_inject_the_flags_header(make_gateway: GatewayFactory, two_upstreams: dict) -> None:
    app = make_gateway(ROUTES, upstreams=two_upstreams)
    async with client_for(app) as client:
        flagged = await client.get("/api/users/1", headers={"X-Feature-Flags": "new-profile=true"})
        plain = await client.get("/plain", headers={"X-Feature-Flags": "new-profile=true"})
    assert seen(flagged.json(), "x-feature-flags") == ["pricing=a; new-profile=false"]
    assert host_seen(flagged.json()) == "users.internal"
    assert seen(plain.json(), "x-feature-flags") == []  # only the gateway writes it, on every route


async def test_no_fanout_call_carries_a_clients_flags_header(make_gateway: GatewayFactory) -> None:
    routes = """
upstreams:
  echo: {url: "http://echo.internal"}
routes:
  - path: /agg
    fanout:
      calls:
        plain: {upstream: echo, path: /plain}
        cached: {upstream: echo, path: /cached, cache: {ttl: 10}}
        asks: {upstream: echo, path: /asks, forward_headers: [X-Feature-Flags, X-Tenant]}
"""
    app = make_gateway(routes, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.get("/agg", headers={"X-Feature-Flags": "new-profile=true", "X-Tenant": "t"})
    answers = response.json()
    assert {name: seen(answers[name], "x-feature-flags") for name in answers} == {
        "plain": [],
        "cached": [],
        "asks": [],
    }
    assert seen(answers["asks"], "x-tenant") == ["t"]  # what else the call asks for still travels


async def test_flag_evaluations_are_span_events(make_gateway: GatewayFactory, two_upstreams: dict) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_gateway(ROUTES, upstreams=two_upstreams, tracer_provider=provider, **TRUSTED_CLIENT)
    async with client_for(app) as client:
        await client.get("/api/users/1", headers={"X-User-Id": "u-1"})
    [server] = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    events = {
        event.attributes["feature_flag.key"]: dict(event.attributes) for event in server.events if event.attributes
    }
    assert events["new-profile"] == {
        "feature_flag.key": "new-profile",
        "feature_flag.provider.name": "gateway",
        "feature_flag.result.reason": "targeting_match",
        "feature_flag.result.variant": "true",
        "feature_flag.context.id": "u-1",
    }
    assert events["pricing"]["feature_flag.result.reason"] == "default"


async def test_a_definition_put_in_redis_reaches_the_running_gateway(
    make_gateway: GatewayFactory,
    two_upstreams: dict,
    redis_url: str,
    redis_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    app = make_gateway(ROUTES, upstreams=two_upstreams, redis_url=redis_url, flags={"redis_prefix": redis_prefix})
    changed = asyncio.Event()
    app.resolver.subscribe(lambda _: changed.set())
    writer = RedisSource(redis_client, prefix=redis_prefix)
    async with client_for(app) as client:
        before = await client.get("/api/users/1")
        await writer.put(FlagDefinition.model_validate({"key": "new-profile", "type": "bool", "default": True}))
        async with asyncio.timeout(2):
            await changed.wait()
        after = await client.get("/api/users/1")
    assert (host_seen(before.json()), host_seen(after.json())) == ("users.internal", "users-v2.internal")


async def test_a_bad_definition_in_redis_shows_in_ready_and_metrics(
    make_gateway: GatewayFactory,
    two_upstreams: dict,
    redis_url: str,
    redis_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    """Skipped on its own: the route file's definition of the key still applies, and the replica stays ready."""
    await redis_client.hset(f"{redis_prefix}definitions", "pricing", '{"type": "str", "default": 7}')
    settings = {"redis_url": redis_url, "flags": {"redis_prefix": redis_prefix}, **TRUSTED_CLIENT}
    app = make_gateway(ROUTES, upstreams=two_upstreams, **settings)
    async with client_for(app) as client:
        ready = await client.get("/_gateway/ready")
        metrics = await client.get("/_gateway/metrics")
        proxied = await client.get("/api/users/1", headers={"X-User-Id": "u-2"})
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert ready.json()["invalid_flag_definitions"] == {"pricing": "default: str flag: expected a string, got int 7"}
    assert "\ngateway_flag_definitions_invalid 1.0\n" in metrics.text
    assert seen(proxied.json(), "x-feature-flags") == ["pricing=b; new-profile=false"]
