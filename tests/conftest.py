import functools
import inspect
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec
from uuid import uuid4

import anyio
import pytest
import redis
import redis.asyncio

DEFAULT_TEST_REDIS = "redis://127.0.0.1:6379/0"
P = ParamSpec("P")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio and aiohttp are asyncio-only


def _in_loop_limit(config: pytest.Config) -> float:
    """Seconds an async test may run inside its event loop: half of pytest-timeout's limit, which also
    covers setup and teardown."""
    return float(config.getoption("timeout") or config.getini("timeout") or 0) / 2


@pytest.fixture
def time_limit(pytestconfig: pytest.Config) -> float:
    """How long this test may take at most. A bound that scheduling alone must never reach (a store's
    call budget, a fill lock's lease) is set to this, so only a test that fails anyway can hit it."""
    return _in_loop_limit(pytestconfig)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Async tests are cancelled inside their own event loop before pytest-timeout fires. Its failure
    interrupts the loop from outside and leaves anyio's runner task inside the test, awaiting forever,
    so every async fixture's teardown, queued behind it, would hang the session."""
    limit = _in_loop_limit(config)
    if limit > 0:
        for item in items:
            if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
                item.obj = _cancelled_after(item.obj, limit)


def _cancelled_after(test: Callable[P, Awaitable[None]], seconds: float) -> Callable[P, Awaitable[None]]:
    @functools.wraps(test)
    async def bounded(*args: P.args, **kwargs: P.kwargs) -> None:
        with anyio.fail_after(seconds, reason=f"still running after {seconds:g}s, its in-loop limit"):
            await test(*args, **kwargs)

    return bounded


def _reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The test Redis: GATEWAY_TEST_REDIS_URL, the local one, or a throwaway redis-server started here."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL", DEFAULT_TEST_REDIS)
    if _reachable(url):
        yield url
        return
    if shutil.which("redis-server") is None:
        pytest.exit(
            f"No Redis at {url} and no redis-server on PATH. Install one (Debian/Ubuntu: apt-get install "
            "redis-server; macOS: brew install redis) or point GATEWAY_TEST_REDIS_URL at a server.",
            returncode=2,
        )
    with tempfile.TemporaryDirectory() as workdir, redis_server(workdir) as (_, url):
        yield url


@contextmanager
def redis_server(workdir: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A throwaway redis-server on a free loopback port, ready when entered; tests may stop or kill it."""
    proc, url = _start_redis_server(workdir)
    try:
        yield proc, url
    finally:
        proc.send_signal(signal.SIGCONT)  # in case a test paused it
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()  # its log reader has reached end of file


def _start_redis_server(workdir: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Ready to accept connections" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its log from filling the pipe
            return proc, f"redis://127.0.0.1:{port}/0"
    raise RuntimeError(f"redis-server exited with {proc.wait()} before it was ready")


@pytest.fixture
def redis_prefix() -> str:
    return f"test:{uuid4().hex}:"


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client for the test Redis; every key under this test's prefix is deleted afterwards."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
