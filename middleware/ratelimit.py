"""RateLimitMiddleware: a GCRA limit per client key, in memory or shared by every replica through Redis.

The generic cell rate algorithm keeps one number per key, the theoretical arrival time (TAT) of the next
request: each allowed request moves it on by the emission interval `per / requests`, and a request is
refused while the TAT lies more than `burst` intervals ahead of now. A limiter answers with the IETF
RateLimit fields (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "name";q=100;w=60` and
`RateLimit: "name";r=<remaining>;t=<seconds until the quota is whole again>`; a refusal is a 429
problem+json with Retry-After as well.

The Redis limiter keeps one key per client, `{prefix}{{client}}`: the client key is the hash tag, so a Redis
Cluster spreads clients over slots and keeps each client's keys on one (give each limit its own prefix). A round
trip costs about as much CPU as proxying a request, so a replica takes cells in batches (leases): one Lua
script moves the TAT on by as many intervals as it asks for and the burst allows, and the replica serves the
next requests from that grant without asking again. A lease starts at one cell and grows while a client spends
its leases in time; it holds at most LEASE_FRACTION of the burst and is served for at most LEASE_FRACTION
of the window (1 s at most), then its rest is dropped. Concurrent requests for one client wait for one round
trip. A refusal is decided by Redis, or by the TAT Redis last told this replica (it only grows, so Redis would
refuse as well), which spares Redis the round trips of a client hammering at a closed door.

Accuracy: a client may get through at most LEASE_FRACTION of the burst more per replica than the limit
allows, and never more than the limit allows in one lease lifetime; a lease dropped unspent costs the client
what it left (at most one lease per replica per lease lifetime). When Redis cannot answer, the request is let
through (fail open) and `on_error` is told once per failed round trip.
"""

import asyncio
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "Decision",
    "Limiter",
    "MemoryLimiter",
    "Quota",
    "RateLimitMiddleware",
    "RedisLimiter",
    "header_key",
    "peer_key",
]

Clock = Callable[[], float]
KeyFunction = Callable[[Scope], str]


@dataclass(frozen=True, slots=True)
class Quota:
    """`requests` per `per` seconds, at most `burst` of them at once (default: all of them); `name` is the
    policy's name in the RateLimit fields."""

    requests: int
    per: float
    burst: int | None = None
    name: str = "default"

    def __post_init__(self) -> None:
        if type(self.requests) is not int or self.requests <= 0:
            raise ValueError(f"requests must be a positive integer, got {self.requests!r}")
        if not self.per > 0:
            raise ValueError(f"per must be a positive number of seconds, got {self.per!r}")
        if self.burst is not None and (type(self.burst) is not int or self.burst <= 0):
            raise ValueError(f"burst must be a positive integer, got {self.burst!r}")
        if not self.name or any(ch in self.name for ch in '"\\'):
            raise ValueError(f"name must be non-empty without quotes or backslashes, got {self.name!r}")

    @property
    def interval(self) -> float:
        return self.per / self.requests

    @property
    def capacity(self) -> int:
        return self.requests if self.burst is None else self.burst


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int  # requests that may follow this one at once
    reset: float  # seconds until the whole burst is available again
    retry_after: float  # seconds until a refused request would be allowed; 0 when allowed


def gcra(quota: Quota, tat: float, now: float) -> tuple[Decision, float]:
    """The decision for a request at `now` and the TAT to keep (unchanged when refused)."""
    interval = quota.interval
    base = max(tat, now)
    allow_at = base - (quota.capacity - 1) * interval  # new TAT less the burst, without adding then taking away
    if now < allow_at:
        return Decision(False, 0, base - now, allow_at - now), tat
    return granted(quota, base, now), base + interval


def granted(quota: Quota, base: float, now: float) -> Decision:
    """The answer to an allowed request at `now` that moves the TAT on from `base`."""
    allow_at = base - (quota.capacity - 1) * quota.interval
    remaining = max(0, int((now - allow_at) / quota.interval + 1e-9))
    return Decision(True, remaining, base + quota.interval - now, 0.0)


