"""The lean reference proxy: the fastest Python proxy design measured, doing nothing a proxy could skip.

Plain ASGI on aiohttp's client: one ClientSession (a keep-alive pool) made in the lifespan, no
decompression, request and response bodies read whole and sent in one message, hop-by-hop fields dropped.
No routing, no header policy, no streaming, no error mapping: what the gateway does on top of this is
what its ratio to this app prices. BENCH_ORIGIN names the origin (http://127.0.0.1:PORT).
"""

import os

import aiohttp
from starlette.types import Receive, Scope, Send
from yarl import URL

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)


class LeanProxy:
    def __init__(self, origin: str) -> None:
        self.origin = origin.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        assert self.session is not None, "served without its lifespan"
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name != b"host" and name not in HOP_BY_HOP
        ]
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        query = scope["query_string"]
        target = self.origin + scope["raw_path"].decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        async with self.session.request(
            scope["method"], URL(target, encoded=True), headers=headers, data=body or None, allow_redirects=False
        ) as response:
            content = await response.read()
            status = response.status
            raw_headers = [
                (name.lower(), value) for name, value in response.raw_headers if name.lower() not in HOP_BY_HOP
            ]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await self.session.close()
        await send({"type": "lifespan.shutdown.complete"})


app = LeanProxy(os.environ.get("BENCH_ORIGIN", "http://127.0.0.1:8081"))
