"""Route files: every kind of mistake is reported as `file:line: field: message`, all at once."""

from pathlib import Path

import pytest

from asgi_gateway.config.errors import ConfigError
from asgi_gateway.config.loader import field_path, load_route_file
from asgi_gateway.config.routes import RouteFile

VALID = """\
upstreams:
  users:  {url: "http://127.0.0.1:9001", timeout: {connect: 1.0, read: 5.0}}
  orders: {url: "http://127.0.0.1:9002/v1/", pool_size: 10}
routes:
  - path: /api/users/{id}
    methods: [get, HEAD]
    upstream: users
    rewrite: /users/{id}
  - path: /api/orders/{rest:path}
    upstream: orders
    host: API.example.com
    headers:
      request: {set: {X-Env: prod}, remove: [Cookie]}
"""


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> RouteFile:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return load_route_file(path, environ=environ or {})


def issues_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    return [str(issue).removeprefix(str(tmp_path / "routes.yaml")) for issue in caught.value.issues]


def test_valid_file_loads_with_defaults_filled_in(tmp_path: Path) -> None:
    routes = load(tmp_path, VALID)
    users, orders = routes.routes
    assert users.methods == ("GET", "HEAD")
    assert orders.methods == ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    assert orders.host == "api.example.com"
    assert routes.upstreams["orders"].url == "http://127.0.0.1:9002/v1"
    assert routes.upstreams["users"].timeout.read == 5.0
    assert routes.upstreams["users"].timeout.pool is None  # falls back to settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            VALID.replace("upstream: users\n", "upstream: userz\n"),
            [":7: routes[0].upstream: unknown upstream 'userz' (known: orders, users)"],
        ),
        (
            VALID.replace("    rewrite: /users/{id}", "    rewrite: /users/{id}\n    colour: blue"),
            [":9: routes[0].colour: unknown key"],
        ),
        (VALID.replace("read: 5.0", "read: -5"), [":2: upstreams.users.timeout.read: Input should be greater than 0"]),
        (
            VALID.replace('"http://127.0.0.1:9001"', '"ftp://x"'),
            [":2: upstreams.users.url: must be an absolute http:// or https:// URL, got 'ftp://x'"],
        ),
        (
            VALID.replace("methods: [get, HEAD]", "methods: [GET, FETCH]"),
            [":6: routes[0].methods[1]: Input should be 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE' or 'OPTIONS'"],
        ),
        (
            VALID.replace("rewrite: /users/{id}", "rewrite: /users/{uid}"),
            [":8: routes[0].rewrite: uses {uid}, which the path '/api/users/{id}' does not define"],
        ),
        (
            VALID.replace("path: /api/users/{id}", "path: api/users"),
            [":5: routes[0].path: must start with '/', got 'api/users'"],
        ),
        (
            VALID.replace("{rest:path}", "{rest:path}/more"),
            [":9: routes[1].path: a {name:path} catch-all may only end the path"],
        ),
        (
            VALID.replace("{rest:path}", "{rest:slug}"),
            [":9: routes[1].path: unknown convertor 'slug' for {rest} (known: float, int, path, str, uuid)"],
        ),
        (
            VALID.replace("X-Env: prod", '"Bad Header": x'),
            [":13: routes[1].headers.request.set: 'Bad Header' is not a valid header name"],
        ),
        (
            VALID.replace("  orders: {url", "  users: {url"),
            [":3: duplicate key 'users'", ":10: routes[1].upstream: unknown upstream 'orders' (known: users)"],
        ),
        (VALID.replace("    upstream: users\n", ""), [":5: routes[0]: needs an upstream (or a fanout)"]),
        (
            VALID + "  - path: /api/users/{user_id}\n    methods: [GET]\n    upstream: users\n",
            [":14: routes[2]: conflicts with routes[0] (/api/users/{id}) for GET"],
        ),
        ("routes: []\n", [":1: routes: must list at least one route"]),
        ("- just a list\n", [":1: must be a mapping with 'upstreams' and 'routes'"]),
        ("routes: [\n", [":2: invalid YAML: expected the node content, but found '<stream end>'"]),
        (
            VALID.replace("{connect: 1.0, read: 5.0}", "{connect: 0}").replace("pool_size: 10", "pool_size: 0"),
            [
                ":2: upstreams.users.timeout.connect: Input should be greater than 0",
                ":3: upstreams.orders.pool_size: Input should be greater than or equal to 1",
            ],
        ),
    ],
    ids=[
        "unknown-upstream",
        "unknown-key",
        "negative-timeout",
        "bad-url",
        "bad-method",
        "rewrite-unknown-param",
        "relative-path",
        "catch-all-not-last",
        "unknown-convertor",
        "bad-header-name",
        "duplicate-yaml-key",
        "missing-upstream",
        "conflicting-routes",
        "no-routes",
        "not-a-mapping",
        "yaml-syntax",
        "every-issue-at-once",
    ],
)
def test_mistakes_name_file_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert issues_of(tmp_path, text) == expected


def test_same_path_with_other_methods_is_not_a_conflict(tmp_path: Path) -> None:
    text = VALID + "  - path: /api/users/{user_id}\n    methods: [DELETE]\n    upstream: orders\n"
    assert len(load(tmp_path, text).routes) == 3


def test_environment_references_are_substituted(tmp_path: Path) -> None:
    text = VALID.replace('"http://127.0.0.1:9001"', '"http://${USERS_HOST}:${USERS_PORT:-9001}"')
    routes = load(tmp_path, text, environ={"USERS_HOST": "users.internal"})
    assert routes.upstreams["users"].url == "http://users.internal:9001"