class Limiter(Protocol):
    quota: Quota

    async def hit(self, key: str) -> Decision: ...


class MemoryLimiter:
    """One process's limits; keys least recently seen are forgotten past `max_keys` (they start afresh)."""

    def __init__(self, quota: Quota, *, max_keys: int = 100_000, clock: Clock = time.monotonic) -> None:
        self.quota, self.max_keys, self.clock = quota, max_keys, clock
        self._tats: OrderedDict[str, float] = OrderedDict()

    async def hit(self, key: str) -> Decision:
        now = self.clock()
        decision, tat = gcra(self.quota, self._tats.get(key, now), now)
        self._tats[key] = tat
        self._tats.move_to_end(key)
        if len(self._tats) > self.max_keys:
            self._tats.popitem(last=False)
        return decision


# KEYS[1]: the client's TAT. ARGV: now (empty: the server's clock), interval, capacity, cells wanted. Grants as
# many of the wanted cells as the burst allows, moving the TAT on by one interval for each, and returns how many
# with the TAT relative to now. Times are integer microseconds, written with %d: Lua's own number format keeps 14
# digits, and a TAT has 16.
_LEASE_SCRIPT = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local granted = math.min(tonumber(ARGV[4]), math.floor((now - tat) / interval) + capacity)
if granted < 1 then
  return {0, tat - now}
