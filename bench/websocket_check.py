"""WebSocket sessions through the gateway: echoed messages per second through it against a direct connection to
the same upstream, and the gateway's RSS with 1,000 idle sessions open. Bounded: a fixed count of messages per
client, 1,000 sessions, every process stopped at the end.

    python bench/websocket_check.py [--clients 32] [--messages 2000] [--idle 1000]
"""

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = """
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute


async def echo(websocket):
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        await websocket.send(
            {"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")}
        )


app = Starlette(routes=[WebSocketRoute("/echo", echo)])
"""


_drains: list[asyncio.Future[bytes]] = []


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(pid)


async def start(command: Sequence[str], env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    """A uvicorn-served process on port 0, and the port it announced."""
    process = await asyncio.create_subprocess_exec(*command, env=env, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while line := (await process.stderr.readline()).decode():
            if match := re.search(r"Uvicorn running on http://[^:]+:(\d+)", line):
                _drains.append(asyncio.ensure_future(process.stderr.read()))  # keep its log from filling the pipe
                return process, int(match.group(1))
    raise RuntimeError(f"{command[0]} exited before serving")


async def echo_rate(url: str, clients: int, messages: int, payload: bytes) -> float:
    """Messages per second, each client sending one message and awaiting its echo, `messages` times."""
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url) for _ in range(clients)]

        async def run(ws: aiohttp.ClientWebSocketResponse) -> None:
            for _ in range(messages):
                await ws.send_bytes(payload)
                await ws.receive()

        started = time.perf_counter()
        await asyncio.gather(*(run(ws) for ws in sockets))
        elapsed = time.perf_counter() - started
        for ws in sockets:
            await ws.close()
    return clients * messages / elapsed


async def idle_rss(url: str, gateway_pid: int, sessions: int) -> dict[str, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        before = rss_mb(gateway_pid)
        sockets = [await session.ws_connect(url) for _ in range(sessions)]
        for ws in sockets:  # every session relays once, so each holds what a used session holds
            await ws.send_bytes(b"x")
            await ws.receive()
        during = rss_mb(gateway_pid)
        for ws in sockets:
            await ws.close()
    return {
        "rss_before_mb": before,
        "rss_with_sessions_mb": during,
        "per_session_kb": (during - before) * 1024 / sessions,
    }


async def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as work:
        Path(work, "ws_upstream.py").write_text(UPSTREAM)  # noqa: ASYNC240
        env = {
            **os.environ,
            "PYTHONPATH": f"{work}:{ROOT}",
            "GATEWAY_ACCESS_LOG": "off",
            "GATEWAY_WATCH_ROUTES": "false",
        }
        upstream, port = await start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "ws_upstream:app",
                "--port",
                "0",
                "--ws",
                "websockets-sansio",
                "--loop",
                "uvloop",
                "--log-level",
                "info",
                "--no-access-log",
            ],
            env,
        )
        try:
            routes = Path(work, "routes.yaml")
            upstream_spec = f'{{url: "http://127.0.0.1:{port}", pool_size: {args.idle + 64}}}'
            routes.write_text(  # noqa: ASYNC240
                f"upstreams:\n  ws: {upstream_spec}\nroutes:\n  - {{path: /echo, upstream: ws}}\n"
            )
            gateway, gateway_port = await start(
                [sys.executable, "-m", "asgi_gateway.gateway", "run", "--routes", str(routes), "--port", "0"], env
            )
            try:
                payload = b"m" * args.size
                direct = await echo_rate(f"ws://127.0.0.1:{port}/echo", args.clients, args.messages, payload)
                through = await echo_rate(f"ws://127.0.0.1:{gateway_port}/echo", args.clients, args.messages, payload)
                idle = await idle_rss(f"ws://127.0.0.1:{gateway_port}/echo", gateway.pid, args.idle)
            finally:
                gateway.send_signal(signal.SIGTERM)
                await gateway.wait()
        finally:
            upstream.send_signal(signal.SIGTERM)
            await upstream.wait()
    result: dict[str, Any] = {
        "clients": args.clients,
        "messages_per_client": args.messages,
        "message_bytes": args.size,
        "direct_messages_per_s": direct,
        "gateway_messages_per_s": through,
        "ratio": through / direct,
        "idle_sessions": args.idle,
        **idle,
    }
    print(json.dumps(result, indent=2))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "websocket.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
