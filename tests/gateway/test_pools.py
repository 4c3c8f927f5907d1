"""Upstream pools against real targets: uvicorn servers on loopback, started and stopped by the tests."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from asgi_gateway.config.pools import HealthCheckSpec, RetrySpec, TargetSpec
from asgi_gateway.config.routes import UpstreamSpec
from asgi_gateway.gateway.app import Gateway
from asgi_gateway.gateway.metrics import Metrics
from asgi_gateway.gateway.pool import Pool, Target, TargetTransports
from asgi_gateway.gateway.upstreams import HttpxTransport, Timeouts
from tests.gateway.conftest import GatewayFactory, client_for
from tests.servers import serve
from tests.upstreams import echo

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ADMIN = {"Authorization": "Bearer secret"}


class Member:
    """A target that says who it is, counts what it answers, and passes health checks while `healthy`."""

    def __init__(self, name: str, *, status: int = 200) -> None:
        self.name, self.status = name, status
        self.healthy = True
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/healthz":
            code, body = (200, b"ok") if self.healthy else (503, b"down")
        else:
            self.answered += 1
            code, body = self.status, json.dumps({"member": self.name, "method": scope["method"]}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def members(*apps: Member) -> AsyncIterator[list[str]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve(app)) for app in apps]


def pool_routes(targets: list[str], extra: str = "", route: str = "") -> str:
    listed = ", ".join(f'"{url}"' for url in targets)
    return f"""