def test_missing_environment_reference_is_an_issue_at_its_line(tmp_path: Path) -> None:
    text = VALID.replace('"http://127.0.0.1:9001"', '"http://${USERS_HOST}"')
    assert issues_of(tmp_path, text)[0] == ":2: environment variable USERS_HOST is not set"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_route_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("routes", 2, "cache", "ttl"), "routes[2].cache.ttl"),
        (("upstreams", "users", "url"), "upstreams.users.url"),
        ((), ""),
    ],
)
def test_field_path(loc: tuple[int | str, ...], expected: str) -> None:
    assert field_path(loc) == expected


FANOUT = """\
upstreams:
  users: {url: "http://127.0.0.1:9001"}
routes:
  - path: /api/dashboard/{id}
    fanout:
      max_concurrency: 4
      deadline: 2.0
      calls:
        user: {upstream: users, path: "/users/{id}"}
        orders: {upstream: users, path: "/orders?user={user.id}&q={query.q}", required: false}
"""


def test_fanout_route_loads_and_answers_reads_only(tmp_path: Path) -> None:
    [route] = load(tmp_path, FANOUT).routes
    assert route.methods == ("GET",)
    assert route.fanout is not None
    assert route.fanout.calls["orders"].references() == [("user", ("id",)), ("query", ("q",))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            FANOUT.replace("    fanout:", "    upstream: users\n    fanout:"),
            [":4: routes[0]: has both a fanout and an upstream/rewrite; a route does one or the other"],
        ),
        (
            FANOUT.replace('{upstream: users, path: "/users/{id}"}', '{upstream: nope, path: "/users/{id}"}'),
            [":9: routes[0].fanout.calls.user.upstream: unknown upstream 'nope' (known: users)"],
        ),
        (
            FANOUT.replace("/users/{id}", "/users/{uid}"),
            [
                ":9: routes[0].fanout.calls.user.path: "
                "{uid} is neither a path parameter, {query.NAME} nor {CALL.FIELD} of another call"
            ],
        ),
        (
            FANOUT.replace("/users/{id}", "/users/{orders.user}"),
            [":8: routes[0].fanout.calls: calls wait for each other in a cycle: user -> orders -> user"],
        ),
        (
            FANOUT.replace("        user:", "        query:").replace("{user.id}", "{id}"),
            [":8: routes[0].fanout.calls: call name 'query' must be an identifier other than 'query'"],
        ),
        (
            FANOUT.replace("deadline: 2.0", "deadline: 0"),
            [":7: routes[0].fanout.deadline: Input should be greater than 0"],
        ),
    ],
    ids=[
        "fanout-and-upstream",
        "unknown-call-upstream",
        "unknown-template-reference",
        "dependency-cycle",
        "reserved-name",
        "zero-deadline",
    ],
)
def test_fanout_mistakes(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert issues_of(tmp_path, text) == expected


FLAGGED = """\
upstreams:
  users: {url: "http://127.0.0.1:9001"}
  users-v2: {url: "http://127.0.0.1:9003"}
flags:
  new-profile:
    type: bool
    default: false
    rules:
      - {rollout: 10, value: true}
routes:
  - path: /api/users/{id}
    upstream: users
    flags: [new-profile]
    when: [{flag: new-profile, equals: true, upstream: users-v2}]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            FLAGGED.replace("flags: [new-profile]", "flags: [old-profile]"),
            [":13: routes[0].flags[0]: unknown flag 'old-profile' (defined: new-profile)"],
        ),
        (
            FLAGGED.replace("flag: new-profile,", "flag: nope,"),
            [":14: routes[0].when[0].flag: unknown flag 'nope' (defined: new-profile)"],
        ),
        (
            FLAGGED.replace("upstream: users-v2}", "upstream: users-v3}"),
            [":14: routes[0].when[0].upstream: unknown upstream 'users-v3' (known: users, users-v2)"],
        ),
        (
            FLAGGED.replace("equals: true", 'equals: "true"'),
            [":14: routes[0].when[0].equals: 'true' can never equal a bool flag"],
        ),
        (
            FLAGGED.replace("value: true}", "value: maybe}"),
            [":9: flags.new-profile.rules[0].value: bool flag: expected a boolean, got str 'maybe'"],
        ),
    ],
    ids=["unknown-route-flag", "unknown-when-flag", "unknown-when-upstream", "wrong-equals-type", "wrong-value-type"],
)
def test_flag_mistakes(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert issues_of(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            FANOUT.replace("    fanout:", "    websocket: {idle_timeout: 60}\n    fanout:"),
            [":5: routes[0].websocket: a fan-out route has no upstream to take WebSocket sessions"],
        ),
        (
            VALID.replace("    rewrite: /users/{id}", "    websocket: {max_message_bytes: 16777217}"),
            [":8: routes[0].websocket.max_message_bytes: Input should be less than or equal to 16777216"],
        ),
        (
            VALID.replace("    rewrite: /users/{id}", "    websocket: {idle: 5}"),
            [":8: routes[0].websocket.idle: unknown key"],
        ),
    ],
    ids=["fanout", "message-over-the-server-limit", "unknown-key"],
)
def test_websocket_mistakes(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert issues_of(tmp_path, text) == expected


def test_websocket_options_default_on_and_opt_out(tmp_path: Path) -> None:
    routes = load(tmp_path, VALID.replace("    rewrite: /users/{id}", "    websocket: false")).routes
    fanout = load(tmp_path, FANOUT).routes[0]
    assert routes[0].websocket_options is None
    assert (routes[1].websocket_options and routes[1].websocket_options.idle_timeout) == 300
    assert fanout.websocket_options is None
