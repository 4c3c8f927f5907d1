"""Micro-benchmark of compressed cache hits, in microseconds per request (one core, no server).

    .venv/bin/python bench/micro_compress.py [--repeat 5]

CompressionMiddleware around CacheMiddleware on a MemoryStore, as a route with `cache:` and `compress: {}` is
built: a hit answered in identity (the floor), then in br, zstd and gzip with the memo of coded bodies, and
without it (every hit compressed again), for a 4 KB and a 64 KB JSON body. Best of `--repeat` runs.
"""

import argparse
import asyncio
import json

from harness import get_scope
from micro_cache import per_op, receive, send

from asgi_gateway.middleware.cache import CacheMiddleware, MemoryStore
from asgi_gateway.middleware.compress import CodedBodies, CompressionMiddleware
from asgi_gateway.middleware.types import ASGIApp, Receive, Scope, Send


def document(size: int) -> bytes:
    rows: list[dict[str, object]] = []
    body = b""
    while len(body) < size:
        rows.append({"id": len(rows), "name": f"user {len(rows)}", "plan": ["free", "pro"][len(rows) % 2]})
        body = json.dumps(rows).encode()
    return body


def upstream(body: bytes) -> ASGIApp:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"max-age=3600"),
        (b"etag", b'"v1"'),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def scope(accept_encoding: bytes) -> Scope:
    return get_scope("/api/users", [(b"host", b"api.example.test"), (b"accept-encoding", accept_encoding)])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results: list[tuple[str, float]] = []
    for size in (4096, 65536):
        body = document(size)
        for memo_budget in (16 << 20, 0):
            app = CompressionMiddleware(
                CacheMiddleware(upstream(body), store=MemoryStore()), memo=CodedBodies(memo_budget)
            )
            for coding in (b"identity", b"br", b"zstd", b"gzip"):
                if coding == b"identity" and not memo_budget:
                    continue
                request = scope(coding)
                await app(request, receive, send)  # stored, and coded once

                async def hits(count: int, request: Scope = request, app: ASGIApp = app) -> None:
                    for _ in range(count):
                        await app(request, receive, send)

                count = 20_000 if memo_budget or size < 65536 else 1_000
                memo = "" if coding == b"identity" else (", memo" if memo_budget else ", no memo")
                label = f"{len(body) // 1024} KB hit: {coding.decode()}{memo}"
                results.append((label, await per_op(hits, count, args.repeat)))
    width = max(len(name) for name, _ in results)
    for name, micros in results:
        print(f"{name:<{width}}  {micros:8.2f} µs/op")


if __name__ == "__main__":
    asyncio.run(main())
