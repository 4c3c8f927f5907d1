"""Sources: a watched file and Redis shared by replicas; both keep their last good definitions."""

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from asgi_gateway.flags import Definition, EvaluationContext, FlagDefinition, Reason, Registry, Resolution, Resolver
from asgi_gateway.flags.sources import FileSource, RedisSource
from tests.conftest import redis_server

pytestmark = pytest.mark.anyio

FLAG_FILE = "flags:\n  limit: {{type: int, default: {limit}}}\n"


def signal(condition: Callable[[], bool]) -> tuple[asyncio.Event, Callable[..., None]]:
    """An event and a listener that sets it once `condition` holds."""
    event = asyncio.Event()

    def listener(*_: object) -> None:
        if condition():
            event.set()

    return event, listener


def resolves_to(resolver: Resolver, key: str, value: object) -> Callable[[], bool]:
    return lambda: resolver.evaluate(key, EvaluationContext()).value == value


def write_atomically(path: Path, text: str) -> None:
    """How editors and deploy tools replace a file: write beside it, then rename over it."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


async def test_a_changed_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text(FLAG_FILE.format(limit=1))
    source = FileSource(path)
    resolver = Resolver(sources=[source])
    context = EvaluationContext()
    assert resolver.evaluate("limit", context).value == 1
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        for limit, write in [(2, write_atomically), (3, lambda p, text: p.write_text(text))]:
            updated, listener = signal(resolves_to(resolver, "limit", limit))
            unsubscribe = resolver.subscribe(listener)
            write(path, FLAG_FILE.format(limit=limit))
            with anyio.fail_after(10):
                await updated.wait()
            unsubscribe()
        tg.cancel_scope.cancel()
    assert resolver.evaluate("limit", context) == Resolution(3, Reason.STATIC, "3")


async def test_a_bad_file_keeps_the_last_good_definitions(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text(FLAG_FILE.format(limit=1))
    source = FileSource(path)
    resolver = Resolver(sources=[source])
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        failed, listener = signal(lambda: source.error is not None)
        source.subscribe(listener)
        write_atomically(path, FLAG_FILE.format(limit='"many"'))
        with anyio.fail_after(10):
            await failed.wait()
        assert isinstance(source.error, ValidationError)
        assert "('flags', 'limit', 'default')" in str(source.error.errors()[0]["loc"])
        assert resolver.evaluate("limit", EvaluationContext()).value == 1
        recovered, listener = signal(lambda: source.error is None)
        source.subscribe(listener)
        write_atomically(path, FLAG_FILE.format(limit=4))
        with anyio.fail_after(10):
            await recovered.wait()
        tg.cancel_scope.cancel()
    assert resolver.evaluate("limit", EvaluationContext()).value == 4


def test_a_bad_file_at_start_up_raises(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  limit: {type: int}\n")
    with pytest.raises(ValidationError, match="needs a default"):
        FileSource(path)


def test_the_loader_is_injectable(tmp_path: Path) -> None:
    """The gateway passes its own loader (file:line errors); a missing file is its error too."""
    path = tmp_path / "routes.yaml"
    path.write_text("anything")
    seen: list[Path] = []

    def loader(given: Path) -> Mapping[str, Definition]:
        seen.append(given)
        if not given.exists():
            raise ValueError(f"{given}: cannot read")
        return {"limit": FlagDefinition(key="limit", type="int", default=9)}

    source = FileSource(path, loader=loader)
    path.unlink()
    assert source.reload() is False
    assert (str(source.error), seen) == (f"{path}: cannot read", [path, path])
    assert source.definitions == {"limit": FlagDefinition(key="limit", type="int", default=9)}


@asynccontextmanager
async def running(*sources: RedisSource) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for source in sources:
            await tg.start(source.run)
        yield
        tg.cancel_scope.cancel()


def limit(value: int, **rules: Any) -> FlagDefinition:
    return FlagDefinition(key="limit", type="int", default=value, **rules)


@pytest.mark.integration
async def test_a_change_in_redis_reaches_every_replica(redis_url: str, redis_prefix: str) -> None:
    registry = Registry()
    flag = registry.int("limit", default=0)
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(2)]
    sources = [RedisSource(client, prefix=redis_prefix, registry=registry) for client in clients]
    replicas = [Resolver(registry, sources=[source]) for source in sources]
    vip = EvaluationContext("u-vip")
    try:
        async with running(*sources):
            assert replicas[1].details(flag, vip).error_code == "FLAG_NOT_FOUND"
            updated, listener = signal(lambda: all(r.resolve(flag, vip) == 50 for r in replicas))
            for replica in replicas:
                replica.subscribe(listener)
            await sources[0].put(limit(5, rules=[{"users": ["u-vip"], "value": 50}]))
            with anyio.fail_after(1):  # "every replica picks it up within a second"
                await updated.wait()
            assert [r.details(flag, vip) for r in replicas] == [Resolution(50, Reason.TARGETING_MATCH, "50")] * 2
            removed, listener = signal(lambda: all(r.details(flag, vip).error_code is not None for r in replicas))
            for replica in replicas:
                replica.subscribe(listener)
            await sources[0].delete("limit")
            with anyio.fail_after(1):
                await removed.wait()
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.integration
async def test_put_refuses_a_definition_that_does_not_fit_the_code(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    registry = Registry()
    registry.bool("limit", default=False)
    source = RedisSource(redis_client, prefix=redis_prefix, registry=registry)
    with pytest.raises(ValidationError, match="declared in code as bool"):
        await source.put(limit(3))
    assert await redis_client.hgetall(source.hash_key) == {}


@pytest.mark.integration
async def test_a_bad_definition_in_redis_keeps_the_last_good_one(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    source = RedisSource(redis_client, prefix=redis_prefix)
    await source.put(limit(3))
    assert await source.load() is True
    await redis_client.hset(source.hash_key, "limit", '{"type": "int", "default": "three"}')
    assert await source.load() is True
    assert (source.error, dict(source.invalid)) == (
        None,
        {"limit": "default: int flag: expected an integer, got str 'three'"},
    )
    assert source.definitions == {"limit": limit(3)}
    await source.put(limit(4))
    assert await source.load() is True
    assert (dict(source.invalid), source.definitions) == ({}, {"limit": limit(4)})


@pytest.mark.integration
async def test_one_bad_definition_in_redis_stops_no_other_update(
    redis_client: redis.asyncio.Redis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The bad key is skipped and reported once; live updates to every other key keep arriving."""
    source = RedisSource(redis_client, prefix=redis_prefix)
    resolver = Resolver(sources=[source])
    await source.put(FlagDefinition(key="theme", type="str", default="light"))
    async with running(source):
        broken, listener = signal(lambda: "theme" in source.invalid)
        source.subscribe(listener)
        await redis_client.hset(source.hash_key, "theme", '{"type": "str", "default": 7}')
        await redis_client.publish(source.channel, "theme")
        with anyio.fail_after(5):
            await broken.wait()
        for value in (1, 2):
            updated, listener = signal(resolves_to(resolver, "limit", value))
            unsubscribe = resolver.subscribe(listener)
            await source.put(limit(value))
            with anyio.fail_after(5):
                await updated.wait()
            unsubscribe()
    assert dict(source.invalid) == {"theme": "default: str flag: expected a string, got int 7"}
    assert (source.error, resolver.evaluate("theme", EvaluationContext()).value) == (None, "light")
    skipped = [record for record in caplog.records if "skipped" in record.getMessage()]
    assert [record.levelname for record in skipped] == ["ERROR"]  # not once per reload
    assert "'theme'" in skipped[0].getMessage()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (b"theme", b"{not json", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b"theme", b"[1]", "flag 'theme': expected a JSON object"),
        (b"theme", b"\xff", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
        (b"theme", b"[" * 100_000, "RecursionError: maximum recursion depth exceeded while decoding a JSON array"),
        (b"theme", b'{"state": "ENABLED", "variants": {}}', "variants: a flag needs at least one variant"),
        (b"bad key", b'{"type": "int", "default": 1}', "key: String should match pattern"),
        (b"\xfftheme", b'{"type": "int", "default": 1}', "key: String should match pattern"),
    ],
    ids=["not-json", "not-an-object", "not-utf8", "too-deep", "flagd-without-variants", "bad-key", "non-utf8-key"],
)
async def test_whatever_a_stored_value_does_wrong_only_its_key_is_skipped(
    redis_client: redis.asyncio.Redis, redis_prefix: str, field: bytes, value: bytes, problem: str
) -> None:
    source = RedisSource(redis_client, prefix=redis_prefix)
    await source.put(limit(3))
    await redis_client.hset(source.hash_key, field, value)
    assert await source.load() is True
    [(key, reason)] = source.invalid.items()
    assert (key, problem in reason) == (field.decode(errors="backslashreplace"), True)
    assert source.definitions == {"limit": limit(3)}


