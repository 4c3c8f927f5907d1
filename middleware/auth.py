"""AuthMiddleware: who is calling, verified, as one Identity in `scope["state"]["identity"]`.

Verifiers read their own credentials: `JWTVerifier` a `Bearer` token checked against a JWKS, `APIKeyVerifier`
a key whose SHA-256 is listed. The first verifier that finds its credentials decides; bad credentials are a
401 (RFC 6750 §3: `WWW-Authenticate` with `error="invalid_token"`), none at all a 401 naming no error, and
a verified caller without a required scope a 403 (`insufficient_scope`). Everything inside sees the verified
identity: the client's own identity headers are replaced by it, so flags, rate limits and the upstream read
who was verified, never who the client said it was.
"""

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard

import httpx
import jwt

from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.types import ASGIApp, RawHeaders, Receive, Scope, Send

__all__ = [
    "APIKeyVerifier",
    "AuthMiddleware",
    "Identity",
    "JWKSCache",
    "JWTVerifier",
    "Unauthorized",
    "Verifier",
    "api_key_digest",
    "identity_of",
]

logger = logging.getLogger("gateway.auth")

STATE_IDENTITY = "identity"
# Symmetric algorithms verify with a shared secret, which a public key set cannot hold; `none` verifies nothing.
_REMEMBERED_TOKENS = 10_000
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    org: str | None = None
    scopes: frozenset[str] = frozenset()
    method: Literal["jwt", "api_key"] = "jwt"
    key_id: str | None = None  # an API key's short digest: a rate-limit key that names no secret


def identity_of(scope: Scope) -> Identity | None:
    """The identity AuthMiddleware verified for this request, if any."""
    identity: Identity | None = scope.get("state", {}).get(STATE_IDENTITY)
    return identity


class Unauthorized(Exception):
    """Credentials were sent and are not good: `error` is RFC 6750's code (§3.1)."""

    def __init__(self, description: str, error: str = "invalid_token") -> None:
        super().__init__(description)
        self.error, self.description = error, description


class Verifier(Protocol):
    scheme: str  # the auth-scheme of this verifier's challenge
    secret_headers: frozenset[bytes]  # request fields holding secrets, never forwarded upstream

    async def verify(self, headers: RawHeaders) -> Identity | None:
        """The verified identity, None when the request carries no credentials of this kind; raises
        Unauthorized for credentials that fail."""
        ...


