"""Real ASGI upstreams for tests: they answer what they saw, so a test can assert what crossed the gateway."""

import asyncio
import hashlib
import json

from starlette.types import ASGIApp, Receive, Scope, Send


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
    /text answers text/plain; /badjson answers a broken JSON body; /user/ID answers {"id": ID, "org": "o-ID"};
    /echo-query answers the query string. `in_flight` and `most_in_flight` count concurrent requests;
    `cancelled` counts requests whose client went away before the answer.
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
