"""Real ASGI upstreams for tests: they answer what they saw, so a test can assert what crossed the gateway."""

import asyncio
import hashlib
import json

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with JSON describing the request it received (headers in order, body size and digest)."""
    digest = hashlib.sha256()
    size = 0
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    seen = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
        "body_size": size,
        "body_sha256": digest.hexdigest(),
    }
    body = json.dumps(seen).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"connection", b"x-hop"), (b"x-hop", b"1")]
    headers += [(b"keep-alive", b"timeout=5"), (b"x-upstream", b"echo")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def streaming(total: int, chunk: int = 64 * 1024) -> ASGIApp:
    """An upstream answering `total` bytes of unknown length, chunk by chunk, without holding them."""
    block = b"x" * chunk

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]}
        )
        sent = 0
        while sent < total:
            piece = block[: min(chunk, total - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


class Stalling:
    """An upstream that accepts the request and never answers until released: for timeouts."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.arrived.set()
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})


async def status(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers /status/NNN with that status and a small body, as an upstream error would look."""
    code = int(scope["path"].rsplit("/", 1)[-1])
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [(b"content-type", b"text/plain"), (b"x-origin", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": f"upstream says {code}".encode()})


class Controllable:
    """An upstream whose answers a test dictates by path, and which counts what it sees.

    /delay/MS?... answers {"waited": MS} after MS milliseconds; /status/CODE answers that status;
    /text answers text/plain; /badjson answers a broken JSON body, /nan one with NaN (not JSON by RFC 8259),
    /latin1 one in Latin-1 (JSON is UTF-8), /bignum a number beyond 64 bits with its own spacing;
    /user/ID answers {"id": ID, "org": "o-ID"}; /echo-query answers the query string. `in_flight` and
    `most_in_flight` count concurrent requests; `cancelled` counts requests whose client went away before the answer.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.abandoned = 0
        self.someone_left = asyncio.Event()
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(
            scope["raw_path"].decode() + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        )
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self._answer(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"].strip("/").split("/")
        content_type, status, body = b"application/json", 200, b"{}"
        if parts[0] == "delay":
            if not await _wait_unless_abandoned(int(parts[1]) / 1000, receive):
                self.abandoned += 1
                self.someone_left.set()
                return
            body = json.dumps({"waited": int(parts[1])}).encode()
        elif parts[0] == "status":
            status = int(parts[1])
        elif parts[0] == "text":
            content_type, body = b"text/plain", b"hello"
        elif parts[0] == "badjson":
            body = b'{"unterminated": '
        elif parts[0] == "nan":
            body = b'{"ratio": NaN}'
        elif parts[0] == "latin1":
            body = b'{"name": "caf\xe9"}'
        elif parts[0] == "bignum":
            body = b'{ "id" : 123456789012345678901234567890 }'
        elif parts[0] == "user":
            body = json.dumps({"id": parts[1], "org": f"o-{parts[1]}"}).encode()
        elif parts[0] == "echo-query":
            body = json.dumps({"query": scope["query_string"].decode()}).encode()
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _wait_unless_abandoned(seconds: float, receive: Receive) -> bool:
    """Simulated work of `seconds`; False when the client disconnects first."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    work, gone = asyncio.create_task(asyncio.sleep(seconds)), asyncio.create_task(disconnected())
    done, pending = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return work in done


class Origin:
    """A small origin that counts what reaches it: items with versions, its own ETags or none, Vary, tags.

    GET /items/ID             {"id", "version", "lang"}; Cache-Control from ?cc= (default max-age=60),
                              Age from ?age=, a Set-Cookie with ?cookie=
    PUT|POST|DELETE /items/ID bumps the item's version
    GET /own-etag/ID          carries ETag "vN" and answers If-None-Match itself with 304
    GET /stream               two server-sent events; the second only once `release` is set
    """

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        self.writes = 0
        self.failing = False  # answer 503 to everything while set
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        self.hits[f"{method} {path}"] = self.hits.get(f"{method} {path}", 0) + 1
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        kind, _, item = path.strip("/").partition("/")
        if self.failing:
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if kind == "stream":
            await self._stream(send)
            return
        if method in ("PUT", "POST", "DELETE"):
            while (await receive()).get("more_body"):
                pass
            self.writes += 1
            self.versions[item] = self.versions.get(item, 1) + 1
        version = self.versions.setdefault(item, 1)
        query = dict(pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair)
        cache_control = query.get("cc", "max-age=60").replace("%20", " ")
        extra: list[tuple[bytes, bytes]] = [(b"cache-control", cache_control.encode())]
        if "age" in query:
            extra.append((b"age", query["age"].encode()))
        if "cookie" in query:
            extra.append((b"set-cookie", b"session=1"))
        extra += [(b"vary", b"Accept-Language"), (b"surrogate-key", f"item-{item} items".encode())]
        if kind == "own-etag":
            etag = f'"v{version}"'
            extra.append((b"etag", etag.encode()))
            if headers.get("if-none-match") == etag:
                await send({"type": "http.response.start", "status": 304, "headers": extra})
                await send({"type": "http.response.body", "body": b""})
                return
        body = json.dumps({"id": item, "version": version, "lang": headers.get("accept-language")}).encode()
        start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await self.release.wait()
        await send({"type": "http.response.body", "body": b"data: two\n\n"})


class WebSocketOrigin:
    """A WebSocket upstream (Starlette) that reports what it saw.

    /echo             answers each message with itself; the text "close CODE REASON" makes it close so
    /seen             first sends, as JSON, the handshake it received (path, query, headers, offered protocols)
    /refuse           refuses the handshake
    /flood/N/SIZE     sends N binary messages of SIZE bytes, each starting with its number, then closes
    It picks the protocol `chat.v2` when offered, and puts how each session ended in `ended`.
    """

    def __init__(self, name: str = "origin") -> None:
        self.name = name
        self.ended: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.app = Starlette(
            routes=[
                WebSocketRoute("/echo", self._echo),
                WebSocketRoute("/seen", self._echo),
                WebSocketRoute("/refuse", self._refuse),
                WebSocketRoute("/flood/{count:int}/{size:int}", self._flood),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def _echo(self, websocket: WebSocket) -> None:
        offered = websocket.scope["subprotocols"]
        await websocket.accept(subprotocol="chat.v2" if "chat.v2" in offered else None)
        if websocket.url.path == "/seen":
            seen = {
                "origin": self.name,
                "path": websocket.url.path,
                "query": websocket.url.query,
                "headers": [
                    [name.decode("latin-1"), value.decode("latin-1")] for name, value in websocket.scope["headers"]
                ],
                "subprotocols": offered,
            }
            await websocket.send_text(json.dumps(seen))
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.ended.put_nowait((message.get("code", 1005), message.get("reason") or ""))
                return
            text = message.get("text")
            if text is not None and text.startswith("close "):
                _, code, reason = text.split(" ", 2)
                await websocket.close(int(code), reason)
                self.ended.put_nowait((int(code), reason))
                return
            if text is not None:
                await websocket.send_text(text)
            else:
                await websocket.send_bytes(message["bytes"])

    async def _refuse(self, websocket: WebSocket) -> None:
        await websocket.close()

    async def _flood(self, websocket: WebSocket) -> None:
        await websocket.accept()
        count, size = websocket.path_params["count"], websocket.path_params["size"]
        block = b"x" * size
        for number in range(count):
            await websocket.send_bytes(number.to_bytes(8, "big") + block[8:])
        await websocket.close(1000, "done")