def _header(headers: RawHeaders, name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


class JWKSCache:
    """A JSON Web Key Set fetched from `url`, kept `max_age` seconds and fetched again early for a `kid` it
    does not hold (keys rotate without a restart), but at most once per `min_refresh` seconds, so tokens
    naming made-up kids cannot turn into a flood of fetches. A failed fetch keeps the keys already held."""

    def __init__(
        self,
        url: str,
        *,
        max_age: float = 300.0,
        min_refresh: float = 10.0,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.max_age, self.min_refresh, self.timeout = url, max_age, min_refresh, timeout
        self.transport, self.clock = transport, clock
        self.fetches = 0
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        now = self.clock()
        if kid not in self._keys or self._fetched_at is None or now - self._fetched_at >= self.max_age:
            await self._refresh(now)
        return self._keys.get(kid)

    async def _refresh(self, asked_at: float) -> None:
        async with self._lock:
            if self._tried_at is not None and (
                self._tried_at >= asked_at or asked_at - self._tried_at < self.min_refresh
            ):
                return  # another request fetched while this one waited, or one did a moment ago
            self._tried_at = self.clock()
            self.fetches += 1
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
                logger.warning("JWKS %s could not be fetched, keeping %d keys: %s", self.url, len(self._keys), exc)
                return
            self._keys, self._fetched_at = keys, self._tried_at

    async def _fetch(self) -> dict[str | None, jwt.PyJWK]:
        async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout) as client:
            response = await client.get(self.url, headers={"accept": "application/json"})
        response.raise_for_status()
        keys = jwt.PyJWKSet.from_dict(response.json()).keys  # keys it cannot use are left out
        by_kid: dict[str | None, jwt.PyJWK] = {key.key_id: key for key in keys if key.public_key_use in (None, "sig")}
        if len(by_kid) == 1:
            by_kid[None] = next(iter(by_kid.values()))  # a lone key also verifies tokens that name no kid
        return by_kid


class JWTVerifier:
    """A `Bearer` JWT signed by a key of the JWKS, from `issuer`, for `audience`, not expired (give or take
    `leeway` seconds). Only the listed asymmetric algorithms are accepted, and only with a key of that
    algorithm: `alg: none` and an HMAC made with a public key (algorithm confusion) never verify."""

    scheme = "Bearer"
    secret_headers: frozenset[bytes] = frozenset()  # a token is no secret key: upstreams may read its claims

    def __init__(
        self,
        jwks: JWKSCache,
        *,
        issuer: str,
        audience: str | Sequence[str],
        algorithms: Sequence[str] = ("RS256", "ES256"),
        leeway: float = 0.0,
        user_claim: str = "sub",
        org_claim: str | None = None,
        remember: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        refused = set(algorithms) - ASYMMETRIC_ALGORITHMS
        if refused or not algorithms:
            raise ValueError(f"algorithms must be asymmetric ones of {sorted(ASYMMETRIC_ALGORITHMS)}, got {refused}")
        self.jwks, self.issuer, self.algorithms, self.leeway = jwks, issuer, list(algorithms), leeway
        self.audience = audience if isinstance(audience, str) else list(audience)
        self.user_claim, self.org_claim = user_claim, org_claim
        self._required = ["exp", "iss", "aud", user_claim]
        # Clients send the same token for many requests: its verified identity is kept until it expires (or for
        # `remember` seconds, so a key withdrawn from the set stops counting soon), a signature check saved.
        self.remember, self.clock = remember, clock
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    async def verify(self, headers: RawHeaders) -> Identity | None:
        authorization = _header(headers, b"authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token:
            raise Unauthorized("The Bearer token is empty.", "invalid_request")
        known = self._verified.get(token)
        if known is not None and self.clock() < known[1]:
            return known[0]
        identity, expires = await self._verify(token)
        self._verified[token] = (identity, min(expires + self.leeway, self.clock() + self.remember))
        if len(self._verified) > _REMEMBERED_TOKENS:
            self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise Unauthorized(f"The token is malformed: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms:
            raise Unauthorized(f"The token's algorithm {alg!r} is not accepted.")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("The token's kid is not a string.")
        key = await self.jwks.key(kid)
        if key is None:
            raise Unauthorized(f"No key {kid!r} in the issuer's key set.")
        claims = self._decode(token, key)
        user = claims.get(self.user_claim)
        if not _header_safe(user):
            raise Unauthorized(f"The token's {self.user_claim!r} claim is not a non-empty single-line string.")
        org = claims.get(self.org_claim) if self.org_claim is not None else None
        return Identity(user, org if _header_safe(org) else None, _scopes(claims), "jwt"), float(claims["exp"])

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:  # PyJWT verifies with the key's own algorithm and refuses a token naming another
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": self._required, "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The token is not valid: {exc}") from None
        return claims


def _header_safe(value: object) -> TypeGuard[str]:
    """An identity is forwarded in a header: it must be one line of latin-1 text."""
    return isinstance(value, str) and value.isprintable() and bool(value) and max(map(ord, value)) < 256


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """OAuth's `scope` (space-separated, RFC 8693 §4.2), or `scp` as a list (as some issuers send it)."""
    scope, scp = claims.get("scope"), claims.get("scp")
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scp, list):
        return frozenset(item for item in scp if isinstance(item, str))
    return frozenset()


def api_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class APIKeyVerifier:
    """A key in `header` whose SHA-256 (hex) is one of `keys`. Only digests are held, and each is compared in
    constant time, all of them every time, so neither a key nor how much of it matched shows in the timing.
    The key itself is never forwarded."""

    scheme = "APIKey"

    def __init__(self, keys: Mapping[str, Identity], *, header: str = "X-API-Key") -> None:
        self.header = header.lower().encode("latin-1")
        self.secret_headers = frozenset({self.header})
        self._keys: list[tuple[bytes, Identity]] = []
        for digest, identity in keys.items():
            if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest.lower()):
                raise ValueError(f"API keys are given as SHA-256 hex digests, got {digest[:12]!r}...")
            self._keys.append((digest.lower().encode(), identity))

    async def verify(self, headers: RawHeaders) -> Identity | None:
        value = _header(headers, self.header)
        if value is None:
            return None
        digest = hashlib.sha256(value.strip()).hexdigest().encode()
        found: Identity | None = None
        for known, identity in self._keys:
            if hmac.compare_digest(known, digest):
                found = identity
        if found is None:
            raise Unauthorized("The API key is not known.")
        return found


class AuthMiddleware:
    """Lets a request in only with verified credentials (and the `required_scopes`), then forwards the verified
    identity in `user_header`/`org_header` in place of whatever the client sent under those names."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifiers: Sequence[Verifier],
        required_scopes: Iterable[str] = (),
        user_header: str = "X-User-Id",
        org_header: str = "X-Org-Id",
        realm: str = "gateway",
    ) -> None:
        if not verifiers:
            raise ValueError("AuthMiddleware needs at least one verifier")
        self.app, self.verifiers, self.required = app, tuple(verifiers), frozenset(required_scopes)
        self._user = user_header.lower().encode("latin-1")
        self._org = org_header.lower().encode("latin-1")
        self._dropped = frozenset().union(*(v.secret_headers for v in verifiers)) | {self._user, self._org}
        self._realm = realm.replace("\\", "").replace('"', "")
        self._challenge_scheme = self.verifiers[0].scheme

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: RawHeaders = scope["headers"]
        identity: Identity | None = None
        try:
            for verifier in self.verifiers:
                identity = await verifier.verify(headers)
                if identity is not None:
                    break
        except Unauthorized as exc:
            await self._refuse(401, exc.description, exc.error)(scope, receive, send)
            return
        if identity is None:
            await self._refuse(401, "Credentials are required.")(scope, receive, send)
            return
        missing = self.required - identity.scopes
        if missing:
            detail = f"Missing scope: {' '.join(sorted(missing))}."
            await self._refuse(403, detail, "insufficient_scope")(scope, receive, send)
            return
        forwarded = [(name, value) for name, value in headers if name not in self._dropped]
        forwarded.append((self._user, identity.user.encode("latin-1")))
        if identity.org is not None:
            forwarded.append((self._org, identity.org.encode("latin-1")))
        scope["headers"] = forwarded
        scope.setdefault("state", {})[STATE_IDENTITY] = identity
        await self.app(scope, receive, send)

    def _refuse(self, status: int, detail: str, error: str | None = None) -> ASGIApp:
        """RFC 6750 §3: no error code when no credentials came; the scopes needed with insufficient_scope."""
        params = [f'realm="{self._realm}"']
        if error is not None:
            description = "".join(ch for ch in detail if ch.isascii() and ch.isprintable() and ch not in '"\\')
            params += [f'error="{error}"', f'error_description="{description}"']
        if error == "insufficient_scope":
            params.append(f'scope="{" ".join(sorted(self.required))}"')
        challenge = f"{self._challenge_scheme} {', '.join(params)}"
        return problem_response(status, detail, headers={"WWW-Authenticate": challenge})
