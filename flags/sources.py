"""Where definitions come from: memory, a watched file, Redis shared by every replica, and the environment.

Every source keeps its last good definitions: a bad file or an unreachable Redis leaves the flags as they
were and shows up in the source's `error` instead; a bad definition in Redis holds back only its own key
(`RedisSource.invalid`). Sources satisfy `asgi_gateway.flags.resolver.FlagSource`.
"""

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path

import anyio
import anyio.abc
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from watchfiles import Change, awatch

from asgi_gateway.flags.definitions import Definition
from asgi_gateway.flags.documents import definition_from_json, definition_to_json, load_file
from asgi_gateway.flags.listeners import Listeners
from asgi_gateway.flags.registry import Registry

logger = logging.getLogger(__name__)

OVERRIDE_VARIABLE = "FLAGS_OVERRIDE"

Loader = Callable[[Path], Mapping[str, Definition]]


class _Notifying:
    """The listener half of FlagSource, shared by the sources here."""

    def __init__(self) -> None:
        self._listeners: Listeners[[]] = Listeners()
        self._definitions: Mapping[str, Definition] = {}

    @property
    def definitions(self) -> Mapping[str, Definition]:
        return self._definitions

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        return self._listeners.add(listener)

    def _notify(self) -> None:
        self._listeners.notify()


class InMemorySource(_Notifying):
    """Definitions given in code (or already loaded elsewhere, e.g. a route file's `flags:`)."""

    def __init__(self, definitions: Iterable[Definition] | Mapping[str, Definition] = ()) -> None:
        super().__init__()
        self._definitions = _by_key(definitions)

    def set(self, definitions: Iterable[Definition] | Mapping[str, Definition]) -> None:
        self._definitions = _by_key(definitions)
        self._notify()

    def put(self, definition: Definition) -> None:
        self._definitions = {**self._definitions, definition.key: definition}
        self._notify()

    def delete(self, key: str) -> None:
        self._definitions = {k: d for k, d in self._definitions.items() if k != key}
        self._notify()


def _by_key(definitions: Iterable[Definition] | Mapping[str, Definition]) -> dict[str, Definition]:
    values = definitions.values() if isinstance(definitions, Mapping) else definitions
    return {definition.key: definition for definition in values}


