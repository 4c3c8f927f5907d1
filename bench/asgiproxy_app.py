"""asgiproxy 0.2.0, the fastest Python proxy library measured, proxying to the origin (BENCH_ORIGIN).

Configured as its README does (a BaseURLProxyConfigMixin config, Host rewritten to the origin's) with one
change for fairness: its concurrency limit (20 by default) and aiohttp's pool (100) are raised to the
gateway's pool size, 256, so neither queues requests the gateway would not.
"""

import os
from urllib.parse import urlsplit

import aiohttp
from asgiproxy.config import BaseURLProxyConfigMixin, ProxyConfig
from asgiproxy.context import ProxyContext
from asgiproxy.simple_proxy import make_simple_proxy_app
from starlette.types import Receive, Scope, Send

POOL_SIZE = 256
ORIGIN = os.environ.get("BENCH_ORIGIN", "http://127.0.0.1:8081")


class OriginConfig(BaseURLProxyConfigMixin, ProxyConfig):
    upstream_base_url = ORIGIN
    rewrite_host_header = urlsplit(ORIGIN).netloc


context = ProxyContext(OriginConfig(), max_concurrency=POOL_SIZE)
proxy = make_simple_proxy_app(context)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "lifespan":
        await proxy(scope, receive, send)
        return
    await receive()  # lifespan.startup
    context._session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL_SIZE), cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    )
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    await context.close()
    await send({"type": "lifespan.shutdown.complete"})
