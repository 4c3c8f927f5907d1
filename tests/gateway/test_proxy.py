"""The proxy through the whole app, with upstreams called in-process (httpx's ASGI transport)."""

from urllib.parse import unquote

import pytest

from asgi_gateway.gateway.routing import escapes_its_route
from tests.gateway.conftest import GatewayFactory, client_for
from tests.upstreams import echo, status

ROUTES = """
upstreams:
  echo: {url: "http://echo.internal:8000/base"}
  status: {url: "http://status.internal"}
routes:
  - path: /api/users/{id}
    methods: [GET, PUT]
    upstream: echo
    rewrite: /users/{id}
    headers:
      request: {set: {X-Env: test}, remove: [X-Secret], add: {X-Added: "1"}}
      response: {remove: [X-Upstream], set: {X-Gateway: "yes"}}
  - path: /api/users/{id}
    methods: [DELETE]
    upstream: echo
  - path: /files/{rest:path}
    upstream: echo
    rewrite: /storage/{rest}
  - path: /raw/{rest:path}
    upstream: echo
  - path: /status/{code:int}
    upstream: status
  - path: /only-api
    host: api.example.com
    upstream: echo
"""


def header_values(seen: dict, name: str) -> list[str]:
    return [value for key, value in seen["headers"] if key == name]


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_methods_reach_the_upstream(make_gateway: GatewayFactory, method: str) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.request(method, "/api/users/42")
    assert response.status_code == 200
    assert response.json()["method"] == method


@pytest.mark.anyio
async def test_rewrite_prefixes_the_upstream_base_path_and_keeps_the_query_byte_for_byte(
    make_gateway: GatewayFactory,
) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.get("/api/users/a%20b?z=1&a=%2F&a=2&flag")
    seen = response.json()
    assert (seen["raw_path"], seen["query"]) == ("/base/users/a%20b", "z=1&a=%2F&a=2&flag")


