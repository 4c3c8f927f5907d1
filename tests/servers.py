"""Real servers for tests: ASGI apps served by uvicorn on a loopback port, in the test's own event loop."""

import asyncio
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import uvicorn
from starlette.types import ASGIApp


def bound_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket on `port` (default: a free one): connections queue in its backlog before the server
    runs."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


@asynccontextmanager
async def serve(
    app: ASGIApp, *, lifespan: Literal["on", "off"] = "off", port: int = 0, ws: Any = "none"
) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (on `port`, or a free one) and yield its base URL; stops the
    server on exit. `ws` is uvicorn's WebSocket protocol: none, or an implementation's name or class."""
    sock = bound_socket(port=port)
    port = sock.getsockname()[1]
    # proxy_headers off as `gateway run` has it: the gateway reads X-Forwarded-* itself, after its peer check
    config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", ws=ws, access_log=False, proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def gateway_process(
    *args: str, env: dict[str, str] | None = None, workers: int = 1
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Run a command that ends in a served gateway on port 0; yield the process and the URL uvicorn reports
    once every worker has started (a worker listens only from then on)."""
    process = await asyncio.create_subprocess_exec(
        *args, stderr=asyncio.subprocess.PIPE, env={**os.environ, "GATEWAY_PORT": "0", **(env or {})}
    )
    assert process.stderr is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        url = await _announced_url(process.stderr, workers)
        drain = asyncio.create_task(process.stderr.read())  # keep its log from filling the pipe
        yield process, url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        if drain is not None:
            await drain


async def _announced_url(stderr: asyncio.StreamReader, workers: int) -> str:
    lines: list[str] = []
    url, started = "", 0
    async with asyncio.timeout(30):
        while line := (await stderr.readline()).decode():
            lines.append(line)
            if match := re.search(r"Uvicorn running on (http://\S+)", line):
                url = match.group(1)
            started += "Application startup complete" in line
            if url and started == workers:
                return url
    raise RuntimeError("the gateway exited before serving:\n" + "".join(lines))
