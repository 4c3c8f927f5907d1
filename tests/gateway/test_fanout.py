"""Fan-out routes against a real upstream on loopback with controllable delays and failures."""

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from asgi_gateway.gateway.gather import Call, Outcome, gather
from tests.gateway.conftest import GatewayFactory, client_for
from tests.servers import serve
from tests.upstreams import Controllable, echo

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Controllable, str]]:
    app = Controllable()
    async with serve(app) as url:
        yield app, url


def fanout_routes(url: str, calls: str, *, max_concurrency: int = 8, deadline: float = 5.0, extra: str = "") -> str:
    return f"""
upstreams:
  svc: {{url: "{url}", timeout: {{read: 5}}}}
routes:
  - path: /agg/{{id}}
    fanout:
      max_concurrency: {max_concurrency}
      deadline: {deadline}
{extra}      calls:
{calls}
"""


def delays(count: int, ms: int) -> str:
    return "".join(f"        c{i}: {{upstream: svc, path: /delay/{ms}}}\n" for i in range(count))


async def test_calls_run_concurrently(make_gateway: GatewayFactory, upstream: tuple[Controllable, str]) -> None:
    app, url = upstream
    gateway = make_gateway(fanout_routes(url, delays(5, 200)))
    async with client_for(gateway) as client:
        started = time.perf_counter()
        response = await client.get("/agg/1")
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert response.json() == {f"c{i}": {"waited": 200} for i in range(5)}
    assert response.headers["content-type"] == "application/json"
    assert app.most_in_flight == 5
    assert elapsed < 0.6, f"5 x 200 ms calls took {elapsed:.2f}s: not concurrent"


async def test_max_concurrency_bounds_what_the_upstream_sees(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str]
) -> None:
    app, url = upstream
    gateway = make_gateway(fanout_routes(url, delays(6, 50), max_concurrency=2))
    async with client_for(gateway) as client:
        response = await client.get("/agg/1")
    assert response.status_code == 200
    assert app.most_in_flight == 2


async def test_a_call_past_its_timeout_is_cancelled_and_reported(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str]
) -> None:
    app, url = upstream
    calls = (
        "        fast: {upstream: svc, path: /delay/10}\n"
        "        slow: {upstream: svc, path: /delay/5000, timeout: 0.1, required: false}\n"
    )
    gateway = make_gateway(fanout_routes(url, calls))
    async with client_for(gateway) as client:
        response = await client.get("/agg/1")
    assert response.status_code == 200
    assert response.json() == {"fast": {"waited": 10}, "slow": None}
    assert response.headers["gateway-partial"] == "slow; reason=timeout"
    async with asyncio.timeout(5):
        await app.someone_left.wait()  # the upstream saw the abandoned call's connection go
    assert app.abandoned == 1


async def test_the_deadline_cuts_off_everything_pending(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str]
) -> None:
    _, url = upstream
    calls = (
        "        fast: {upstream: svc, path: /delay/10, required: false}\n"
        "        slow: {upstream: svc, path: /delay/5000, required: false}\n"
        "        queued: {upstream: svc, path: /delay/10, required: false}\n"
    )
    gateway = make_gateway(fanout_routes(url, calls, max_concurrency=2, deadline=0.3))
    async with client_for(gateway) as client:
        started = time.perf_counter()
        response = await client.get("/agg/1")
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert response.json()["slow"] is None
    assert "slow; reason=timeout" in response.headers["gateway-partial"]
    assert elapsed < 2


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/status/500", 502, "The call 'main' failed: upstream answered 500."),
        ("/delay/5000", 504, "The call 'main' failed: no answer within 0.1s."),
        ("/status/504", 504, "The call 'main' failed: upstream timed out."),
        ("/text", 502, "The call 'main' failed: not JSON (content-type text/plain)."),
    ],
    ids=["error", "timeout", "upstream-504", "not-json"],
)
async def test_a_failed_required_call_fails_the_answer(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str], path: str, status: int, detail: str
) -> None:
    _, url = upstream
    calls = (
        f"        main: {{upstream: svc, path: {path}, timeout: 0.1}}\n"
        "        side: {upstream: svc, path: /delay/2000}\n"
    )
    gateway = make_gateway(fanout_routes(url, calls))
    async with client_for(gateway) as client:
        started = time.perf_counter()
        response = await client.get("/agg/1")
        elapsed = time.perf_counter() - started
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert (response.json()["detail"], response.json()["call"]) == (detail, "main")
    assert elapsed < 1.5  # the 2 s sibling was cancelled, not waited for


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/status/500", 502, "The call 'main' failed: upstream answered 500."),
        ("/delay/5000", 504, "The call 'main' failed: no answer within 0.1s."),
    ],
    ids=["error", "timeout"],
)
async def test_the_problem_names_the_failed_call_not_a_sibling_it_cut_off(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str], path: str, status: int, detail: str
) -> None:
    _, url = upstream
    calls = (
        "        side: {upstream: svc, path: /delay/2000}\n"  # listed first, cancelled when main fails
        f"        main: {{upstream: svc, path: {path}, timeout: 0.1}}\n"
    )
    gateway = make_gateway(fanout_routes(url, calls))
    async with client_for(gateway) as client:
        response = await client.get("/agg/1")
    assert (response.status_code, response.json()["detail"], response.json()["call"]) == (status, detail, "main")


