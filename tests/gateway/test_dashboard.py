"""The dashboard at /_gateway/ui: behind the admin token, and showing what the gateway knows, in table rows."""

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest
from starlette.types import Receive, Scope, Send

from asgi_gateway.gateway.dashboard import RATE_WINDOW_SECONDS, RateWindow
from tests.gateway.conftest import TRUSTED_CLIENT, GatewayFactory, client_for
from tests.upstreams import echo

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = """
upstreams:
  users: {url: "http://users.internal"}
  users-v2: {url: "http://users-v2.internal"}
  broken: {url: "http://broken.internal:8081"}
flags:
  new-profile:
    type: bool
    default: false
    rules: [{users: [u-1], value: true}]
  pricing:
    type: str
    default_variant: a
    variants: {a: cheap, b: dear}
    rules: [{users: [u-2], variant: b}]
routes:
  - path: /api/users/{id}
    name: user
    methods: [GET, HEAD]
    upstream: users
    flags: [pricing]
    when: [{flag: new-profile, equals: true, upstream: users-v2}]
    cache: {ttl: 60}
  - path: /broken
    name: "<b>broken</b>"
    upstream: broken
  - path: /api/both/{id}
    fanout:
      calls:
        user: {upstream: users, path: "/users/{id}"}
        other: {upstream: users-v2, path: "/other", required: false}
"""


async def cacheable(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"max-age=60")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