upstreams:
  users:
    targets: [{listed}]
{extra}
routes:
  - path: /api/{{rest:path}}
    upstream: users
    rewrite: /{{rest}}
{route}
"""


def pool_of(app: Gateway, name: str = "users") -> Pool:
    transport = app.generation.upstreams[name].transport
    assert isinstance(transport, Pool)
    return transport


def target_at(pool: Pool, url: str) -> Target:
    return next(target for target in pool.targets if target.url == url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def gets(client: httpx.AsyncClient, count: int, concurrency: int = 8) -> list[httpx.Response]:
    """`count` GETs, `concurrency` at a time."""
    responses: list[httpx.Response] = []
    for start in range(0, count, concurrency):
        batch = range(start, min(count, start + concurrency))
        responses += await asyncio.gather(*(client.get(f"/api/item/{index}") for index in batch))
    return responses


async def test_killing_one_of_three_loses_no_request_and_it_comes_back_after_passing_checks(
    make_gateway: GatewayFactory,
) -> None:
    checks = (
        "    health_check: {path: /healthz, interval: 0.02, timeout: 0.5, healthy_threshold: 2, unhealthy_threshold: 2}"
    )
    retries = "    retries: {attempts: 2, on: [connect-failure, reset]}"
    apps = [Member("a"), Member("b"), Member("c")]
    async with serve(apps[0]) as a, serve(apps[2]) as c, AsyncExitStack() as b_server:
        b = await b_server.enter_async_context(serve(apps[1]))
        app = make_gateway(pool_routes([a, b, c], f"{checks}\n{retries}"))
        async with client_for(app) as client:
            pool = pool_of(app)
            killed = target_at(pool, b)
            before = await gets(client, 60)
            assert apps[1].answered > 0
            attempts_before_kill = killed.requests
            detected = asyncio.create_task(pool.wait_until(lambda p: not killed.available))

            async def load_until_detected() -> list[httpx.Response]:
                answered: list[httpx.Response] = []
                for _ in range(300):  # bounded: detection takes a few check intervals
                    answered += await gets(client, 8)
                    if detected.done():
                        break
                return answered

            load = asyncio.create_task(load_until_detected())  # requests keep coming while b goes away
            await b_server.aclose()  # b stops: its kept-alive connections close, new ones are refused
            during = await load
            assert detected.done()
            assert killed.requests > attempts_before_kill  # it was still asked, and the pool sent those elsewhere
            attempts_at_detection = killed.requests
            after = await gets(client, 90)
            assert killed.requests == attempts_at_detection  # nothing was sent its way once detected
            assert {response.json()["member"] for response in after} == {"a", "c"}

            async with serve(apps[1], port=int(b.rsplit(":", 1)[1])):
                await pool.wait_until(lambda p: killed.available)
                assert killed.passes >= 2
                answered = apps[1].answered
                back = await gets(client, 60)
            assert apps[1].answered > answered
    assert [response.status_code for response in (*before, *during, *after, *back)] == [200] * len(
        before + during + after + back
    )


async def test_passive_ejection_takes_out_a_failing_target_within_the_cap(make_gateway: GatewayFactory) -> None:
    outliers = "    outlier_detection: {consecutive_failures: 2, ejection: 60, max_ejected_percent: 34}"
    retries = "    retries: {attempts: 2, on: [connect-failure, 503]}"
    good, bad = Member("good"), Member("bad", status=503)
    dead = f"http://127.0.0.1:{free_port()}"
    async with members(good, bad) as (good_url, bad_url):
        app = make_gateway(pool_routes([good_url, bad_url, dead], f"{outliers}\n{retries}\n    balance: round_robin"))
        async with client_for(app) as client:
            pool = pool_of(app)
            responses = await gets(client, 30, concurrency=1)
            ejected = [target.url for target in pool.targets if target.ejected]
            metrics = (await client.get("/_gateway/metrics")).text
    assert [response.status_code for response in responses] == [200] * 30
    assert len(ejected) == 1  # a third of three targets: the cap leaves the second failing one in
    assert f'gateway_upstream_target_ejections_total{{target="{ejected[0]}",upstream="users"}} 1.0' in metrics
    assert f'gateway_upstream_target_available{{target="{ejected[0]}",upstream="users"}} 0.0' in metrics


async def test_only_idempotent_requests_are_sent_to_another_target(make_gateway: GatewayFactory) -> None:
    retries = "    retries: {attempts: 1, on: [connect-failure]}\n    balance: round_robin"
    idempotent = "    idempotent: [PUT]"
    dead = f"http://127.0.0.1:{free_port()}"
    async with serve(echo) as live:
        app = make_gateway(pool_routes([dead, live], retries, idempotent))
        async with client_for(app) as client:
            statuses = [(await client.request(method, "/api/x", content=b"a")).status_code for method in ("POST",) * 2]
            statuses += [(await client.request(method, "/api/x", content=b"a")).status_code for method in ("PUT",) * 2]
            statuses += [(await client.get("/api/x")).status_code for _ in range(2)]
    assert statuses == [502, 200, 200, 200, 200, 200]  # round robin: each POST pair meets the dead target once


async def test_a_retry_on_status_goes_to_another_target_before_the_client_sees_anything(
    make_gateway: GatewayFactory,
) -> None:
    failing, working = Member("failing", status=503), Member("working")
    async with members(failing, working) as urls:
        app = make_gateway(pool_routes(urls, "    retries: {attempts: 1, on: [503]}"))
        async with client_for(app) as client:
            responses = await gets(client, 20, concurrency=1)  # one at a time: always within the retry budget
    assert {(response.status_code, response.json()["member"]) for response in responses} == {(200, "working")}
    assert failing.answered > 0


async def test_when_every_target_fails_its_checks_the_pool_still_tries_them_all(make_gateway: GatewayFactory) -> None:
    checks = "    health_check: {path: /healthz, interval: 0.02, timeout: 0.5, unhealthy_threshold: 1}"
    first, second = Member("first"), Member("second")
    first.healthy = second.healthy = False
    async with members(first, second) as urls:
        app = make_gateway(pool_routes(urls, checks), admin_token="secret")
        async with client_for(app) as client:
            pool = pool_of(app)
            await pool.wait_until(lambda p: p.panic)
            responses = await gets(client, 10)
            ready = (await client.get("/_gateway/ready")).json()
            listed = (await client.get("/_gateway/admin/upstreams", headers=ADMIN)).json()
    assert [response.status_code for response in responses] == [200] * 10
    assert ready["upstreams"]["users"]["panic"] is True
    assert [target["state"] for target in listed["upstreams"]["users"]["targets"]] == ["unhealthy", "unhealthy"]


async def test_a_reload_keeps_the_health_of_targets_that_stay(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    checks = "    health_check: {path: /healthz, interval: 0.02, timeout: 0.5, unhealthy_threshold: 1}"
    steady, sick, added = Member("steady"), Member("sick"), Member("added")
    sick.healthy = False
    async with members(steady, sick, added) as (steady_url, sick_url, added_url):
        app = make_gateway(pool_routes([steady_url, sick_url], checks))
        async with client_for(app) as client:
            old = pool_of(app)
            await old.wait_until(lambda p: not target_at(p, sick_url).healthy)
            (tmp_path / "routes.yaml").write_text(pool_routes([steady_url, sick_url, added_url], checks))
            assert (await app.reload())["ok"]
            new = pool_of(app)
            states = {target.url: target.available for target in new.targets}
            responses = await gets(client, 20)
    assert new is not old
    assert states == {steady_url: True, sick_url: False, added_url: True}
    assert {response.json()["member"] for response in responses} == {"steady", "added"}


async def test_a_host_name_becomes_a_target_per_address_under_dns_refresh(make_gateway: GatewayFactory) -> None:
    async with serve(echo) as upstream:
        port = int(upstream.rsplit(":", 1)[1])
        extra = "    dns_refresh: 0.02\n    retries: {attempts: 1, on: [connect-failure]}"
        app = make_gateway(pool_routes([f"http://localhost:{port}"], extra))
        async with client_for(app) as client:
            pool = pool_of(app)
            first = list(pool.targets)
            await pool.refresh_addresses()
            response = await client.get("/api/x")
    found = await asyncio.get_running_loop().getaddrinfo("localhost", port, type=socket.SOCK_STREAM)
    addresses = {str(info[4][0]) for info in found}
    expected = {f"http://[{a}]:{port}" if ":" in a else f"http://{a}:{port}" for a in addresses}
    assert {target.url for target in first} == expected
    assert f"http://127.0.0.1:{port}" in expected
    assert pool.targets == first  # the same Target objects: their state survives a refresh
    assert response.status_code == 200
    assert [value for name, value in response.json()["headers"] if name == "host"] == [f"localhost:{port}"]


async def test_fan_out_calls_use_the_pool(make_gateway: GatewayFactory) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with serve(Member("live")) as live:
        routes = f"""
