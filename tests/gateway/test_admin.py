"""The admin API: only with a token, only for the right bearer, and 404 for anything it does not know."""

import logging

import pytest

from tests.gateway.conftest import GatewayFactory, client_for
from tests.gateway.test_flags import ROUTES
from tests.upstreams import echo

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def upstreams() -> dict[str, object]:
    return {"users": echo, "users-v2": echo}


async def test_no_token_configured_means_no_admin_api(make_gateway: GatewayFactory, upstreams: dict) -> None:
    app = make_gateway(ROUTES, upstreams=upstreams)
    async with client_for(app) as client:
        response = await client.get("/_gateway/admin/flags", headers=AUTH)
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ({}, "/_gateway/admin/flags"),
        ({"Authorization": "Bearer wrong"}, "/_gateway/admin/flags"),
        ({"Authorization": TOKEN}, "/_gateway/admin/routes"),
        ({}, "/_gateway/admin/anything"),
    ],
    ids=["missing", "wrong", "not-bearer", "unknown-path"],
)
async def test_calls_without_the_token_are_401_and_logged(
    make_gateway: GatewayFactory, upstreams: dict, caplog: pytest.LogCaptureFixture, headers: dict, path: str
) -> None:
    app = make_gateway(ROUTES, upstreams=upstreams, admin_token=TOKEN)
    caplog.set_level(logging.WARNING, logger="gateway.admin")
    async with client_for(app) as client:
        response = await client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert f"admin call refused: GET {path}" in caplog.text


async def test_unknown_admin_paths_are_404(make_gateway: GatewayFactory, upstreams: dict) -> None:
    app = make_gateway(ROUTES, upstreams=upstreams, admin_token=TOKEN)
    async with client_for(app) as client:
        response = await client.get("/_gateway/admin/secrets", headers=AUTH)
    assert (response.status_code, response.headers["content-type"]) == (404, "application/problem+json")


async def test_list_flags_and_routes(make_gateway: GatewayFactory, upstreams: dict) -> None:
    app = make_gateway(ROUTES, upstreams=upstreams, admin_token=TOKEN)
    async with client_for(app) as client:
        flags = await client.get("/_gateway/admin/flags", headers=AUTH)
        routes = await client.get("/_gateway/admin/routes", headers=AUTH)
    assert sorted(flags.json()["flags"]) == ["new-profile", "pricing"]
    assert flags.json()["flags"]["new-profile"]["rules"][0] == {"users": ["u-1"], "value": True}
    assert [route["path"] for route in routes.json()["routes"]] == ["/api/users/{id}", "/plain"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"value": False, "reason": "DEFAULT"}),
        ("?user=u-1", {"value": True, "reason": "TARGETING_MATCH"}),
        ("?org=acme", {"value": True, "reason": "TARGETING_MATCH"}),
    ],
)
async def test_evaluate_a_flag_for_a_context(
    make_gateway: GatewayFactory, upstreams: dict, query: str, expected: dict
) -> None:
    app = make_gateway(ROUTES, upstreams=upstreams, admin_token=TOKEN)
    async with client_for(app) as client:
        response = await client.get(f"/_gateway/admin/flags/new-profile/evaluate{query}", headers=AUTH)
    assert {key: response.json()[key] for key in expected} == expected
    assert response.json()["key"] == "new-profile"


async def test_evaluating_an_unknown_flag_is_404(make_gateway: GatewayFactory, upstreams: dict) -> None:
    app = make_gateway(ROUTES, upstreams=upstreams, admin_token=TOKEN)
    async with client_for(app) as client:
        response = await client.get("/_gateway/admin/flags/nope/evaluate", headers=AUTH)
    assert response.status_code == 404
