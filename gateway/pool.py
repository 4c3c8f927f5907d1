"""An upstream of several targets: one transport (keep-alive pool) per target, a balancer, health from active
checks and from failed answers, and retries that go to another target.

A pool is itself a `Transport`: callers send it paths (its upstream's base URL is empty) and it prefixes the
chosen target's URL, so proxied requests, fan-out calls, cache revalidations and flag-steered routes all use
it the same way. A target is available when its active checks pass and it is not ejected; when none is, the
pool is in panic and uses them all, as Envoy does (a request might still succeed; refusing it cannot).

Retries happen inside `send`, before an answer is handed back, so no byte of a failed answer ever reached
the client; only idempotent requests with a body held whole are sent again.
"""

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import xxhash

from asgi_gateway.config.pools import RetrySpec, TargetSpec
from asgi_gateway.config.routes import UpstreamSpec
from asgi_gateway.gateway.balance import Balancer, build_balancer
from asgi_gateway.gateway.headers import Field
from asgi_gateway.gateway.health_check import HealthChecker
from asgi_gateway.gateway.upstreams import (
    STATUS_CLASSES,
    Body,
    ReleasingResponse,
    Transport,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    WebSocketOpener,
)
from asgi_gateway.gateway.wrapped import innermost

logger = logging.getLogger("gateway.pool")

SAFE_TO_RETRY = frozenset({"GET", "HEAD"})
MIN_RETRY_CONCURRENCY = 3  # Envoy's floor for a retry budget: a quiet pool may still retry
DEFAULT_RETRIES = RetrySpec()


class TargetEvents(Protocol):
    """Where a pool reports what happens to its targets (metrics)."""

    def attempt(self, upstream: str, target: str, outcome: str) -> None: ...

    def state(self, upstream: str, target: str, available: bool) -> None: ...

    def ejected(self, upstream: str, target: str) -> None: ...


@dataclass(frozen=True, slots=True)
class TargetTransports:
    """A target's transport as requests use it (metered, traced), and the same connection pool bare for checks."""

    observed: Transport
    bare: Transport


@dataclass(eq=False, slots=True)
class Target:
    url: str  # scheme://address[:port][/base-path], where requests go
    host: str  # the Host header: the configured name, also for each address a name resolves to
    weight: int
    transports: TargetTransports
    seed: int = 0
    in_flight: int = 0  # until the answer is closed: a streamed body keeps its target busy
    rotation: int = 0
    healthy: bool = True  # the active checks' verdict
    passes: int = 0  # active checks in a row that passed, or failed
    fails: int = 0
    failures: int = 0  # answers in a row that failed (5xx or none)
    ejected_until: float = 0.0  # loop time; 0 when not ejected
    ejections: int = 0
    comeback: asyncio.TimerHandle | None = None  # the end of an ejection
    requests: int = 0

    def __post_init__(self) -> None:
        self.seed = xxhash.xxh3_64_intdigest(self.url.encode())

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0

    @property
    def available(self) -> bool:
        return self.healthy and not self.ejected

    def describe(self) -> dict[str, Any]:
        state = "ejected" if self.ejected else "healthy" if self.healthy else "unhealthy"
        return {"url": self.url, "weight": self.weight, "state": state, "requests": self.requests}