@pytest.mark.integration
async def test_redis_down_keeps_the_last_good_definitions(tmp_path: Path) -> None:
    with redis_server(str(tmp_path)) as (server, url):
        client = redis.asyncio.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
        source = RedisSource(client, prefix="flags:", retry_interval=0.05)
        resolver = Resolver(sources=[source])
        try:
            async with running(source):
                updated, listener = signal(resolves_to(resolver, "limit", 7))
                resolver.subscribe(listener)
                await source.put(limit(7))
                with anyio.fail_after(5):
                    await updated.wait()
                down, listener = signal(lambda: source.error is not None)
                source.subscribe(listener)
                server.kill()
                with anyio.fail_after(5):
                    await down.wait()
                assert isinstance(source.error, RedisConnectionError)
                assert resolver.evaluate("limit", EvaluationContext()) == Resolution(7, Reason.STATIC, "7")
                assert await source.load() is False
                assert source.definitions == {"limit": limit(7)}
        finally:
            await client.aclose()


@pytest.mark.integration
async def test_redis_unreachable_at_start_up_starts_empty_and_says_why() -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))  # nothing listens there
    source = RedisSource(client, retry_interval=0.05)
    try:
        async with running(source):
            assert (dict(source.definitions), type(source.error)) == ({}, RedisConnectionError)
    finally:
        await client.aclose()
