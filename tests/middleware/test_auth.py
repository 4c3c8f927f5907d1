"""AuthMiddleware on a plain Starlette app: JWTs checked against a JWKS served by a real ASGI app, API keys."""

import time
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_gateway.middleware.auth import (
    APIKeyVerifier,
    AuthMiddleware,
    Identity,
    JWKSCache,
    JWTVerifier,
    Verifier,
    api_key_digest,
    identity_of,
)
from tests.issuer import AUDIENCE, ISSUER, Issuer, default_claims, hmac_token, unsigned_token

pytestmark = pytest.mark.anyio

JWKS_URL = "http://issuer.test/jwks"


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


async def whoami(request: Request) -> JSONResponse:
    identity = identity_of(request.scope)
    return JSONResponse(
        {
            "user": request.headers.get("x-user-id"),
            "org": request.headers.get("x-org-id"),
            "api_key": request.headers.get("x-api-key"),
            "authorization": request.headers.get("authorization") is not None,
            "identity": None if identity is None else [identity.user, identity.method, identity.key_id],
        }
    )


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    made = Issuer()
    made.add_rsa("rsa-1")
    made.add_ec("ec-1")
    return made


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks(issuer: Issuer, clock: Clock) -> JWKSCache:
    issuer.published = ["rsa-1", "ec-1"]
    issuer.failing = False
    return JWKSCache(JWKS_URL, transport=httpx.ASGITransport(app=issuer), clock=clock, min_refresh=30, max_age=300)


def jwt_verifier(jwks: JWKSCache, **kwargs: Any) -> JWTVerifier:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256", "ES256"]}
    return JWTVerifier(jwks, **(options | kwargs))


def app_with(*verifiers: Verifier, **kwargs: Any) -> Starlette:
    return Starlette(
        routes=[Route("/me", whoami)], middleware=[Middleware(AuthMiddleware, verifiers=verifiers, **kwargs)]
    )


