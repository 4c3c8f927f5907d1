"""Prometheus metrics: labelled from config, bounded under random paths, summed across workers."""

import sys
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_gateway.gateway.upstreams import (
    UpstreamBadResponse,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from tests.gateway.conftest import TRUSTED_CLIENT, GatewayFactory, client_for
from tests.servers import gateway_process, serve
from tests.upstreams import Controllable, Origin

pytestmark = pytest.mark.anyio

ROUTES = """
upstreams:
  origin: {url: "http://origin.internal"}
  down: {url: "http://127.0.0.1:1"}
flags:
  layout: {type: str, default: classic, rules: [{users: [u-1], value: modern}]}
routes:
  - path: /items/{id}
    upstream: origin
    cache: {ttl: 30}
    flags: [layout]
  - path: /down
    upstream: down
  - path: /dashboard/{id}
    fanout:
      calls:
        item: {upstream: origin, path: "/items/{id}"}
        gone: {upstream: down, path: /x, required: false}
"""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def test_a_scrape_shows_what_happened_with_config_labels(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": Origin()}, **TRUSTED_CLIENT)
    async with client_for(app) as client:
        for _ in range(3):
            await client.get("/items/1", headers={"X-User-Id": "u-1"})
        await client.get("/down")
        await client.get("/dashboard/2")
        text = (await client.get("/_gateway/metrics")).text
    route = "/items/{id}"
    assert value(text, "gateway_requests_total", route=route, method="GET", status="2xx") == 3
    assert value(text, "gateway_requests_total", route="/down", method="GET", status="5xx") == 1
    assert value(text, "gateway_request_duration_seconds_count", route=route, method="GET") == 3
    assert value(text, "gateway_cache_lookups_total", route=route, outcome="miss") == 1
    assert value(text, "gateway_cache_lookups_total", route=route, outcome="hit") == 2
    assert value(text, "gateway_flag_evaluations_total", flag="layout", variant="modern") == 3
    assert value(text, "gateway_upstream_requests_total", upstream="origin", outcome="2xx") == 2  # 1 miss + 1 branch
    assert value(text, "gateway_upstream_requests_total", upstream="down", outcome="unreachable") == 2
    assert value(text, "gateway_fanout_calls_total", route="/dashboard/{id}", call="gone", outcome="error") == 1
    assert value(text, "gateway_requests_in_flight") == 1  # the scrape itself


async def test_random_paths_do_not_grow_the_series(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": Origin()})
    async with client_for(app) as client:
        for _ in range(10):
            await client.get(f"/{uuid4().hex}")
        await client.get("/_gateway/metrics")  # the scrape's own series exist from here on
        before = len(samples((await client.get("/_gateway/metrics")).text))
        for _ in range(1000):
            await client.get(f"/{uuid4().hex}/{uuid4().hex}", params={"q": uuid4().hex})
        text = (await client.get("/_gateway/metrics")).text
    assert len(samples(text)) == before
    assert value(text, "gateway_requests_total", route="(unmatched)", method="GET", status="4xx") == 1010


async def test_methods_outside_the_standard_ones_share_one_label(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"origin": Origin()})
    async with client_for(app) as client:
        for index in range(20):
            await client.request(f"VERB{index}", "/down")
        await client.request("PATCH", "/down")
        text = (await client.get("/_gateway/metrics")).text
    # 405s, which no route took
    assert value(text, "gateway_requests_total", route="(unmatched)", method="OTHER", status="4xx") == 20
    assert value(text, "gateway_requests_total", route="/down", method="PATCH", status="5xx") == 1
    assert not any("VERB" in labels for _, label_set in samples(text) for labels in dict(label_set).values())


@pytest.mark.integration
async def test_two_workers_add_up(tmp_path: Path) -> None:
    upstream = Controllable()
    async with serve(upstream) as url:
        routes = tmp_path / "routes.yaml"
        routes.write_text(f'upstreams:\n  u: {{url: "{url}"}}\nroutes:\n  - {{path: "/user/{{id}}", upstream: u}}\n')
        command = [sys.executable, "-m", "asgi_gateway.gateway", "run", "--routes", str(routes), "--workers", "2"]
        async with gateway_process(*command, env={"PROMETHEUS_MULTIPROC_DIR": ""}, workers=2) as (_, gateway):
            # a new connection per request lets the kernel spread them over both workers
            for _ in range(40):
                async with httpx.AsyncClient(base_url=gateway) as client:
                    assert (await client.get("/user/1")).status_code == 200
            async with httpx.AsyncClient(base_url=gateway) as client:
                text = (await client.get("/_gateway/metrics")).text
    assert value(text, "gateway_requests_total", route="/user/{id}", method="GET", status="2xx") == 40
    assert value(text, "gateway_upstream_requests_total", upstream="u", outcome="2xx") == 40


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (UpstreamError, "error"),
        (UpstreamTimeout, "timeout"),
        (UpstreamUnreachable, "unreachable"),
        (UpstreamDisconnected, "disconnected"),
        (UpstreamBadResponse, "bad_response"),
    ],
)
def test_each_upstream_error_names_its_metric_kind(error: type[UpstreamError], kind: str) -> None:
    """The `outcome` label of gateway_upstream_requests for a failed call; a subclass keeps its own."""
    assert error("x").kind == kind