@pytest.mark.anyio
async def test_catch_all_keeps_its_slashes(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.get("/files/a/b/c.txt")
    assert response.json()["raw_path"] == "/base/storage/a/b/c.txt"


@pytest.mark.anyio
async def test_without_rewrite_the_raw_path_is_forwarded(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.get("/raw/x%41y/%7Ez")
    assert response.json()["raw_path"] == "/base/raw/x%41y/%7Ez"


@pytest.mark.anyio
async def test_request_headers_policy(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    headers = [
        ("X-Repeat", "1"),
        ("X-Repeat", "2"),
        ("Connection", "keep-alive, X-Drop-Me"),
        ("X-Drop-Me", "gone"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("X-Secret", "s3cret"),
        ("X-Env", "client-value"),
        ("X-Forwarded-For", "198.51.100.1"),
        ("Forwarded", "for=198.51.100.1"),
    ]
    async with client_for(app) as client:
        response = await client.get("/api/users/1", headers=headers)
    seen = response.json()
    names = [name for name, _ in seen["headers"]]
    for gone in ("connection", "x-drop-me", "keep-alive", "te", "upgrade", "x-secret"):
        assert gone not in names
    assert header_values(seen, "x-repeat") == ["1", "2"]
    assert header_values(seen, "x-env") == ["test"]
    assert header_values(seen, "x-added") == ["1"]
    assert header_values(seen, "host") == ["echo.internal:8000"]
    assert header_values(seen, "x-forwarded-for") == ["198.51.100.1, 203.0.113.7"]
    assert header_values(seen, "x-forwarded-proto") == ["http"]
    assert header_values(seen, "x-forwarded-host") == ["gw.test"]
    assert header_values(seen, "forwarded") == ['for=198.51.100.1, for=203.0.113.7;proto=http;host="gw.test"']


@pytest.mark.anyio
async def test_response_headers_policy(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.get("/api/users/1")
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert "x-hop" not in response.headers  # named by the upstream's Connection header
    assert "keep-alive" not in response.headers
    assert "x-upstream" not in response.headers
    assert response.headers["x-gateway"] == "yes"
    assert len(response.headers.get_list("date")) == 1


@pytest.mark.anyio
async def test_head_has_headers_and_no_body(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.head("/api/users/1")
    assert (response.status_code, response.content, response.headers["content-type"]) == (200, b"", "application/json")


@pytest.mark.anyio
async def test_request_body_is_forwarded_whole(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.put("/api/users/1", content=b"x" * 1000)
    assert response.json()["body_size"] == 1000
    assert header_values(response.json(), "content-length") == ["1000"]


@pytest.mark.anyio
@pytest.mark.parametrize("code", [500, 503, 404])
async def test_upstream_errors_pass_through_unchanged(make_gateway: GatewayFactory, code: int) -> None:
    app = make_gateway(ROUTES, upstreams={"status": status})
    async with client_for(app) as client:
        response = await client.get(f"/status/{code}")
    assert (response.status_code, response.text, response.headers["x-origin"]) == (code, f"upstream says {code}", "1")


@pytest.mark.anyio
async def test_no_route_is_a_404_problem(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "No route for GET /nowhere.",
    }


@pytest.mark.anyio
async def test_wrong_method_is_a_405_problem_listing_every_method_of_the_path(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.post("/api/users/1")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, PUT"
    assert response.json()["title"] == "Method Not Allowed"


ORDERED = """
upstreams:
  a: {url: "http://a.internal/a"}
  b: {url: "http://b.internal/b"}
routes:
  - {path: "/items/{id}", methods: [GET], upstream: a}
  - {path: /items/new, methods: [GET, POST], upstream: b}
  - {path: /static, methods: [GET], upstream: a}
  - {path: /static, methods: [POST], upstream: b}
  - {path: /static, host: other.example.com, methods: [PUT], upstream: a}
  - {path: /later, host: api.example.com, methods: [GET], upstream: a}
  - {path: /later, methods: [GET], upstream: b}
"""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "host", "answer"),
    [
        ("GET", "/items/new", None, "/a/items/new"),  # the parameter route comes first
        ("POST", "/items/new", None, "/b/items/new"),  # it takes no POST: on to the next
        ("GET", "/static", None, "/a/static"),
        ("POST", "/static", None, "/b/static"),  # the first /static takes no POST
        ("PUT", "/static", "other.example.com", "/a/static"),
        ("GET", "/later", "api.example.com", "/a/later"),  # an earlier host route wins on its host
        ("GET", "/later", None, "/b/later"),
    ],
)
async def test_the_first_route_that_matches_path_method_and_host_answers(
    make_gateway: GatewayFactory, method: str, path: str, host: str | None, answer: str
) -> None:
    """Paths without parameters are looked up before the match loop; the loop's order must still decide."""
    app = make_gateway(ORDERED, upstreams={"a": echo, "b": echo})
    async with client_for(app) as client:
        response = await client.request(method, path, headers={"Host": host} if host else None)
    assert response.status_code == 200
    assert response.json()["path"] == answer


@pytest.mark.anyio
async def test_a_method_no_route_of_an_exact_path_takes_is_a_405_listing_them_all(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ORDERED, upstreams={"a": echo, "b": echo})
    async with client_for(app) as client:
        response = await client.delete("/static")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"


@pytest.mark.anyio
async def test_host_routes_match_only_their_host(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        elsewhere = await client.get("/only-api")
        matched = await client.get("/only-api", headers={"Host": "API.example.com"})
    assert (elsewhere.status_code, matched.status_code) == (404, 200)


@pytest.mark.anyio
async def test_declared_body_over_the_limit_is_413_before_reaching_the_upstream(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo}, max_body_bytes=100)
    async with client_for(app) as client:
        response = await client.put("/api/users/1", content=b"x" * 101)
    assert response.status_code == 413
    assert response.json()["detail"] == "The request body exceeds 100 bytes."


@pytest.mark.anyio
async def test_streamed_body_over_the_limit_is_413(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo}, max_body_bytes=1000)

    async def chunks():
        for _ in range(5):
            yield b"x" * 300

    async with client_for(app) as client:
        response = await client.put("/api/users/1", content=chunks())
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [
        (b"/raw/a/../../admin", True),
        (b"/raw/a/%2e%2e/admin", True),
        (b"/raw/a%2F..%2Fadmin", True),
        (b"/raw/a%2fb", True),
        (b"/raw/a%5cb", True),
        (b"/raw/a\\b", True),
        (b"/raw/./x", True),
        (b"/raw/..", True),
        (b"/raw/a..b/.well-known/x.json", False),
        (b"/raw/a%20b/%41", False),
        (b"/raw/%252e%252e/x", False),
    ],
    ids=[
        "dot-dot",
        "encoded-dots",
        "encoded-slash",
        "encoded-slash-lower",
        "encoded-backslash",
        "backslash",
        "dot",
        "trailing-dot-dot",
        "dots-inside-names",
        "other-escapes",
        "double-encoded-dots-stay-literal",
    ],
)
def test_paths_that_could_escape_their_route(raw_path: bytes, expected: bool) -> None:
    scope = {"type": "http", "raw_path": raw_path, "path": unquote(raw_path.decode())}
    assert escapes_its_route(scope) is expected


@pytest.mark.anyio
async def test_escaping_path_is_a_400_problem_and_never_reaches_the_upstream(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        response = await client.get("/raw/a%2F..%2F..%2Fadmin")
    assert response.status_code == 400
    assert response.json()["detail"] == "The path holds dot-segments or encoded slashes."


@pytest.mark.anyio
async def test_health_and_ready(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo})
    async with client_for(app) as client:
        health = await client.get("/_gateway/health")
        ready = await client.get("/_gateway/ready")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()["status"], ready.json()["routes"]) == (200, "ready", 6)
    assert (ready.json()["redis"], ready.json()["last_reload_error"]) == ("off", None)
    assert len(ready.json()["config_version"]) == 12


@pytest.mark.anyio
async def test_ready_reports_a_configured_redis(make_gateway: GatewayFactory, redis_url: str) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo}, redis_url=redis_url)
    async with client_for(app) as client:
        ready = await client.get("/_gateway/ready")
    assert (ready.status_code, ready.json()["redis"]) == (200, "ok")


@pytest.mark.anyio
async def test_ready_is_503_when_redis_is_down(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo}, redis_url="redis://127.0.0.1:1/0")
    async with client_for(app) as client:
        ready = await client.get("/_gateway/ready")
    assert (ready.status_code, ready.json()["status"], ready.json()["redis"]) == (503, "unavailable", "down")


@pytest.mark.anyio
async def test_admin_prefix_is_configurable(make_gateway: GatewayFactory) -> None:
    app = make_gateway(ROUTES, upstreams={"echo": echo}, admin_prefix="/-/gw")
    async with client_for(app) as client:
        moved = await client.get("/-/gw/health")
        old = await client.get("/_gateway/health")
    assert (moved.status_code, old.status_code) == (200, 404)
