"""A route's edge policies, `cors:`, `auth:` and `rate_limit:`, as the middlewares of middleware/ around its chain.

    CORS -> auth -> rate limit -> (flags -> cache -> conditional -> handler)

CORS is outermost: a browser's preflight carries no credentials, so it is answered before auth could refuse
it, and the 401s and 429s further in still get the CORS fields a browser needs to read them. Auth comes
before the rate limit, so a limit keyed by user or API key counts the verified caller, and before flags, so
flags (and the upstream) see the verified identity in the identity headers. The rate limit sits outside
flags and the cache: a refused request costs neither a flag evaluation nor a cache lookup, and a cache hit
still counts against its client.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from starlette.middleware.cors import CORSMiddleware

from asgi_gateway.config.edge import AuthSpec, CorsSpec, JwtSpec, RateLimitSpec
from asgi_gateway.config.routes import RouteSpec
from asgi_gateway.config.settings import Settings
from asgi_gateway.middleware.auth import (
    APIKeyVerifier,
    AuthMiddleware,
    Identity,
    JWKSCache,
    JWTVerifier,
    Verifier,
    identity_of,
)
from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.ratelimit import (
    KeyFunction,
    Limiter,
    MemoryLimiter,
    Quota,
    RateLimitMiddleware,
    RedisLimiter,
    header_key,
    peer_key,
)
from asgi_gateway.middleware.types import ASGIApp, Receive, Scope, Send

REDIS_TIMEOUT = 0.25  # seconds: a slower Redis is stepped around, the request let through


@dataclass(eq=False)
class EdgeResources:
    """What edge policies share for the life of the process: the limiter's Redis client and JWKS caches
    (kept across reloads, so a reload neither refetches keys nor forgets them)."""

    redis: Redis | None = None
    redis_prefix: str = "ratelimit:"
    on_redis_error: Callable[[RedisError], None] | None = None
    user_header: str = "X-User-Id"
    org_header: str = "X-Org-Id"
    jwks: dict[tuple[str, float, float], JWKSCache] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, on_redis_error: Callable[[RedisError], None]) -> "EdgeResources":
        redis = None
        if settings.redis_url is not None:
            redis = Redis.from_url(
                str(settings.redis_url),
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
        return cls(
            redis,
            settings.rate_limit.redis_prefix,
            on_redis_error,
            settings.flags.user_header,
            settings.flags.org_header,
        )

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def with_edge(app: ASGIApp, spec: RouteSpec, edge: EdgeResources) -> ASGIApp:
    """`app` inside the route's rate limit, auth and CORS, in that order from the inside out."""
    if spec.rate_limit is not None:
        app = RateLimitMiddleware(app, limiter=limiter(spec, spec.rate_limit, edge), key=key_function(spec.rate_limit))
    if spec.auth is not None:
        app = auth_middleware(app, spec.auth, edge)
    if spec.cors is not None:
        app = cors_middleware(app, spec, spec.cors)
    return app


def limiter(spec: RouteSpec, rate_limit: RateLimitSpec, edge: EdgeResources) -> Limiter:
    quota = Quota(rate_limit.requests, rate_limit.per, rate_limit.burst)
    if edge.redis is None:
        return MemoryLimiter(quota)
    route = hashlib.sha256(spec.label.encode()).hexdigest()[:12]  # each route its own counts
    return RedisLimiter(quota, client=edge.redis, prefix=f"{edge.redis_prefix}{route}:", on_error=edge.on_redis_error)


def key_function(rate_limit: RateLimitSpec) -> KeyFunction:
    """ip: the client address; user / api_key: the verified caller; header:NAME: that header's value."""
    if rate_limit.key == "user":
        return _user_key
    if rate_limit.key == "api_key":
        return _api_key_key
    if rate_limit.key.startswith("header:"):
        return header_key(rate_limit.key.removeprefix("header:"))
    return peer_key


def _user_key(scope: Scope) -> str:
    identity = identity_of(scope)
    return "" if identity is None else f"user:{identity.user}"


def _api_key_key(scope: Scope) -> str:
    identity = identity_of(scope)
    return "" if identity is None or identity.key_id is None else f"key:{identity.key_id}"


def auth_middleware(app: ASGIApp, auth: AuthSpec, edge: EdgeResources) -> AuthMiddleware:
    verifiers: list[Verifier] = []
    if auth.jwt is not None:
        verifiers.append(jwt_verifier(auth.jwt, edge))
    if auth.api_key is not None:
        keys = {
            entry.sha256: Identity(entry.user, entry.org, frozenset(entry.scopes), "api_key", entry.sha256[:16])
            for entry in auth.api_key.keys
        }
        verifiers.append(APIKeyVerifier(keys, header=auth.api_key.header))
    return AuthMiddleware(
        app,
        verifiers=verifiers,
        required_scopes=auth.require.scope,
        user_header=edge.user_header,
        org_header=edge.org_header,
    )


def jwt_verifier(spec: JwtSpec, edge: EdgeResources) -> JWTVerifier:
    """Routes naming the same key set share one cache of it."""
    cache_key = (spec.jwks_url, spec.jwks_max_age, spec.jwks_min_refresh)
    jwks = edge.jwks.get(cache_key)
    if jwks is None:
        jwks = edge.jwks[cache_key] = JWKSCache(
            spec.jwks_url, max_age=spec.jwks_max_age, min_refresh=spec.jwks_min_refresh
        )
    return JWTVerifier(
        jwks,
        issuer=spec.issuer,
        audience=spec.audience,
        algorithms=spec.algorithms,
        leeway=spec.leeway,
        user_claim=spec.user_claim,
        org_claim=spec.org_claim,
    )


def cors_middleware(app: ASGIApp, spec: RouteSpec, cors: CorsSpec) -> CORSMiddleware:
    """A route that does not take OPTIONS itself still gets preflights (the router lets OPTIONS in for a
    route with `cors:`); any other OPTIONS is refused here, as the router would have."""
    if "OPTIONS" not in spec.methods:
        app = _MethodNotAllowed(app, sorted({*spec.methods, "HEAD"} if "GET" in spec.methods else spec.methods))
    return CORSMiddleware(
        app,
        allow_origins=cors.allow_origins,
        allow_methods=cors.allow_methods if cors.allow_methods is not None else spec.methods,
        allow_headers=cors.allow_headers,
        expose_headers=cors.expose_headers,
        allow_credentials=cors.allow_credentials,
        max_age=cors.max_age,
    )


class _MethodNotAllowed:
    def __init__(self, app: ASGIApp, methods: list[str]) -> None:
        self.app, self.allow = app, ", ".join(methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            response = problem_response(405, "OPTIONS is not allowed here.", headers={"Allow": self.allow})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