end
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
return {granted, tat - now}
"""
_MICROS = 1_000_000
LEASE_FRACTION = 0.1  # of the burst a lease holds at most, and of the window it lasts at most
MAX_LEASE_SECONDS = 1.0


@dataclass(slots=True)
class _Lease:
    """What one process knows of a client's count in Redis: the TAT it last heard of (which only grows, so a
    request it refuses Redis would refuse too) and the cells granted to it that it has not served yet."""

    tat: float = -math.inf
    cells: int = 0
    expires: float = -math.inf
    batch: int = 1  # cells the last call was granted (at least one)
    waiting: int = 0  # requests waiting for `pending`
    pending: asyncio.Task[bool] | None = None


class RedisLimiter:
    """Limits shared by every replica. `clock` (seconds) is sent with each call; None uses Redis's own clock,
    so replicas whose clocks drift still agree (leases then run on this process's monotonic clock).

    `max_keys` bounds the clients whose leases are kept (one forgotten asks Redis afresh).
    """

    def __init__(
        self,
        quota: Quota,
        *,
        client: Redis,
        prefix: str = "ratelimit:",
        clock: Clock | None = None,
        on_error: Callable[[RedisError], None] | None = None,
        max_keys: int = 100_000,
    ) -> None:
        self.quota, self.prefix, self.clock, self.on_error = quota, prefix, clock, on_error
        self.max_keys = max_keys
        self.max_batch = max(1, int(quota.capacity * LEASE_FRACTION))
        self.lease_seconds = min(MAX_LEASE_SECONDS, quota.per * LEASE_FRACTION)
        self._local_clock = time.monotonic if clock is None else clock
        self._script = client.register_script(_LEASE_SCRIPT)
        self._args = (max(1, round(quota.interval * _MICROS)), quota.capacity)  # the script divides by it
        self._leases: OrderedDict[str, _Lease] = OrderedDict()

    async def hit(self, key: str) -> Decision:
        while True:
            lease = self._lease(key)
            now = self._local_clock()
            if lease.cells and now < lease.expires:
                # the TAT had only the cells served so far been taken; a granted cell is let in whatever the rounding
                base = max(lease.tat - lease.cells * self.quota.interval, now)
                lease.cells -= 1
                return granted(self.quota, base, now)
            refusal, _ = gcra(self.quota, lease.tat, now)
            if not refusal.allowed:
                return refusal
            if lease.pending is None:
                lease.pending = asyncio.ensure_future(self._take(key, lease, self._next_batch(lease, now)))
            lease.waiting += 1
            try:
                answered = await asyncio.shield(lease.pending)
            finally:
                lease.waiting -= 1
            if not answered:
                return Decision(True, self.quota.capacity, 0.0, 0.0)  # fail open: an outage is no reason to refuse

    def _lease(self, key: str) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease()
            if len(self._leases) > self.max_keys:
                self._leases.popitem(last=False)
        else:
            self._leases.move_to_end(key)
        return lease

    def _next_batch(self, lease: _Lease, now: float) -> int:
        """As many cells as the client spent in half a lease time at its last rate, at most twice the last lease
        (a new client starts at one); at least what is waiting for this call; at most `max_batch`, the bound on
        how far a replica may run ahead of Redis. A lease outlived is waste, so it is sized to be spent in time."""
        spent, started = lease.batch - lease.cells, lease.expires - self.lease_seconds
        if now < lease.expires:
            wanted = min(2 * spent, int(spent * self.lease_seconds / 2 / max(now - started, 1e-9)))
        else:
            wanted = spent
        return max(1, min(self.max_batch, max(wanted, lease.waiting + 1)))

    async def _take(self, key: str, lease: _Lease, wanted: int) -> bool:
        """One round trip for a batch of cells; False when Redis could not answer."""
        sent = self._local_clock()
        now = "" if self.clock is None else round(sent * _MICROS)
        try:
            cells, tat = await self._script(
                keys=[f"{self.prefix}{{{_hash_tag_safe(key)}}}"], args=[now, *self._args, wanted]
            )
        except RedisError as exc:
            if self.on_error is not None:
                self.on_error(exc)
            return False
        finally:
            lease.pending = None
        # measured from before the call, so a lease ends early rather than late
        lease.tat, lease.cells, lease.expires = sent + int(tat) / _MICROS, int(cells), sent + self.lease_seconds
        lease.batch = max(1, lease.cells)
        return True


def _hash_tag_safe(key: str) -> str:
    """A brace inside would end the hash tag early and put unrelated clients on one slot."""
    return key.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def peer_key(scope: Scope) -> str:
    """The client's address (behind a trusted proxy, the one it forwarded)."""
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


def header_key(name: str) -> KeyFunction:
    """A request header's value as the key (hashed: the value is the client's and may be any length)."""
    raw = name.lower().encode("latin-1")

    def key(scope: Scope) -> str:
        value = next((value for header, value in scope["headers"] if header == raw), b"")
        return f"h:{hashlib.sha256(value).hexdigest()[:32]}" if value else ""

    return key


class RateLimitMiddleware:
    """Answers 429 once a client's quota is spent; every other answer carries its RateLimit fields.

    - limiter: a MemoryLimiter or a RedisLimiter (anything with `quota` and `async hit(key)`).
    - key: scope -> the client's key, for example `header_key("X-Tenant")` or one reading a verified identity;
      an empty key falls back to the peer address. Default: the peer address.
    """

    def __init__(self, app: ASGIApp, *, limiter: Limiter, key: KeyFunction = peer_key) -> None:
        self.app, self.limiter, self.key = app, limiter, key
        quota = limiter.quota
        self._policy = f'"{quota.name}";q={quota.capacity};w={_seconds(quota.per)}'.encode("latin-1")
        self._name = f'"{quota.name}"'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # a WebSocket handshake counts as one request
            await self.app(scope, receive, send)
            return
        decision = await self.limiter.hit(self.key(scope) or peer_key(scope))
        status = f"{self._name};r={decision.remaining};t={_seconds(decision.reset)}".encode("latin-1")
        if not decision.allowed:
            retry = str(_seconds(decision.retry_after))
            headers = {"Retry-After": retry, "RateLimit-Policy": self._policy.decode(), "RateLimit": status.decode()}
            response = problem_response(429, f"Rate limit reached; retry in {retry} s.", headers=headers)
            await response(scope, receive, send)  # on a handshake: websocket.http.response, or a close
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        fields = ((b"ratelimit-policy", self._policy), (b"ratelimit", status))

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *fields]
            await send(message)

        await self.app(scope, receive, send_with_fields)


def _seconds(value: float) -> int:
    """Delta-seconds are whole (RFC 9110 §10.2.3): rounded up, so a client waiting that long is let in."""
    return max(0, math.ceil(value - 1e-9))