async def call(app: Starlette, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        return await client.get("/me", headers=headers)


async def test_verified_identity_replaces_what_the_client_claims(issuer: Issuer, jwks: JWKSCache) -> None:
    app = app_with(jwt_verifier(jwks, org_claim="org"))
    response = await call(app, issuer.token("rsa-1", sub="u-7", org="acme"), **{"X-User-Id": "admin", "X-Org-Id": "x"})
    assert response.status_code == 200
    assert response.json() == {
        "user": "u-7",
        "org": "acme",
        "api_key": None,
        "authorization": True,
        "identity": ["u-7", "jwt", None],
    }


async def test_ec_keys_verify_too(issuer: Issuer, jwks: JWKSCache) -> None:
    response = await call(app_with(jwt_verifier(jwks)), issuer.token("ec-1", sub="u-ec"))
    assert (response.status_code, response.json()["user"]) == (200, "u-ec")


async def test_no_credentials_is_a_401_challenge_without_an_error(jwks: JWKSCache) -> None:
    response = await call(app_with(jwt_verifier(jwks)), **{"X-User-Id": "admin"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="gateway"'
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "Credentials are required."


def expired(seconds: int) -> dict[str, Any]:
    return {"exp": int(time.time()) - seconds}


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        (expired(120), "expired"),
        ({"iss": "https://other.test"}, "issuer"),
        ({"aud": "someone-else"}, "Audience"),
        ({"sub": None}, "sub"),
        ({"sub": "two\nlines"}, "single-line"),
        ({"exp": None}, "exp"),
    ],
    ids=["expired-past-leeway", "wrong-issuer", "wrong-audience", "no-subject", "subject-with-newline", "no-exp"],
)
async def test_invalid_tokens_are_refused(issuer: Issuer, jwks: JWKSCache, claims: dict[str, Any], detail: str) -> None:
    response = await call(app_with(jwt_verifier(jwks, leeway=30)), issuer.token("rsa-1", **claims))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="gateway", error="invalid_token", error_description="')
    assert detail in response.json()["detail"]


async def test_leeway_admits_a_token_just_expired(issuer: Issuer, jwks: JWKSCache) -> None:
    app = app_with(jwt_verifier(jwks, leeway=60))
    assert (await call(app, issuer.token("rsa-1", **expired(10)))).status_code == 200


@pytest.mark.parametrize("alg", ["none", "None"])
async def test_alg_none_is_refused(jwks: JWKSCache, alg: str) -> None:
    token = unsigned_token(default_claims(), {"alg": alg, "typ": "JWT", "kid": "rsa-1"})
    response = await call(app_with(jwt_verifier(jwks)), token)
    assert response.status_code == 401
    assert "not accepted" in response.json()["detail"]


async def test_hs256_signed_with_the_public_key_is_refused(issuer: Issuer, jwks: JWKSCache) -> None:
    """Algorithm confusion: an HMAC keyed with the public key, which anyone can read from the JWKS."""
    token = hmac_token(default_claims(), {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, issuer.public_pem("rsa-1"))
    response = await call(app_with(jwt_verifier(jwks)), token)
    assert (response.status_code, response.json()["detail"]) == (401, "The token's algorithm 'HS256' is not accepted.")


async def test_a_token_naming_another_keys_algorithm_is_refused(issuer: Issuer, jwks: JWKSCache) -> None:
    """An ES256 token pointing at the RSA key: the key verifies only with its own algorithm."""
    token = jwt.encode(default_claims(), issuer.keys["ec-1"][0], "ES256", headers={"kid": "rsa-1"})
    response = await call(app_with(jwt_verifier(jwks)), token)
    assert response.status_code == 401
    assert "does not match the key's algorithm" in response.json()["detail"]


async def test_symmetric_algorithms_cannot_be_configured(jwks: JWKSCache) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        jwt_verifier(jwks, algorithms=["RS256", "HS256"])


async def test_a_rotated_key_is_fetched_on_first_sight(issuer: Issuer, jwks: JWKSCache, clock: Clock) -> None:
    app = app_with(jwt_verifier(jwks))
    assert (await call(app, issuer.token("rsa-1"))).status_code == 200
    fetches = issuer.fetches
    issuer.add_rsa("rsa-2")  # the issuer rotates: a new key is published and signs from now on
    issuer.published = ["rsa-2"]
    clock.now += 30  # past the refresh interval, well within the key set's max age
    assert (await call(app, issuer.token("rsa-2", sub="u-2"))).json()["user"] == "u-2"
    assert issuer.fetches == fetches + 1


async def test_unknown_kids_refresh_at_most_once_per_interval(issuer: Issuer, jwks: JWKSCache, clock: Clock) -> None:
    app = app_with(jwt_verifier(jwks))
    assert (await call(app, issuer.token("rsa-1"))).status_code == 200
    fetches = issuer.fetches
    issuer.add_rsa("unpublished", publish=False)
    forged = issuer.token("unpublished")
    clock.now += 31
    statuses = [(await call(app, forged)).status_code for _ in range(5)]
    assert statuses == [401] * 5
    clock.now += 31
    assert (await call(app, forged)).json()["detail"] == "No key 'unpublished' in the issuer's key set."
    assert issuer.fetches == fetches + 2  # one for the first unknown kid, one after the interval


async def test_the_key_set_is_fetched_again_once_old_and_kept_when_that_fails(
    issuer: Issuer, jwks: JWKSCache, clock: Clock
) -> None:
    app = app_with(jwt_verifier(jwks))
    assert (await call(app, issuer.token("rsa-1"))).status_code == 200
    fetches = issuer.fetches
    issuer.failing = True
    clock.now += 301
    assert (await call(app, issuer.token("rsa-1", jti="2"))).status_code == 200  # old keys kept
    assert issuer.fetches == fetches + 1
    issuer.failing = False
    clock.now += 31  # still old: the next request tries again once the refresh interval has passed
    assert (await call(app, issuer.token("rsa-1", jti="3"))).status_code == 200
    assert issuer.fetches == fetches + 2


async def test_a_verified_token_is_remembered_for_a_while(issuer: Issuer, jwks: JWKSCache, clock: Clock) -> None:
    verifier_clock = Clock()
    verifier_clock.now = time.time()
    app = app_with(jwt_verifier(jwks, remember=60, clock=verifier_clock))
    token = issuer.token("rsa-1")
    assert (await call(app, token)).status_code == 200
    issuer.published = ["ec-1"]  # the key is withdrawn
    clock.now += 301
    assert (await call(app, token)).status_code == 200  # remembered: no signature check, no key needed
    verifier_clock.now += 61
    assert (await call(app, token)).status_code == 401


async def test_a_lone_key_verifies_tokens_without_kid(issuer: Issuer, jwks: JWKSCache) -> None:
    issuer.published = ["rsa-1"]
    app = app_with(jwt_verifier(jwks))
    assert (await call(app, issuer.token(None))).status_code == 200


@pytest.mark.parametrize(
    ("authorization", "status", "error"),
    [("Bearer ", 401, "invalid_request"), ("Bearer not.a.jwt", 401, "invalid_token"), ("Basic dTpw", 401, None)],
    ids=["empty", "malformed", "other-scheme"],
)
async def test_malformed_authorization(jwks: JWKSCache, authorization: str, status: int, error: str | None) -> None:
    response = await call(app_with(jwt_verifier(jwks)), authorization=authorization)
    assert response.status_code == status
    assert (
        (f'error="{error}"' in response.headers["www-authenticate"])
        if error
        else ("error=" not in response.headers["www-authenticate"])
    )


async def test_a_missing_scope_is_a_403(issuer: Issuer, jwks: JWKSCache) -> None:
    app = app_with(jwt_verifier(jwks), required_scopes=["orders:read"])
    refused = await call(app, issuer.token("rsa-1", scope="profile"))
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="gateway", error="insufficient_scope", error_description="Missing scope: orders:read.", '
        'scope="orders:read"'
    )
    assert (await call(app, issuer.token("rsa-1", scope="profile orders:read"))).status_code == 200
    assert (await call(app, issuer.token("rsa-1", scp=["orders:read"]))).status_code == 200


KEY = "k-0123456789abcdef"


def key_verifier() -> APIKeyVerifier:
    identity = Identity("svc-billing", "acme", frozenset({"orders:read"}), "api_key", api_key_digest(KEY)[:16])
    other = Identity("svc-other", method="api_key")
    return APIKeyVerifier({api_key_digest(KEY): identity, api_key_digest("another"): other})


async def test_api_keys_are_checked_by_digest_and_never_forwarded() -> None:
    app = app_with(key_verifier(), required_scopes=["orders:read"])
    response = await call(app, **{"X-API-Key": KEY, "X-User-Id": "admin"})
    assert response.json() == {
        "user": "svc-billing",
        "org": "acme",
        "api_key": None,
        "authorization": False,
        "identity": ["svc-billing", "api_key", api_key_digest(KEY)[:16]],
    }
    unknown = await call(app, **{"X-API-Key": "guess"})
    assert unknown.status_code == 401
    assert unknown.headers["www-authenticate"].startswith('APIKey realm="gateway", error="invalid_token"')
    assert (await call(app, **{"X-API-Key": "another"})).status_code == 403


async def test_either_credential_will_do(issuer: Issuer, jwks: JWKSCache) -> None:
    app = app_with(jwt_verifier(jwks), key_verifier())
    assert (await call(app, **{"X-API-Key": KEY})).json()["user"] == "svc-billing"
    assert (await call(app, issuer.token("rsa-1"))).json()["user"] == "u-1"


def test_api_keys_are_given_as_digests() -> None:
    with pytest.raises(ValueError, match="SHA-256 hex digests"):
        APIKeyVerifier({KEY: Identity("u")})


def test_auth_needs_a_verifier() -> None:
    with pytest.raises(ValueError, match="at least one verifier"):
        AuthMiddleware(whoami, verifiers=[])  # type: ignore[arg-type]