class FileSource(_Notifying):
    """A YAML or JSON flag file, reloaded when it changes (once `run()` is running).

    `loader` reads and validates the file; the default is `asgi_gateway.flags.documents.load_file` (native or flagd
    format). A gateway passes its own loader to report errors as file:line. The first load happens here and
    raises, so a bad file stops start-up; later bad versions are logged, kept in `error`, and ignored.
    """

    def __init__(self, path: str | Path, *, loader: Loader | None = None, registry: Registry | None = None) -> None:
        super().__init__()
        self.path = Path(os.path.abspath(path))
        self.error: Exception | None = None
        self._load = loader or partial(load_file, registry=registry)
        self._signature = self._stat()
        self._definitions = dict(self._load(self.path))

    def reload(self) -> bool:
        """Reads the file again; False (and `error` set) when it is bad, keeping the last good definitions."""
        self._signature = self._stat()
        try:
            definitions = dict(self._load(self.path))
        except Exception as exc:  # whatever the loader raises, the last good definitions stay
            logger.error("flag file %s not reloaded, keeping the last good definitions: %s", self.path, exc)
            self.error = exc
            self._notify()
            return False
        self._definitions, self.error = definitions, None
        self._notify()
        return True

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watches the file's directory (editors replace files by renaming) until cancelled.

        Every second without events the file's stat is compared too, which catches symlink swaps
        (Kubernetes ConfigMaps) and changes made before the watch was in place.
        """
        task_status.started()
        async for changes in awatch(
            self.path.parent,
            watch_filter=self._concerns_file,
            recursive=False,
            debounce=200,
            rust_timeout=1000,
            yield_on_timeout=True,
        ):
            if changes or self._stat() != self._signature:
                self.reload()

    def _concerns_file(self, change: Change, path: str) -> bool:
        return path == str(self.path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class RedisSource(_Notifying):
    """Definitions stored in Redis and shared by every replica, updated live over pub/sub.

    Layout: one hash `{prefix}definitions` (field = flag key, value = the definition as JSON, native or a
    single flagd flag) and a channel `{prefix}changes`. `put()` writes a definition and publishes on the
    channel in one transaction; every `run()` hears it and reloads the hash, so a change reaches all
    replicas within milliseconds. While Redis is unreachable the last good definitions stay in force,
    `error` says why, and `run()` reconnects (and reloads, to catch what it missed) every `retry_interval`
    seconds. Without messages it also reloads every `resync_interval` seconds as a safety net.

    A stored definition that does not validate (written around `put()`, e.g. with redis-cli) is skipped
    on its own: its key keeps its last good definition, if it had one, and is listed in `invalid` with
    the reason, while every other key goes on updating. Listeners hear when `invalid` changes too.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "flags:",
        registry: Registry | None = None,
        retry_interval: float = 0.5,
        resync_interval: float = 30.0,
    ) -> None:
        super().__init__()
        self.hash_key = f"{prefix}definitions"
        self.channel = f"{prefix}changes"
        self.error: Exception | None = None
        self._invalid: Mapping[str, str] = {}
        self._client, self._registry = client, registry
        self._retry_interval, self._resync_interval = retry_interval, resync_interval

    @property
    def invalid(self) -> Mapping[str, str]:
        """Stored definitions skipped at the last load: flag key -> why it does not validate."""
        return self._invalid

    async def load(self) -> bool:
        """Reads every definition; False (and `error` set) when Redis cannot be read. A bad definition
        does not fail the load: it is skipped and listed in `invalid`."""
        try:
            stored = await self._client.hgetall(self.hash_key)
        except RedisError as exc:
            self._fail(exc)
            return False
        definitions: dict[str, Definition] = {}
        invalid: dict[str, str] = {}
        for field, text in stored.items():
            key = _text(field)
            try:
                definitions[key] = definition_from_json(key, text, self._registry)
            except Exception as exc:  # whatever one stored value does wrong, only its own key is skipped
                invalid[key] = _problem(exc)
                if key in self._definitions:
                    definitions[key] = self._definitions[key]
        self._log_invalid(invalid)
        if definitions != self._definitions or invalid != self._invalid or self.error is not None:
            self._definitions, self._invalid, self.error = definitions, invalid, None
            self._notify()
        return True

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listens for changes until cancelled; reports started once the first load was tried."""
        started = False
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self.load()  # after subscribing: no change can slip in between
                    if not started:
                        started = True
                        task_status.started()
                    while True:
                        await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._resync_interval)
                        await self.load()
            except RedisError as exc:
                self._fail(exc)
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(self._retry_interval)

    async def put(self, definition: Definition) -> None:
        """Stores a definition (checked against the registry first) and tells every replica."""
        text = definition_to_json(definition)
        definition_from_json(definition.key, text, self._registry)
        async with self._client.pipeline(transaction=True) as pipeline:
            pipeline.hset(self.hash_key, definition.key, text)
            pipeline.publish(self.channel, definition.key)
            await pipeline.execute()

    async def delete(self, key: str) -> None:
        async with self._client.pipeline(transaction=True) as pipeline:
            pipeline.hdel(self.hash_key, key)
            pipeline.publish(self.channel, key)
            await pipeline.execute()

    def _fail(self, exc: Exception) -> None:
        if self.error is None:  # log the start of an outage, not every retry
            logger.error("flag definitions from Redis unavailable, keeping the last good ones: %s", exc)
        self.error = exc
        self._notify()

    def _log_invalid(self, invalid: Mapping[str, str]) -> None:
        """Once per new problem, not at every reload: any change to another flag reloads the whole hash."""
        for key, problem in invalid.items():
            if self._invalid.get(key) != problem:
                kept = "its last good definition stays" if key in self._definitions else "it has none from Redis"
                logger.error("flag definition %r in Redis %s skipped (%s): %s", key, self.hash_key, kept, problem)
        for key in self._invalid.keys() - invalid.keys():
            logger.info("flag definition %r in Redis %s is no longer invalid", key, self.hash_key)


def _text(key: str | bytes) -> str:
    # a field that is not UTF-8 is still named, and then fails validation as a flag key
    return key if isinstance(key, str) else key.decode(errors="backslashreplace")


def _problem(exc: Exception) -> str:
    """One line per validation error (`default: ...`), without pydantic's input echo and links."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, error['loc'])) or '(root)'}: {error['msg']}" for error in exc.errors())
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


def env_overrides(environ: Mapping[str, str] | None = None, variable: str = OVERRIDE_VARIABLE) -> dict[str, str]:
    """`FLAGS_OVERRIDE="new-profile=true,pricing=b"` as `{"new-profile": "true", "pricing": "b"}`, for the
    resolver's `overrides` (local work: pins flags whatever the definitions say)."""
    text = (os.environ if environ is None else environ).get(variable, "")
    overrides: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"{variable}: expected key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides
