"""Hot reload: a valid route file is swapped in atomically, an invalid one changes nothing and is reported."""

import asyncio
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import GatewayFactory, client_for
from tests.servers import serve
from tests.upstreams import echo

pytestmark = pytest.mark.anyio

ONE_ROUTE = """
upstreams:
  a: {{url: "{a}"}}
  b: {{url: "{b}"}}
routes:
  - {{path: /one, upstream: a}}
"""
TWO_ROUTES = ONE_ROUTE + "  - {{path: /two, upstream: b}}\n"


IN_PROCESS = ONE_ROUTE.format(a="http://a.internal", b="http://b.internal")
BOTH = {"a": echo, "b": echo}  # upstreams in-process; make_gateway writes the route file at tmp_path/routes.yaml


async def test_reload_swaps_routes_and_keeps_unchanged_pools(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    app = make_gateway(IN_PROCESS, upstreams=BOTH, watch_routes=False)
    async with client_for(app) as client:
        before = (await client.get("/two")).status_code
        old_version, pool_a, pool_b = (
            app.generation.version,
            app.generation.upstreams["a"],
            app.generation.upstreams["b"],
        )
        path.write_text(TWO_ROUTES.format(a="http://a.internal", b="http://b-moved.internal"))
        result = await app.reload()
        after = await client.get("/two")
    assert (before, after.status_code) == (404, 200)
    assert [value for name, value in after.json()["headers"] if name == "host"] == ["b-moved.internal"]
    assert result == {"ok": True, "version": app.generation.version, "previous": old_version}
    assert app.generation.upstreams["a"] is pool_a  # unchanged spec: the same pool
    assert app.generation.upstreams["b"] is not pool_b


async def test_an_invalid_file_is_reported_and_the_old_routes_keep_answering(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    app = make_gateway(IN_PROCESS, upstreams=BOTH, watch_routes=False)
    async with client_for(app) as client:
        version = app.generation.version
        path.write_text(IN_PROCESS.replace("upstream: a", "upstream: c"))
        result = await app.reload()
        still = await client.get("/one")
        ready = await client.get("/_gateway/ready")
    assert result["ok"] is False
    assert result["errors"] == [f"{path}:6: routes[0].upstream: unknown upstream 'c' (known: a, b)"]
    assert (still.status_code, app.generation.version) == (200, version)
    assert ready.json()["config_version"] == version
    assert ready.json()["last_reload_error"] == f"{path}:6: routes[0].upstream: unknown upstream 'c' (known: a, b)"


async def test_sighup_forces_a_reload(make_gateway: GatewayFactory) -> None:
    app = make_gateway(IN_PROCESS, upstreams=BOTH)
    results: list[Mapping[str, Any]] = []
    reloaded = asyncio.Event()

    def record(result: Mapping[str, Any]) -> None:
        results.append(result)
        reloaded.set()

    app.reload_listeners.append(record)
    async with client_for(app):
        os.kill(os.getpid(), signal.SIGHUP)  # the file did not change: only the signal can cause a reload
        async with asyncio.timeout(5):
            await reloaded.wait()
    assert results == [{"ok": True, "version": app.generation.version, "previous": app.generation.version}]


async def test_admin_reload(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    app = make_gateway(
        IN_PROCESS,
        upstreams=BOTH,
        watch_routes=False,
        admin_token="t",
    )
    auth = {"Authorization": "Bearer t"}
    async with client_for(app) as client:
        path.write_text(TWO_ROUTES.format(a="http://a.internal", b="http://b.internal"))
        reloaded = await client.post("/_gateway/admin/reload", headers=auth)
        path.write_text("routes: [")
        rejected = await client.post("/_gateway/admin/reload", headers=auth)
        two = await client.get("/two")
    assert (reloaded.status_code, reloaded.json()["ok"]) == (200, True)
    assert (rejected.status_code, rejected.json()["ok"]) == (422, False)
    assert two.status_code == 200


@pytest.mark.integration
async def test_editing_the_file_adds_a_route_within_two_seconds_under_load(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    async with serve(echo) as a, serve(echo) as b:
        app = make_gateway(ONE_ROUTE.format(a=a, b=b))  # the upstreams on loopback
        async with serve(app, lifespan="on") as url, httpx.AsyncClient(base_url=url) as client:
            failures: list[int] = []
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    response = await client.get("/one")
                    if response.status_code != 200:
                        failures.append(response.status_code)

            workers = [asyncio.create_task(load()) for _ in range(8)]
            path.write_text(TWO_ROUTES.format(a=a, b=b))
            edited = asyncio.get_running_loop().time()
            async with asyncio.timeout(2):
                while (await client.get("/two")).status_code != 200:
                    pass
            took = asyncio.get_running_loop().time() - edited
            stop.set()
            await asyncio.gather(*workers)
    assert failures == []
    assert took < 2