upstreams:
  users:
    targets: ["{dead}", {{url: "{live}", weight: 3}}]
    retries: {{attempts: 1, on: [connect-failure]}}
routes:
  - path: /both
    fanout:
      calls:
        one: {{upstream: users, path: /one}}
        two: {{upstream: users, path: /two}}
"""
        app = make_gateway(routes)
        async with client_for(app) as client:
            responses = [await client.get("/both") for _ in range(10)]
    assert [response.status_code for response in responses] == [200] * 10


def direct_pool(spec: UpstreamSpec) -> Pool:
    def connect() -> TargetTransports:
        transport = HttpxTransport(pool_size=2, timeouts=Timeouts(connect=1.0, read=1.0, pool=1.0), app=echo)
        return TargetTransports(transport, transport)

    return Pool("users", spec, connect, Metrics().targets)


async def test_a_target_turns_after_its_threshold_of_checks_in_a_row() -> None:
    checks = HealthCheckSpec(path="/healthz", healthy_threshold=2, unhealthy_threshold=3)
    pool = direct_pool(UpstreamSpec(targets=(TargetSpec(url="http://a:1"),), health_check=checks))
    target = pool.targets[0]
    verdicts = []
    for passed in (False, False, True, False, False, False, True, False, True, True):
        pool.checked(target, passed)
        verdicts.append(target.healthy)
    assert verdicts == [True, True, True, True, True, False, False, False, False, True]


async def test_the_retry_budget_is_a_share_of_requests_in_flight_with_a_floor_of_three() -> None:
    budget = RetrySpec(budget_percent=20)
    pool = direct_pool(UpstreamSpec(targets=(TargetSpec(url="http://a:1"),), retries=budget))
    allowed = []
    for in_flight, retrying in ((0, 2), (0, 3), (100, 19), (100, 20)):
        pool._in_flight, pool._retrying = in_flight, retrying
        allowed.append(pool._budget_allows())
    assert allowed == [True, False, True, False]


async def test_an_answer_keeps_its_target_busy_until_it_is_closed() -> None:
    """A streamed body is work in progress: least_request sends the next requests to the other target, and a
    retired target's connections stay open while its answers are read."""
    targets = (TargetSpec(url="http://a:1"), TargetSpec(url="http://b:1"))
    pool = direct_pool(UpstreamSpec(targets=targets, balance="least_request"))
    await pool.start()
    try:
        held = await pool.send("GET", "/held", [("host", "a")], b"")
        busy = next(target for target in pool.targets if target.in_flight)
        for _ in range(3):
            answer = await pool.send("GET", "/next", [("host", "a")], b"")
            await answer.read()
            await answer.close()
        await held.read()
        await held.close()
        await held.close()  # closing twice releases once
    finally:
        await pool.aclose()
    assert [(target is busy, target.requests, target.in_flight) for target in pool.targets] in (
        [(True, 1, 0), (False, 3, 0)],
        [(False, 3, 0), (True, 1, 0)],
    )
