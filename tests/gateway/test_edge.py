"""Edge policies at the gateway: verified identity for flags and upstreams, rate limits in Redis, CORS."""

import tempfile
from pathlib import Path

import pytest
import redis.asyncio

from asgi_gateway.middleware.auth import api_key_digest
from tests.conftest import redis_server
from tests.gateway.conftest import TRUSTED_CLIENT, GatewayFactory, client_for
from tests.issuer import AUDIENCE, ISSUER, Issuer
from tests.servers import serve
from tests.upstreams import Origin, echo

pytestmark = pytest.mark.anyio

KEY = "k-live-0123456789"
OTHER_KEY = "k-live-other"

ROUTES = f"""
upstreams:
  users: {{url: "http://users.internal"}}
  origin: {{url: "http://origin.internal"}}
flags:
  new-profile:
    type: bool
    default: false
    rules:
      - {{users: [u-1], value: true}}
routes:
  - path: /api/me
    upstream: users
    flags: [new-profile]
    auth:
      jwt: {{jwks_url: "JWKS_URL", issuer: "{ISSUER}", audience: {AUDIENCE}, algorithms: [RS256], org_claim: org}}
      require: {{scope: [profile]}}
    rate_limit: {{requests: 100, per: 60, key: user}}
  - path: /api/keyed
    upstream: users
    auth:
      api_key: {{keys_file: keys.txt}}
    rate_limit: {{requests: 2, per: 60, key: api_key}}
  - path: /api/open
    methods: [GET]
    upstream: users
    flags: [new-profile]
    rate_limit: {{requests: 1, per: 60}}
  - path: /keyed/items/{{id}}
    methods: [GET]
    upstream: origin
    rewrite: /items/{{id}}
    auth:
      api_key: {{keys_file: keys.txt}}
    cache: {{ttl: 60}}
  - path: /items/{{id}}
    methods: [GET]
    upstream: origin
    cache: {{ttl: 60}}
    cors: {{allow_origins: ["https://a.example", "https://b.example"], max_age: 300}}
"""


def seen(response_json: dict, name: str) -> list[str]:
    return [value for header, value in response_json["headers"] if header == name]


@pytest.fixture
def issuer() -> Issuer:
    made = Issuer()
    made.add_rsa("rsa-1")
    return made


@pytest.fixture
def keys_file(tmp_path: Path) -> None:
    keys = f"# billing\n{api_key_digest(KEY)} svc-billing org=acme\n{api_key_digest(OTHER_KEY)} svc-other\n"
    (tmp_path / "keys.txt").write_text(keys)


def routes_with(jwks_url: str) -> str:
    return ROUTES.replace("JWKS_URL", jwks_url)


@pytest.mark.integration
async def test_the_verified_user_is_who_flags_and_the_upstream_see(
    make_gateway: GatewayFactory, issuer: Issuer, keys_file: None
) -> None:
    async with serve(issuer) as url:
        app = make_gateway(routes_with(f"{url}/jwks"), upstreams={"users": echo}, **TRUSTED_CLIENT)
        async with client_for(app) as client:
            token = issuer.token("rsa-1", sub="u-1", org="acme", scope="profile")
            verified = await client.get("/api/me", headers={"Authorization": f"Bearer {token}", "X-User-Id": "u-9"})
            anonymous = await client.get("/api/me", headers={"X-User-Id": "u-1"})
            unscoped = await client.get("/api/me", headers={"Authorization": f"Bearer {issuer.token('rsa-1')}"})
    assert verified.status_code == 200
    body = verified.json()
    assert (seen(body, "x-user-id"), seen(body, "x-org-id")) == (["u-1"], ["acme"])
    assert seen(body, "x-feature-flags") == ["new-profile=true"]
    assert verified.headers["ratelimit"] == '"default";r=99;t=1'
    assert (anonymous.status_code, anonymous.headers["www-authenticate"]) == (401, 'Bearer realm="gateway"')
    assert unscoped.status_code == 403