async def test_a_required_call_waiting_for_a_failed_optional_one_is_named(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str]
) -> None:
    _, url = upstream
    calls = (
        "        first: {upstream: svc, path: /status/500, required: false}\n"
        '        then: {upstream: svc, path: "/user/{first.name}"}\n'
    )
    gateway = make_gateway(fanout_routes(url, calls))
    async with client_for(gateway) as client:
        response = await client.get("/agg/1")
    assert (response.status_code, response.json()["detail"]) == (502, "The call 'then' failed: first failed.")


async def test_invalid_json_is_that_calls_error(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str]
) -> None:
    _, url = upstream
    calls = (
        "        good: {upstream: svc, path: /user/1}\n"
        "        broken: {upstream: svc, path: /badjson, required: false}\n"
    )
    gateway = make_gateway(fanout_routes(url, calls))
    async with client_for(gateway) as client:
        response = await client.get("/agg/1")
    assert (response.status_code, response.json()) == (200, {"good": {"id": "1", "org": "o-1"}, "broken": None})
    assert response.headers["gateway-partial"] == "broken; reason=error"


async def test_answers_keep_their_bytes_and_must_be_strict_json(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str]
) -> None:
    _, url = upstream
    calls = (
        "        big: {upstream: svc, path: /bignum}\n"
        "        nan: {upstream: svc, path: /nan, required: false}\n"
        "        latin: {upstream: svc, path: /latin1, required: false}\n"
    )
    gateway = make_gateway(fanout_routes(url, calls))
    async with client_for(gateway) as client:
        response = await client.get("/agg/1")
    assert response.content == b'{"big":{ "id" : 123456789012345678901234567890 },"nan":null,"latin":null}'
    assert response.headers["gateway-partial"] == "nan; reason=error, latin; reason=error"


@pytest.mark.parametrize("path", ["/nan", "/latin1", "/badjson"])
async def test_answers_read_by_later_calls_are_held_to_the_same_rules(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str], path: str
) -> None:
    _, url = upstream
    calls = (
        f"        first: {{upstream: svc, path: {path}, required: false}}\n"
        '        then: {upstream: svc, path: "/user/{first.name}", required: false}\n'
    )
    gateway = make_gateway(fanout_routes(url, calls))
    async with client_for(gateway) as client:
        response = await client.get("/agg/1")
    assert response.json() == {"first": None, "then": None}
    assert response.headers["gateway-partial"] == "first; reason=error, then; reason=cancelled"


async def test_templates_use_path_params_query_and_earlier_answers(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str]
) -> None:
    app, url = upstream
    calls = (
        '        user: {upstream: svc, path: "/user/{id}"}\n'
        '        orders: {upstream: svc, path: "/echo-query?org={user.org}&since={query.since}&id={id}"}\n'
    )
    gateway = make_gateway(fanout_routes(url, calls))
    async with client_for(gateway) as client:
        response = await client.get("/agg/a b", params={"since": "2026-01-01&x=1"})
    assert response.json()["orders"] == {"query": "org=o-a%20b&since=2026-01-01%26x%3D1&id=a%20b"}
    assert app.paths[0] == "/user/a%20b"


async def test_merge_at_the_root(make_gateway: GatewayFactory, upstream: tuple[Controllable, str]) -> None:
    _, url = upstream
    calls = "        user: {upstream: svc, path: /user/7}\n        wait: {upstream: svc, path: /delay/1}\n"
    gateway = make_gateway(fanout_routes(url, calls, extra="      merge: root\n"))
    async with client_for(gateway) as client:
        response = await client.get("/agg/1")
    assert response.json() == {"id": "7", "org": "o-7", "waited": 1}