class Pool:
    """The Transport of an upstream with a pool; `start` opens the targets and begins checking them."""

    def __init__(
        self,
        name: str,
        spec: UpstreamSpec,
        connect: Callable[[], TargetTransports],
        events: TargetEvents,
    ) -> None:
        self.name = name
        self.spec = spec
        self._connect = connect
        self._events = events
        self._balancer: Balancer = build_balancer(spec.balance)
        self._retries = spec.retries or DEFAULT_RETRIES
        self._retry_on = frozenset(self._retries.on)
        self._outliers = spec.outlier_detection
        first = spec.target_specs[0]
        self.host = urlsplit(first.url).netloc  # the Host of requests as callers prepare them
        self.targets: list[Target] = [self._target(target.url, target) for target in spec.target_specs]
        self._available: Sequence[Target] = self.targets
        self._retired: list[Target] = []
        self._in_flight = 0
        self._retrying = 0
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._checker = HealthChecker(spec.health_check, self) if spec.health_check is not None else None

    def _target(self, url: str, spec: TargetSpec) -> Target:
        return Target(url, urlsplit(spec.url).netloc, spec.weight, self._connect())

    # lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        if self.spec.dns_refresh is not None:
            await self.refresh_addresses()
        for target in self.targets:
            await target.transports.observed.start()
            self._events.state(self.name, target.url, target.available)
        if self._checker is not None:
            self._tasks.append(asyncio.create_task(self._checker.run()))
        if self.spec.dns_refresh is not None:
            self._tasks.append(asyncio.create_task(self._refresh_every(self.spec.dns_refresh)))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for target in (*self.targets, *self._retired):
            if target.comeback is not None:
                target.comeback.cancel()
            await target.transports.observed.aclose()
        self._retired = []

    def inherit(self, previous: "Pool") -> None:
        """After a reload: targets that stay keep their health, ejection and counts (not their connections)."""
        known = {target.url: target for target in previous.targets}
        loop = asyncio.get_running_loop()
        for target in self.targets:
            old = known.get(target.url)
            if old is None:
                continue
            target.healthy, target.passes, target.fails = old.healthy, old.passes, old.fails
            target.failures, target.ejections, target.requests = old.failures, old.ejections, old.requests
            if old.ejected_until > loop.time():
                self._eject_until(target, old.ejected_until)
        self._update()

    # sending -----------------------------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        url: str,
        headers: list[Field],
        body: Body,
        *,
        deadline: float | None = None,
        retry: bool | None = None,
    ) -> UpstreamResponse:
        """`url` is the path and query; `retry` says whether the caller may have the request sent twice
        (default: GET and HEAD), which a streamed body never may."""
        retries = self._retries
        may_retry = (method in SAFE_TO_RETRY if retry is None else retry) and isinstance(body, bytes)
        attempts_left = retries.attempts if may_retry else 0
        tried: list[Target] = []
        while True:
            target = self._pick(url, headers, tried)
            retrying = bool(tried)
            if retrying:
                self._retrying += 1
            try:
                response = await self._attempt(target, method, url, headers, body, deadline)
            except UpstreamError as exc:
                if attempts_left and _RETRY_CONDITIONS.get(exc.kind) in self._retry_on and self._budget_allows():
                    attempts_left -= 1
                    tried.append(target)
                    logger.info(
                        "upstream %s: %s failed (%s); sending %s to another target",
                        self.name,
                        target.url,
                        type(exc).__name__,
                        method,
                    )
                    continue
                raise
            finally:
                if retrying:
                    self._retrying -= 1
            if attempts_left and response.status in self._retry_on and self._budget_allows():
                attempts_left -= 1
                tried.append(target)
                await response.close()
                continue
            return response

    async def _attempt(
        self, target: Target, method: str, url: str, headers: list[Field], body: Body, deadline: float | None
    ) -> UpstreamResponse:
        headers = self._headers_for(target, headers)
        target.in_flight += 1
        target.requests += 1
        self._in_flight += 1
        transport = target.transports.observed
        response: UpstreamResponse | None = None
        try:
            if self._retries.per_try_timeout is None:
                response = await transport.send(method, target.url + url, headers, body, deadline=deadline)
            else:
                try:
                    async with asyncio.timeout(self._retries.per_try_timeout):
                        response = await transport.send(method, target.url + url, headers, body, deadline=deadline)
                except TimeoutError as exc:
                    raise UpstreamTimeout(f"no answer within the per-try timeout from {target.url}") from exc
        except UpstreamError as exc:
            self._answered(target, exc.kind, failed=True)
            raise
        finally:
            if response is None:  # no answer: the target is free now; an answer frees it when it is closed
                self._release(target)
        self._answered(target, STATUS_CLASSES.get(response.status // 100, "other"), failed=response.status >= 500)
        return ReleasingResponse(response, lambda: self._release(target))

    def _release(self, target: Target) -> None:
        target.in_flight -= 1
        self._in_flight -= 1

    async def websocket(
        self, url: str, headers: list[Field], *, protocols: Sequence[str], max_message_bytes: int
    ) -> aiohttp.ClientWebSocketResponse:
        """A session on a target the balancer picks; never retried (the handshake is the client's to repeat)."""
        target = self._pick(url, headers, ())
        opener = innermost(target.transports.bare)
        if not isinstance(opener, WebSocketOpener):
            raise UpstreamBadResponse("the upstream's targets take no WebSocket sessions")
        headers = self._headers_for(target, headers)
        target.requests += 1
        try:
            session = await opener.websocket(
                target.url + url, headers, protocols=protocols, max_message_bytes=max_message_bytes
            )
        except UpstreamError as exc:
            self._answered(target, exc.kind, failed=True)
            raise
        self._answered(target, "1xx", failed=False)
        return session

    def _headers_for(self, target: Target, headers: list[Field]) -> list[Field]:
        """Callers prepare fields with the first target's Host; another target gets its own (a copy: fan-out
        calls share one list)."""
        if target.host == self.host:
            return headers
        return [(name, target.host) if name == "host" else (name, value) for name, value in headers]

    def _pick(self, url: str, headers: list[Field], tried: Sequence[Target]) -> Target:
        candidates = self._available
        if tried:
            candidates = [t for t in candidates if t not in tried] or [t for t in self.targets if t not in tried]
            if not candidates:
                candidates = self._available  # every target tried: the least bad is another go
        if len(candidates) == 1:
            return candidates[0]
        picked = self._balancer.pick(candidates, url, headers)
        assert isinstance(picked, Target)
        return picked

    def _budget_allows(self) -> bool:
        allowed = max(MIN_RETRY_CONCURRENCY, self._in_flight * self._retries.budget_percent / 100)
        return self._retrying < allowed

    # health ------------------------------------------------------------------------------------------------

    def _answered(self, target: Target, outcome: str, *, failed: bool) -> None:
        self._events.attempt(self.name, target.url, outcome)
        if not failed:
            target.failures = 0
            return
        target.failures += 1
        outliers = self._outliers
        if outliers is None or target.ejected or target.failures < outliers.consecutive_failures:
            return
        ejected = sum(1 for t in self.targets if t.ejected)
        if ejected >= max(1, len(self.targets) * outliers.max_ejected_percent // 100):
            return
        target.ejections += 1
        loop = asyncio.get_running_loop()
        self._eject_until(target, loop.time() + outliers.ejection * target.ejections)
        self._events.ejected(self.name, target.url)
        logger.warning("upstream %s: %s ejected after %d failures in a row", self.name, target.url, target.failures)
        self._update()

    def _eject_until(self, target: Target, until: float) -> None:
        target.ejected_until = until
        target.comeback = asyncio.get_running_loop().call_at(until, self._return, target)

    def _return(self, target: Target) -> None:
        target.ejected_until, target.failures, target.comeback = 0.0, 0, None
        self._update()

    def checked(self, target: Target, passed: bool) -> None:
        """An active check's result: thresholds in a row turn a target healthy or unhealthy."""
        assert self._checker is not None
        spec = self._checker.spec
        if passed:
            target.passes, target.fails = target.passes + 1, 0
            if not target.healthy and target.passes >= spec.healthy_threshold:
                target.healthy = True
                logger.info("upstream %s: %s is healthy again", self.name, target.url)
                self._update()
        else:
            target.passes, target.fails = 0, target.fails + 1
            if target.healthy and target.fails >= spec.unhealthy_threshold:
                target.healthy = False
                logger.warning("upstream %s: %s failed %d health checks in a row", self.name, target.url, target.fails)
                self._update()

    def _update(self) -> None:
        available = [target for target in self.targets if target.available]
        if not available:
            logger.warning("upstream %s: no target available, sending to all of them (panic)", self.name)
        self._available = available or self.targets
        for target in self.targets:
            self._events.state(self.name, target.url, target.available)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, condition: Callable[["Pool"], bool]) -> None:
        """Returns once `condition` holds, checked again after every change of the targets' states."""
        while not condition(self):
            await self._changed.wait()

    @property
    def panic(self) -> bool:
        return not any(target.available for target in self.targets)

    def describe(self) -> dict[str, Any]:
        return {"panic": self.panic, "targets": [target.describe() for target in self.targets]}

    # addresses ---------------------------------------------------------------------------------------------

    async def refresh_addresses(self) -> None:
        """Each address a target's host name resolves to becomes a target; targets whose address stays keep
        their state, those gone are closed. A failed resolution keeps the targets as they are."""
        wanted: dict[str, TargetSpec] = {}
        for spec in self.spec.target_specs:
            try:
                urls = await _resolved_urls(spec.url)
            except OSError as exc:
                logger.warning("upstream %s: cannot resolve %s (%s); keeping its targets", self.name, spec.url, exc)
                urls = [target.url for target in self.targets if target.host == urlsplit(spec.url).netloc]
            wanted |= dict.fromkeys(urls, spec)
        current = {target.url: target for target in self.targets}
        if set(wanted) == set(current):
            return
        targets: list[Target] = []
        for url, spec in wanted.items():
            target = current.pop(url, None)
            if target is None:
                target = self._target(url, spec)
                if self._tasks:
                    await target.transports.observed.start()
            targets.append(target)
        for gone in current.values():
            self._retired.append(gone)
        logger.info("upstream %s: targets now %s", self.name, ", ".join(wanted))
        self.targets = targets
        await self._close_idle_retired()
        self._update()

    async def _close_idle_retired(self) -> None:
        idle = [target for target in self._retired if not target.in_flight]
        self._retired = [target for target in self._retired if target.in_flight]
        for target in idle:
            await target.transports.observed.aclose()

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.refresh_addresses()

    def probes(self) -> Iterable[tuple[Target, Transport]]:
        return [(target, target.transports.bare) for target in self.targets]


async def _resolved_urls(url: str) -> list[str]:
    """The URL once per address its host name resolves to (the event loop's getaddrinfo); an address as is."""
    parts = urlsplit(url)
    host = parts.hostname
    assert host is not None  # asgi_gateway.config.pools.origin_url
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [url]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = dict.fromkeys(str(info[4][0]) for info in found)
    return [
        parts._replace(netloc=f"[{address}]:{port}" if ":" in address else f"{address}:{port}").geturl().rstrip("/")
        for address in addresses
    ]


# The `retries.on` condition each failure meets: a reset is a dropped connection, a connect failure any other
# failure to reach the target.
_RETRY_CONDITIONS = {"disconnected": "reset", "timeout": "timeout", "unreachable": "connect-failure"}
