"""The gateway as users run it: `python -m asgi_gateway.gateway run` in its own process, measured from outside."""

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.servers import bound_socket, gateway_process, serve
from tests.upstreams import Stalling, WebSocketOrigin, echo, streaming

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SIZE = 50 * 1024 * 1024


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


async def test_50_mb_each_way_without_the_gateway_growing(tmp_path: Path) -> None:
    async with serve(echo) as echo_url, serve(streaming(SIZE)) as stream_url:
        routes = tmp_path / "routes.yaml"
        routes.write_text(
            f"""
upstreams:
  echo: {{url: "{echo_url}"}}
  stream: {{url: "{stream_url}"}}
routes:
  - {{path: /upload, upstream: echo}}
  - {{path: /download, upstream: stream}}
"""
        )
        command = [sys.executable, "-m", "asgi_gateway.gateway", "run", "--routes", str(routes)]
        async with (
            gateway_process(*command, env={"GATEWAY_MAX_BODY_BYTES": "0"}) as (process, url),
            httpx.AsyncClient(base_url=url, timeout=60) as client,
        ):
            await client.post("/upload", content=b"warm-up")  # imports and pools settle first
            baseline = memory_kib(process.pid, "VmRSS")

            async def body():
                block = b"u" * 65536
                for _ in range(SIZE // len(block)):
                    yield block

            upload = await client.post("/upload", content=body())
            received = 0
            async with client.stream("GET", "/download") as download:
                async for chunk in download.aiter_raw():
                    received += len(chunk)
            peak = memory_kib(process.pid, "VmHWM")
    assert (upload.json()["body_size"], received) == (SIZE, SIZE)
    assert peak - baseline < 8 * 1024, f"gateway peak RSS grew by {(peak - baseline) / 1024:.1f} MiB"


async def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    upstream = Stalling()
    async with serve(upstream) as url:
        routes = tmp_path / "routes.yaml"
        routes.write_text(f'upstreams:\n  slow: {{url: "{url}"}}\nroutes:\n  - {{path: /slow, upstream: slow}}\n')
        command = [sys.executable, "-m", "asgi_gateway.gateway", "run", "--routes", str(routes)]
        async with gateway_process(*command) as (process, gateway), httpx.AsyncClient(base_url=gateway) as client:
            request = asyncio.create_task(client.get("/slow"))
            await upstream.arrived.wait()
            process.send_signal(signal.SIGTERM)
            upstream.release.set()  # the answer comes only after the gateway was told to stop
            response = await request
            async with asyncio.timeout(10):
                returncode = await process.wait()
    assert (response.status_code, response.text) == (200, "late")
    assert returncode == -signal.SIGTERM  # uvicorn re-raises the signal once it has shut down gracefully


async def test_granian_serves_the_same_app(tmp_path: Path) -> None:
    """HTTP requests and WebSocket sessions alike, on granian's ASGI interface."""
    async with serve(echo) as url, serve(WebSocketOrigin(), ws="websockets-sansio") as ws_url:
        routes = tmp_path / "routes.yaml"
        routes.write_text(
            f'upstreams:\n  echo: {{url: "{url}"}}\n  ws: {{url: "{ws_url}"}}\n'
            "routes:\n  - {path: /echo, upstream: echo}\n"
            '  - {path: "/ws/{rest:path}", upstream: ws, rewrite: "/{rest}"}\n'
        )
        free = bound_socket()
        port = str(free.getsockname()[1])
        free.close()  # granian binds it itself
        command = [
            sys.executable,
            "-m",
            "asgi_gateway.gateway",
            "run",
            "--routes",
            str(routes),
            "--server",
            "granian",
            "--port",
            port,
        ]
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        assert process.stdout is not None
        try:
            async with asyncio.timeout(30):
                while b"Started worker" not in (line := await process.stdout.readline()):  # granian logs on stdout
                    assert line, "granian exited before serving"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                response = await client.get("/echo?x=1")
                health = await client.get("/_gateway/health")
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(f"ws://127.0.0.1:{port}/ws/echo") as ws,
            ):
                await ws.send_str("through granian")
                echoed = (await ws.receive()).data
        finally:
            process.terminate()
            await process.communicate()
    assert (response.status_code, response.json()["query"]) == (200, "x=1")
    assert health.status_code == 200
    assert len(response.headers.get_list("date")) == 1
    assert echoed == "through granian"