async def failing(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": []})
    await send({"type": "http.response.body", "body": b""})


UPSTREAMS = {"users": cacheable, "users-v2": echo, "broken": failing}


class Tables(HTMLParser):
    """The text of every table cell, row by row, by the id of the section holding the table."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: dict[str, list[list[str]]] = {}
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self._section = dict(attrs)["id"] or ""
            self.sections[self._section] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("li", "br") and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.sections[self._section].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def rows_by_first_cell(html: str, section: str) -> dict[str, list[str]]:
    return {row[0]: row for row in Tables(html).sections[section]}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_without_an_admin_token_there_is_no_dashboard(make_gateway: GatewayFactory) -> None:
    async with client_for(make_gateway(ROUTES, upstreams=UPSTREAMS)) as client:
        response = await client.get("/_gateway/ui", headers=AUTH)
    assert response.status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        basic("admin", "wrong"),
        basic("admin", TOKEN + "x"),
        {"Authorization": "Basic not base64!"},
        {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()},  # no colon: no password
    ],
    ids=["missing", "wrong-bearer", "wrong-basic", "longer-basic", "malformed-basic", "basic-without-colon"],
)
async def test_the_dashboard_refuses_without_the_token_and_asks_the_browser(
    make_gateway: GatewayFactory, headers: dict[str, str]
) -> None:
    async with client_for(make_gateway(ROUTES, upstreams=UPSTREAMS, admin_token=TOKEN)) as client:
        response = await client.get("/_gateway/ui", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="gateway", charset="UTF-8"'
    assert "<table" not in response.text


async def test_basic_credentials_open_only_the_dashboard(make_gateway: GatewayFactory) -> None:
    async with client_for(make_gateway(ROUTES, upstreams=UPSTREAMS, admin_token=TOKEN)) as client:
        page = await client.get("/_gateway/ui", headers=basic("anyone", TOKEN))
        bearer = await client.get("/_gateway/ui", headers=AUTH)
        api = await client.get("/_gateway/admin/routes", headers=basic("anyone", TOKEN))
    assert (page.status_code, bearer.status_code, api.status_code) == (200, 200, 401)
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text


async def test_routes_show_their_target_traffic_errors_and_cache_hits(make_gateway: GatewayFactory) -> None:
    async with client_for(make_gateway(ROUTES, upstreams=UPSTREAMS, admin_token=TOKEN)) as client:
        for _ in range(3):
            assert (await client.get("/api/users/1")).status_code == 200
        assert (await client.get("/broken")).status_code == 503
        page = (await client.get("/_gateway/ui", headers=AUTH)).text
    rows = rows_by_first_cell(page, "routes")
    assert rows["Route"][4:6] == ["Requests", "Req/s (since start)"]
    user = rows["user"]
    assert user[:5] == ["user", "GET HEAD", "*", "users if new-profile = true: users-v2", "3"]
    assert (user[6], user[7]) == ("0.0%", "67% of 3")  # a miss, then two hits
    assert float(user[5]) > 0
    broken = rows["<b>broken</b>"]  # a name is text, never markup
    assert (broken[1], broken[4], broken[6], broken[7]) == ("any", "1", "100.0%", "no cache")
    assert rows["/api/both/{id}"][3:5] == ["fan-out: users, users-v2", "0"]
    assert "<b>broken</b>" not in page


async def test_upstreams_show_their_target_and_call_outcomes(make_gateway: GatewayFactory) -> None:
    async with client_for(make_gateway(ROUTES, upstreams=UPSTREAMS, admin_token=TOKEN)) as client:
        await client.get("/api/users/1")
        await client.get("/broken")
        await client.get("/broken")
        page = (await client.get("/_gateway/ui", headers=AUTH)).text
    rows = rows_by_first_cell(page, "upstreams")
    assert rows["users"] == ["users", "unchecked http://users.internal", "1", "0.0%", "2xx 1"]
    assert rows["broken"] == ["broken", "unchecked http://broken.internal:8081", "2", "100.0%", "5xx 2"]
    assert rows["users-v2"][2:] == ["0", "-", "-"]


async def test_flags_show_their_variants_and_evaluations(make_gateway: GatewayFactory) -> None:
    async with client_for(make_gateway(ROUTES, upstreams=UPSTREAMS, admin_token=TOKEN, **TRUSTED_CLIENT)) as client:
        await client.get("/api/users/1", headers={"X-User-Id": "u-2"})
        await client.get("/api/users/2", headers={"X-User-Id": "u-1"})
        page = (await client.get("/_gateway/ui", headers=AUTH)).text
    rows = rows_by_first_cell(page, "flags")
    assert rows["pricing"] == ["pricing", "str", "on", 'default = a a = "cheap" b = "dear"', "a 1, b 1", ""]
    assert rows["new-profile"] == ["new-profile", "bool", "on", "default = false", "false 1, true 1", ""]


async def test_the_last_reload_is_shown_applied_or_rejected(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = make_gateway(ROUTES, upstreams=UPSTREAMS, admin_token=TOKEN)
    first_version = gateway.generation.version
    async with client_for(gateway) as client:
        before = rows_by_first_cell((await client.get("/_gateway/ui", headers=AUTH)).text, "config")
        (tmp_path / "routes.yaml").write_text(ROUTES.replace("/broken", "/fixed"))
        assert (await client.post("/_gateway/admin/reload", headers=AUTH)).status_code == 200
        applied = rows_by_first_cell((await client.get("/_gateway/ui", headers=AUTH)).text, "config")
        (tmp_path / "routes.yaml").write_text(ROUTES.replace("upstream: broken", "upstream: nowhere"))
        assert (await client.post("/_gateway/admin/reload", headers=AUTH)).status_code == 422
        rejected = rows_by_first_cell((await client.get("/_gateway/ui", headers=AUTH)).text, "config")
    second_version = gateway.generation.version
    assert before["Config version"][1] == first_version
    assert before["Last reload"][1] == "none since start"
    assert applied["Config version"][1] == second_version != first_version
    assert applied["Last reload"][1].startswith("applied at ")
    assert applied["Last reload"][1].endswith(f"UTC: {first_version} → {second_version}")
    assert rejected["Last reload"][1].startswith("rejected at ")
    assert f"still serving {second_version}" in rejected["Last reload"][1]
    assert "routes[1].upstream: unknown upstream 'nowhere'" in rejected["Last reload"][1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rates_are_measured_since_start_then_over_the_last_minute() -> None:
    clock = Clock()
    window = RateWindow(clock)
    clock.now += 10
    assert window.rates({"a": 50.0}) == ({"a": 5.0}, "since start")
    clock.now += 20
    assert window.rates({"a": 90.0, "b": 40.0}) == ({"a": 2.0, "b": 2.0}, "last 20 s")
    clock.now += RATE_WINDOW_SECONDS
    # measured from the latest view at least a minute old: the one 60 s ago, not the first
    assert window.rates({"a": 150.0, "b": 40.0}) == ({"a": 1.0, "b": 0.0}, "last 60 s")
    assert window.rates({"a": 210.0}) == ({"a": 2.0}, "last 60 s")  # again at the same instant


def test_a_view_at_the_instant_of_start_has_no_rate_yet() -> None:
    assert RateWindow(Clock()).rates({"a": 3.0}) == ({"a": 0.0}, "since start")
