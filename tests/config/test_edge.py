"""`auth:`, `rate_limit:` and `cors:` in route files: what loads, and every mistake named by file, line and field."""

import hashlib
from pathlib import Path

import pytest

from asgi_gateway.config.errors import ConfigError
from asgi_gateway.config.loader import load_route_file

DIGEST = hashlib.sha256(b"secret-key").hexdigest()

ROUTE = """\
upstreams:
  users: {url: "http://127.0.0.1:9001"}
routes:
  - path: /api/users/{id}
    upstream: users
"""


def load_with(tmp_path: Path, edge: str, keys: str | None = None) -> list[str]:
    """The issues of the route file with `edge` appended to its route ([] when it loads)."""
    if keys is not None:
        (tmp_path / "keys.txt").write_text(keys)
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTE + edge)
    try:
        load_route_file(path, environ={})
    except ConfigError as exc:
        return [str(issue).removeprefix(str(path)) for issue in exc.issues]
    return []


def test_edge_policies_load(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text(f"# one key\n{DIGEST.upper()}  svc-1  org=acme  scope=a,b\n\n")
    path = tmp_path / "routes.yaml"
    path.write_text(
        ROUTE
        + """\
    auth:
      jwt: {jwks_url: "https://issuer.test/jwks", issuer: "https://issuer.test", audience: [a, b]}
      api_key: {keys_file: keys.txt}
      require: {scope: [a]}
    rate_limit: {requests: 10, per: 1, key: "header:X-Tenant", burst: 5}
    cors: {allow_origins: ["https://app.example"], allow_credentials: true}
"""
    )
    [route] = load_route_file(path, environ={}).routes
    assert route.auth is not None
    assert route.auth.jwt is not None
    assert route.auth.api_key is not None
    assert (route.auth.jwt.algorithms, route.auth.jwt.audience) == (("RS256",), ("a", "b"))
    [entry] = route.auth.api_key.keys
    assert (entry.sha256, entry.user, entry.org, entry.scopes) == (DIGEST, "svc-1", "acme", ("a", "b"))
    assert route.rate_limit is not None
    assert route.rate_limit.key == "header:X-Tenant"
    assert route.cors is not None
    assert route.cors.allow_methods is None


JWT = '      jwt: {jwks_url: "https://issuer.test/jwks", issuer: i, audience: a, algorithms: [ALG]}\n'


@pytest.mark.parametrize(
    ("edge", "keys", "expected"),
    [
        (
            "    auth:\n" + JWT.replace("ALG", "none"),
            None,
            ":7: routes[0].auth.jwt.algorithms[0]: Input should be 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', "
            "'PS512', 'ES256', 'ES384', 'ES512' or 'EdDSA'",
        ),
        (
            "    auth:\n" + JWT.replace("ALG", "HS256"),
            None,
            ":7: routes[0].auth.jwt.algorithms[0]: Input should be 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', "
            "'PS512', 'ES256', 'ES384', 'ES512' or 'EdDSA'",
        ),
        ("    auth: {require: {scope: [a]}}\n", None, ":6: routes[0].auth: needs jwt, api_key or both"),
        (
            "    auth:\n      api_key: {keys_file: keys.txt}\n",
            f"{DIGEST} svc-1\nsecret-key svc-2\n",
            ":7: routes[0].auth.api_key: {KEYS}:2: sha256: must be the 64 hex digits of the key's SHA-256, "
            "never the key itself",
        ),
        (
            "    auth:\n      api_key: {keys_file: keys.txt}\n",
            f"{DIGEST} svc-1 colour=blue\n",
            ":7: routes[0].auth.api_key: {KEYS}:1: unknown field 'colour=blue' (org=... or scope=...)",
        ),
        (
            "    auth:\n      api_key: {keys_file: keys.txt}\n",
            f"{DIGEST}\n",
            ":7: routes[0].auth.api_key: {KEYS}:1: expected '<sha256 hex> <user> [org=...] [scope=...]'",
        ),
        (
            "    auth:\n      api_key: {keys_file: keys.txt}\n",
            f"{DIGEST} a\n{DIGEST} b\n",
            ":7: routes[0].auth.api_key: lists a key digest twice",
        ),
        (
            "    auth:\n      api_key: {keys_file: missing.txt}\n",
            None,
            ":7: routes[0].auth.api_key: cannot read keys file {DIR}/missing.txt: [Errno 2] No such file or "
            "directory: '{DIR}/missing.txt'",
        ),
        (
            "    rate_limit: {requests: 5, per: 1, key: user}\n",
            None,
            ":6: routes[0].rate_limit.key: key: user needs auth: on the route",
        ),
        (
            "    rate_limit: {requests: 5, per: 1, key: cookie}\n",
            None,
            ":6: routes[0].rate_limit.key: String should match pattern "
            "'^(ip|user|api_key|header:[!#$%&'*+\\-.^_`|~0-9A-Za-z]+)$'",
        ),
        (
            "    rate_limit: {requests: 0, per: 1}\n",
            None,
            ":6: routes[0].rate_limit.requests: Input should be greater than 0",
        ),
        (
            "    cors: {allow_origins: [app.example]}\n",
            None,
            ":6: routes[0].cors.allow_origins: 'app.example' is not an origin like https://app.example.com (or '*')",
        ),
    ],
    ids=[
        "alg-none",
        "alg-hs256",
        "no-verifier",
        "raw-key-in-keys-file",
        "unknown-keys-field",
        "keys-line-without-user",
        "duplicate-digest",
        "missing-keys-file",
        "user-key-without-auth",
        "unknown-key-kind",
        "no-requests",
        "origin-without-scheme",
    ],
)
def test_mistakes_name_file_line_and_field(tmp_path: Path, edge: str, keys: str | None, expected: str) -> None:
    issues = load_with(tmp_path, edge, keys)
    assert issues == [expected.replace("{KEYS}", str(tmp_path / "keys.txt")).replace("{DIR}", str(tmp_path))]