async def test_identity_headers_count_only_from_trusted_peers_on_open_routes(
    make_gateway: GatewayFactory, issuer: Issuer, keys_file: None
) -> None:
    untrusted = make_gateway(routes_with("http://127.0.0.1:9/jwks"), upstreams={"users": echo})
    async with client_for(untrusted) as client:
        dropped = await client.get("/api/open", headers={"X-User-Id": "u-1", "X-Org-Id": "acme"})
    trusted = make_gateway(routes_with("http://127.0.0.1:9/jwks"), upstreams={"users": echo}, **TRUSTED_CLIENT)
    async with client_for(trusted) as client:
        kept = await client.get("/api/open", headers={"X-User-Id": "u-1"})
    assert (seen(dropped.json(), "x-user-id"), seen(dropped.json(), "x-org-id")) == ([], [])
    assert seen(dropped.json(), "x-feature-flags") == ["new-profile=false"]
    assert (seen(kept.json(), "x-user-id"), seen(kept.json(), "x-feature-flags")) == (["u-1"], ["new-profile=true"])


async def test_api_keys_from_the_keys_file_are_limited_in_redis(
    make_gateway: GatewayFactory,
    keys_file: None,
    redis_url: str,
    redis_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    app = make_gateway(
        routes_with("http://127.0.0.1:9/jwks"),
        upstreams={"users": echo},
        redis_url=redis_url,
        rate_limit={"redis_prefix": redis_prefix},
    )
    async with client_for(app) as client:
        responses = [await client.get("/api/keyed", headers={"X-API-Key": KEY}) for _ in range(3)]
        unknown = await client.get("/api/keyed", headers={"X-API-Key": "guess"})
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert (seen(responses[0].json(), "x-user-id"), seen(responses[0].json(), "x-api-key")) == (["svc-billing"], [])
    refused = responses[2]
    assert (refused.headers["retry-after"], refused.headers["ratelimit-policy"]) == ("30", '"default";q=2;w=60')
    assert refused.headers["content-type"] == "application/problem+json"
    assert unknown.status_code == 401
    keys = [key.decode() async for key in redis_client.scan_iter(match=f"{redis_prefix}*")]
    assert len(keys) == 1
    assert keys[0].endswith(f"{{key:{api_key_digest(KEY)[:16]}}}")


async def test_a_redis_that_is_down_lets_requests_through_and_counts_it(
    make_gateway: GatewayFactory, keys_file: None
) -> None:
    with tempfile.TemporaryDirectory() as workdir, redis_server(workdir) as (proc, url):
        app = make_gateway(routes_with("http://127.0.0.1:9/jwks"), upstreams={"users": echo}, redis_url=url)
        proc.kill()
        proc.wait(timeout=10)
        async with client_for(app) as client:
            statuses = [(await client.get("/api/open")).status_code for _ in range(3)]
            metrics = (await client.get("/_gateway/metrics")).text
    assert statuses == [200, 200, 200]  # one request a minute, were Redis there to count
    assert 'gateway_redis_errors_total{component="ratelimit"} 3.0' in metrics


async def test_preflights_never_reach_the_upstream_and_cached_answers_vary_by_origin(
    make_gateway: GatewayFactory, keys_file: None
) -> None:
    origin = Origin()
    app = make_gateway(routes_with("http://127.0.0.1:9/jwks"), upstreams={"origin": origin})
    preflight_headers = {"Origin": "https://a.example", "Access-Control-Request-Method": "GET"}
    async with client_for(app) as client:
        preflight = await client.options("/items/1", headers=preflight_headers)
        first = await client.get("/items/1", headers={"Origin": "https://a.example"})
        second = await client.get("/items/1", headers={"Origin": "https://b.example"})
        plain_options = await client.options("/items/1")
    assert (preflight.status_code, preflight.headers["access-control-max-age"]) == (200, "300")
    assert preflight.headers["access-control-allow-origin"] == "https://a.example"
    assert origin.hits == {"GET /items/1": 1}
    assert (first.headers["access-control-allow-origin"], second.headers["access-control-allow-origin"]) == (
        "https://a.example",
        "https://b.example",
    )
    assert second.headers["cache-status"].startswith("gateway; hit")
    assert "Origin" in [token.strip() for token in second.headers["vary"].split(",")]
    assert (plain_options.status_code, plain_options.headers["allow"]) == (405, "GET, HEAD")


async def test_answers_to_api_key_callers_stay_out_of_the_shared_cache(
    make_gateway: GatewayFactory, keys_file: None
) -> None:
    origin = Origin()
    app = make_gateway(routes_with("http://127.0.0.1:9/jwks"), upstreams={"origin": origin})
    async with client_for(app) as client:
        for key in (KEY, OTHER_KEY):
            response = await client.get("/keyed/items/1", headers={"X-API-Key": key})
            assert response.status_code == 200
    assert origin.hits == {"GET /items/1": 2}
