"""A Starlette app doing one redis.asyncio GET per request: what a cache hit from Redis is to be measured against.

At start-up it stores the origin's documents under a key prefix of its own (BENCH_REDIS_PREFIX) and
deletes them at shutdown. BENCH_REDIS_URL names the Redis.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio
from payloads import documents
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_REDIS_PREFIX", f"bench:{os.getpid()}:")
client = redis.asyncio.Redis.from_url(REDIS_URL)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    bodies = documents()
    await client.mset({PREFIX + path: body for path, body in bodies.items()})
    try:
        yield
    finally:
        await client.delete(*(PREFIX + path for path in bodies))
        await client.aclose()


async def document(request: Request) -> Response:
    body = await client.get(PREFIX + request.url.path)
    if body is None:
        return Response(status_code=404)
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/{name}", document)], lifespan=lifespan)
