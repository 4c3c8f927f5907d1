"""`make run`'s demo, started the same way on free ports, answers the README's curl lines."""

import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import gateway_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.anyio
@pytest.mark.integration
async def test_demo_answers_through_the_gateway() -> None:
    ports = {"USERS_PORT": "0", "ORDERS_PORT": "0"}
    async with (
        gateway_process(sys.executable, str(ROOT / "examples" / "demo.py"), env=ports) as (_, url),
        httpx.AsyncClient(base_url=url) as client,
    ):
        user = await client.get("/api/users/1")
        cached = await client.get("/api/users/1")
        revalidated = await client.get("/api/users/1", headers={"If-None-Match": user.headers["etag"]})
        orders = await client.get("/api/orders", params={"user": "1"})
        dashboard = await client.get("/api/dashboard/1")
        missing = await client.get("/api/nothing")
    assert (user.status_code, user.json()["name"], user.headers["x-served-by"]) == (200, "Ada Lovelace", "gateway")
    assert cached.headers["cache-status"].startswith("gateway; hit")
    assert revalidated.status_code == 304
    assert [order["id"] for order in orders.json()] == ["o-1", "o-2"]
    assert dashboard.json() == {"user": user.json(), "orders": orders.json()}
    assert (missing.status_code, missing.headers["content-type"]) == (404, "application/problem+json")