async def test_the_process_wide_bound_holds_under_200_concurrent_requests(
    make_gateway: GatewayFactory, upstream: tuple[Controllable, str]
) -> None:
    app, url = upstream
    gateway = make_gateway(fanout_routes(url, delays(3, 5)), fanout_max_in_flight=10)
    async with serve(gateway, lifespan="on") as served, httpx.AsyncClient(base_url=served, timeout=30) as client:
        responses = await asyncio.gather(*(client.get("/agg/1") for _ in range(200)))
    assert {response.status_code for response in responses} == {200}
    assert app.most_in_flight <= 10


async def test_gather_leaves_no_task_running() -> None:
    release = asyncio.Event()

    async def stuck(_: object) -> None:
        await release.wait()

    async def boom(_: object) -> None:
        raise RuntimeError("boom")

    before = asyncio.all_tasks()
    outcomes = await gather(
        [Call("stuck", stuck, required=False), Call("boom", boom), Call("later", stuck, after=("boom",))],
        max_concurrency=2,
        deadline=5,
    )
    assert {name: outcome.status for name, outcome in outcomes.items()} == {
        "stuck": "cancelled",
        "boom": "error",
        "later": "cancelled",
    }
    assert (outcomes["boom"].error, outcomes["stuck"].error) == ("boom", "boom failed")
    assert asyncio.all_tasks() == before


async def test_gather_deadline_leaves_no_task_running() -> None:
    never = asyncio.Event()

    async def stuck(_: object) -> None:
        await never.wait()

    before = asyncio.all_tasks()
    outcomes = await gather([Call("a", stuck), Call("b", stuck)], max_concurrency=1, deadline=0.05)
    assert [outcome.status for outcome in outcomes.values()] == ["timeout", "timeout"]
    assert asyncio.all_tasks() == before


async def test_gather_gives_back_every_slot_it_took() -> None:
    """Calls cut off running, or while waiting for a slot of either limit, leave the shared limit as they found it."""
    shared = asyncio.Semaphore(2)
    never = asyncio.Event()

    async def stuck(_: object) -> None:
        await never.wait()

    calls = [Call(name, stuck) for name in ("a", "b", "c", "d")]  # two run, one waits on `shared`, one on the route
    outcomes = await gather(calls, max_concurrency=3, deadline=0.05, shared_limit=shared)
    assert [outcome.status for outcome in outcomes.values()] == ["timeout"] * 4
    free = 0
    while not shared.locked():
        await shared.acquire()
        free += 1
    assert free == 2


async def test_gather_starts_bounded_calls_in_order_and_a_first_call_may_wait_for_a_later_one() -> None:
    started: list[str] = []

    def call(name: str, after: tuple[str, ...] = ()) -> Call[str]:
        async def run(inputs: Mapping[str, Any]) -> str:
            started.append(name)
            await asyncio.sleep(0)
            return name + "".join(inputs.values())

        return Call(name, run, after=after)

    await gather([call("a"), call("b"), call("c")], max_concurrency=1, deadline=5)
    assert started == ["a", "b", "c"]
    started.clear()
    outcomes = await gather([call("first", after=("second",)), call("second")], max_concurrency=1, deadline=5)
    assert started == ["second", "first"]
    assert outcomes["first"] == Outcome("ok", "firstsecond")


async def test_gather_refuses_unknown_dependencies() -> None:
    async def noop(_: object) -> None:
        return None

    with pytest.raises(ValueError, match="waits for unknown calls"):
        await gather([Call("a", noop, after=("b",))], max_concurrency=1, deadline=1)


async def test_calls_carry_the_request_id_the_flags_and_the_trace_context(make_gateway: GatewayFactory) -> None:
    routes = """
upstreams:
  echo: {url: "http://echo.internal"}
flags:
  layout: {type: str, default: classic}
routes:
  - path: /agg
    flags: [layout]
    fanout:
      calls:
        seen: {upstream: echo, path: /x, forward_headers: [X-Tenant]}
        plain: {upstream: echo, path: /y}
"""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    app = make_gateway(routes, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.get(
            "/agg", headers={"X-Request-ID": "r-1", "traceparent": traceparent, "X-Tenant": "t", "Cookie": "c=1"}
        )
    seen = dict(response.json()["seen"]["headers"])
    assert (seen["x-request-id"], seen["x-feature-flags"], seen["traceparent"]) == (
        "r-1",
        "layout=classic",
        traceparent,
    )
    assert seen["x-tenant"] == "t"
    assert "cookie" not in seen  # only what the route names travels
    plain = dict(response.json()["plain"]["headers"])  # the same upstream, without the call's own forward set
    assert "x-tenant" not in plain
    assert (plain["x-request-id"], plain["traceparent"]) == ("r-1", traceparent)
