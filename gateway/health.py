"""Liveness and readiness, answered by the gateway itself and never proxied."""

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

REDIS_PING_TIMEOUT = 0.5


class Health:
    def __init__(
        self, redis_client: redis.asyncio.Redis | None, *, route_count: int, status: Callable[[], dict[str, Any]]
    ) -> None:
        self.redis = redis_client
        self.route_count = route_count
        self.status = status  # what the process reports about its configuration: version, last reload error

    def routes(self, prefix: str) -> list[Route]:
        return [
            Route(f"{prefix}/health", self.live, methods=["GET"], name="health"),
            Route(f"{prefix}/ready", self.ready, methods=["GET"], name="ready"),
        ]

    async def live(self, request: Request) -> JSONResponse:
        """The process is up and its event loop answers."""
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> JSONResponse:
        """Routes are loaded, and the Redis it was configured with answers a PING."""
        redis_state = "off" if self.redis is None else await self._redis_state()
        ready = redis_state != "down"
        body = {"status": "ready" if ready else "unavailable", "routes": self.route_count, "redis": redis_state}
        body |= self.status()
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _redis_state(self) -> str:
        assert self.redis is not None
        try:
            async with asyncio.timeout(REDIS_PING_TIMEOUT):
                await self.redis.ping()
        except (TimeoutError, redis.RedisError, OSError):
            return "down"
        return "ok"
