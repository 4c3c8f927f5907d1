"""CacheMiddleware: the cache's only I/O driver (lookup, coalesce, forward, store, revalidate, invalidate).

RFC 9111 shared-cache semantics; the rules themselves live in policy.py. A hit is answered here with
the stored ASGI headers plus `Age` (§5.1) and `Cache-Status` (RFC 9211), body in one message. A client's
If-None-Match / If-Modified-Since is evaluated against the response it would get (§4.3.2), stored or just
fetched, and answered 304; the upstream is always asked for the whole response, which is what gets stored.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from middleware.auth import identity_of
from middleware.cache.cachecontrol import delta_seconds, parse_cache_control
from middleware.cache.coalesce import Flights
from middleware.cache.keys import (
    UrlKey,
    UrlKeys,
    extras_variant,
    request_vary_values,
    url_key,
    url_key_for,
    vary_variant,
)
from middleware.cache.policy import (
    CacheOptions,
    Storable,
    assess,
    conditional_headers,
    refreshed_headers,
    same_validator,
)
from middleware.cache.store import CacheStore, StoredResponse, StoreUnavailable, VaryIndex
from middleware.conditional import ReadConditions
from middleware.problem import problem_response
from middleware.types import ASGIApp, Header, Message, Receive, Scope, Send

__all__ = ["CacheMiddleware"]

logger = logging.getLogger("middleware.cache")

_SAFE = frozenset({"OPTIONS", "TRACE"})  # GET and HEAD are served; every other method invalidates (§4.4)
_CLIENT_CONDITIONS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-range", b"if-match", b"if-unmodified-since"}
)
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}
_SOLO_SECONDS = 30.0  # how long a key whose response could not be stored skips coalescing (hit-for-pass)
_SOLO_LIMIT = 4096


@dataclass(slots=True)
class _Request:
    """What the cache reads from one GET or HEAD, read once."""

    scope: Scope
    url: UrlKey
    head: str  # the variant the route's extra key parts select
    is_head: bool
    authorized: bool
    conditions: ReadConditions | None = None  # None: not conditional, so never a 304
    only_if_cached: bool = False
    no_cache: bool = False  # the client's freshness demands below are set only when honoured
    no_store: bool = False
    max_age: int | None = None
    min_fresh: int | None = None

    @property
    def demanding(self) -> bool:
        return self.no_cache or self.max_age is not None or self.min_fresh is not None

    def accepts(self, age: float, ttl: float) -> bool:
        """Fresh, and fresh enough for the client's honoured directives (RFC 9111 §5.2.1)."""
        return (
            ttl > 0
            and not self.no_cache
            and (self.max_age is None or age <= self.max_age)
            and (self.min_fresh is None or ttl >= self.min_fresh)
        )

    def matches(self, entry: StoredResponse) -> bool:
        """The request's varied header values equal those the entry was stored for (§4.1)."""
        if not entry.vary:
            return True
        fields = [name for name, _ in entry.vary]
        return request_vary_values(self.scope, fields) == tuple(value for _, value in entry.vary)


class CacheMiddleware:
    """An RFC 9111 shared cache in front of `app`, storing in `store`.

    `key_extras(scope)` adds a part to every key (for example a resolved flag variant), or returns None.
    `clock` gives wall-clock seconds (Date and Age arithmetic); tests inject their own.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: CacheStore,
        options: CacheOptions | None = None,
        key_extras: Callable[[Scope], str | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.store = store
        self.options = options = options if options is not None else CacheOptions()
        self.key_extras = key_extras
        self.clock = clock
        self._url_keys = UrlKeys(options.keys)
        self._flights: Flights[StoredResponse] = Flights()
        self._refreshes: dict[str, asyncio.Task[None]] = {}
        self._solo: dict[str, float] = {}
        self._hit = f"{options.name}; hit; ttl=".encode()
        self._bypass = f"{options.name}; fwd=bypass".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "GET" or method == "HEAD":
            await self._cached(scope, receive, send)
        elif method in _SAFE:
            await self.app(scope, receive, send)
        else:
            await self._invalidating(scope, receive, send)

    async def purge_url(self, url: str) -> int:
        """Remove every stored response for an absolute URL (all variants); raises StoreUnavailable."""
        return await self.store.delete(url_key_for(url, self.options.keys))

    async def purge_prefix(self, path_prefix: str) -> int:
        """Remove every stored response whose raw path starts with `path_prefix`."""
        return await self.store.purge_prefix(path_prefix)

    async def purge_tag(self, tag: str) -> int:
        """Remove every stored response whose tags header listed `tag`."""
        return await self.store.purge_tag(tag)

    async def wait_background(self) -> None:
        """Wait for the background refreshes running now (stale-while-revalidate)."""
        while self._refreshes:
            await asyncio.gather(*self._refreshes.values(), return_exceptions=True)

    async def aclose(self, grace: float = 5.0) -> None:
        """Let background refreshes finish for up to `grace` seconds, then cancel the rest."""
        tasks = list(self._refreshes.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- GET and HEAD -------------------------------------------------------------------------------------

    async def _cached(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        if not self.store.available:
            state["cache_status"] = "bypass"
            await self.app(scope, receive, _annotated(send, self._bypass))
            return
        request = self._request(scope)
        entry, variant, miss = await self._lookup(request)
        if entry is not None:
            age = entry.age(self.clock())
            ttl = entry.lifetime - age
            if request.accepts(age, ttl):
                state["cache_status"] = "hit"
                await self._replay(request, entry, age, self._hit + b"%d" % ttl, send)
                return
            if not request.demanding and -ttl < entry.stale_while_revalidate:
                state["cache_status"] = "stale"
                status = self._hit + b"%d; detail=stale-while-revalidate" % ttl
                await self._replay(request, entry, age, status, send)
                self._refresh_later(request, variant, entry)
                return
            miss = "request" if ttl > 0 else "stale"
        if request.only_if_cached:
            state["cache_status"] = "miss"
            detail = "The response is not stored fresh and the request is only-if-cached"
            headers = {"Cache-Status": f"{self.options.name}; detail=only-if-cached"}
            await problem_response(504, detail, headers=headers)(scope, receive, send)
            return
        if not self.store.available:  # the lookup just failed: step aside for this request too
            state["cache_status"] = "bypass"
            await self.app(scope, receive, _annotated(send, self._bypass))
            return
        await self._fill(request, variant, entry, miss, receive, send)

    def _request(self, scope: Scope) -> _Request:
        cache_control: list[str] = []
        if_none_match: list[bytes] = []
        if_modified_since = False
        # A caller verified by an API key sends no Authorization, yet its answers are its own (RFC 9111 §3.5).
        authorized = identity_of(scope) is not None
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"cache-control":
                cache_control.append(value.decode("latin-1"))
            elif name == b"authorization":
                authorized = True
            elif name == b"if-none-match":
                if_none_match.append(value)
            elif name == b"if-modified-since":
                if_modified_since = True
        extras = self.key_extras(scope) if self.key_extras is not None else None
        url = self._url_keys.of(scope, host)
        request = _Request(scope, url, extras_variant(extras), scope["method"] == "HEAD", authorized)
        if if_none_match or if_modified_since:
            request.conditions = ReadConditions(scope["headers"], if_none_match)
        if cache_control:
            directives = parse_cache_control(", ".join(cache_control))
            request.only_if_cached = "only-if-cached" in directives
            if self.options.honour_client_no_cache:
                request.no_cache = "no-cache" in directives
                request.no_store = "no-store" in directives
                request.max_age = delta_seconds(directives, "max-age")
                request.min_fresh = delta_seconds(directives, "min-fresh")
        return request

    async def _lookup(self, request: _Request) -> tuple[StoredResponse | None, str, str]:
        """The stored response for a request (one store read, two when it varies), the variant it lives
        at (or would), and the kind of miss for Cache-Status."""
        record = await self.store.get(request.url, request.head)
        if record is None:
            return None, request.head, "uri-miss"
        if isinstance(record, VaryIndex):
            values = request_vary_values(request.scope, record.fields)
            variant = vary_variant(request.head, record.fields, values)
            record = await self.store.get(request.url, variant)
            if not isinstance(record, StoredResponse) or not request.matches(record):
                return None, variant, "vary-miss"
            return record, variant, ""
        return record, request.head, ""  # stored at the head variant: it does not vary

    async def _replay(self, request: _Request, entry: StoredResponse, age: float, status: bytes, send: Send) -> None:
        answer = [(b"age", b"%d" % age), (b"cache-status", status)]
        if request.conditions is not None and (start := request.conditions.answer(entry.status, entry.headers)):
            await _not_modified(start, answer, send)
            return
        await send({"type": "http.response.start", "status": entry.status, "headers": [*entry.headers, *answer]})
        await send({"type": "http.response.body", "body": b"" if request.is_head else entry.body})

    # --- misses: coalesce, then forward -------------------------------------------------------------------

    async def _fill(
        self,
        request: _Request,
        variant: str,
        entry: StoredResponse | None,
        miss: str,
        receive: Receive,
        send: Send,
    ) -> None:
        """One request upstream per key: in this process through a shared future, across replicas
        through the store's fill lock. Keys whose last response could not be stored skip both."""
        key = f"{request.url.digest}:{variant}"
        if self._solo.get(key, 0.0) > self.clock():
            await self._forward(request, variant, entry, miss, receive, send)
            return
        flight = self._flights.following(key)
        if flight is not None:
            shared = await asyncio.shield(flight)
            if shared is None or not self._can_share(request, shared):
                await self._forward(request, variant, entry, miss, receive, send)
                return
            await self._replay_shared(request, shared, miss, send)
            return
        with self._flights.leading(key) as leading:
            token = await self.store.acquire(request.url, variant, self.options.lock_timeout)
            if token is None:  # another replica is filling: take its answer when it lands
                if await self.store.wait_filled(request.url, variant, self.options.lock_timeout):
                    landed, _, _ = await self._lookup(request)
                    if landed is not None and self._can_share(request, landed):
                        leading.land(landed)
                        await self._replay_shared(request, landed, miss, send)
                        return
                token = ""
            elif token:  # it may have landed between our lookup and the lock
                landed, _, _ = await self._lookup(request)
                if landed is not None and self._can_share(request, landed):
                    await self.store.release(request.url, variant, token)
                    leading.land(landed)
                    await self._replay_shared(request, landed, miss, send)
                    return
            try:
                leading.land(await self._forward(request, variant, entry, miss, receive, send))
            finally:
                if token:
                    await self.store.release(request.url, variant, token)

    def _can_share(self, request: _Request, shared: StoredResponse) -> bool:
        """Whether another request's fresh result may answer this one."""
        age = shared.age(self.clock())
        return request.matches(shared) and request.accepts(age, shared.lifetime - age)

    async def _replay_shared(self, request: _Request, shared: StoredResponse, miss: str, send: Send) -> None:
        request.scope["state"]["cache_status"] = "hit"
        age = shared.age(self.clock())
        status = f"{self.options.name}; fwd={miss}; collapsed; ttl={int(shared.lifetime - age)}".encode()
        await self._replay(request, shared, age, status, send)

    async def _forward(
        self,
        request: _Request,
        variant: str,
        entry: StoredResponse | None,
        reason: str,
        receive: Receive,
        send: Send | None,
    ) -> StoredResponse | None:
        """Send the request upstream as a GET (conditional when `entry` has validators), stream the
        answer to `send` (None: a background refresh) and store it. Returns what was stored."""
        options = self.options
        now = self.clock()
        conditions = conditional_headers(entry) if entry is not None else []
        fallback: tuple[StoredResponse, Send] | None = None  # what stale-if-error would answer, and to whom
        if entry is not None and send is not None and 0 < entry.stale_if_error >= entry.age(now) - entry.lifetime:
            fallback = (entry, send)
        divert = (304,) if conditions else ()
        tee = _Tee(self, request, send, reason, divert=divert, errors_divert=fallback is not None)
        scope = request.scope
        headers = [(k, v) for k, v in scope["headers"] if k not in _CLIENT_CONDITIONS] + conditions
        upstream_scope = {**scope, "method": "GET", "headers": headers}
        try:
            if fallback is not None and options.error_timeout is not None:
                async with asyncio.timeout(options.error_timeout) as deadline:
                    tee.deadline = deadline
                    await self.app(upstream_scope, receive, tee.send)
            else:
                await self.app(upstream_scope, receive, tee.send)
        except Exception:
            if fallback is None or tee.committed:
                raise
            logger.warning("Upstream failed for %s; serving the stored response (stale-if-error)", scope["path"])
            await self._replay_stale(request, *fallback, None)
            return None

        if tee.diverted:
            if tee.status == 304 and entry is not None:
                return await self._revalidated(request, variant, entry, tee, send)
            assert fallback is not None  # only 5xx are diverted besides 304, and only with a fallback
            await self._replay_stale(request, *fallback, tee.status)
            return None
        await tee.finish()
        stored = tee.stored()
        key = f"{request.url.digest}:{variant}"
        if stored is None:
            if isinstance(tee.decision, str):
                if len(self._solo) >= _SOLO_LIMIT:
                    self._solo.clear()
                self._solo[key] = self.clock() + _SOLO_SECONDS
            return None
        self._solo.pop(key, None)
        assert isinstance(tee.decision, Storable)
        await self._store(request, stored, tee.decision.ttl)
        return stored

    async def _revalidated(
        self, request: _Request, variant: str, entry: StoredResponse, tee: "_Tee", send: Send | None
    ) -> StoredResponse | None:
        """A 304 refreshes the stored headers and lifetime; the body stays where it is (RFC 9111 §4.3.4)."""
        if not same_validator(entry, tee.headers):  # a 304 about another representation: ask plainly
            return await self._forward(request, variant, None, "stale", _no_body(), send)
        merged = refreshed_headers(entry, tee.headers, tee.response_time)
        decision = assess(
            entry.status,
            merged,
            request_time=tee.request_time,
            response_time=tee.response_time,
            authorized=request.authorized,
            request_no_store=request.no_store,
            options=self.options,
        )
        refreshed = None
        if isinstance(decision, Storable):
            refreshed = decision.entry(entry.body, [value for _, value in entry.vary])
            await self._store(request, refreshed, decision.ttl)
        if send is not None:
            request.scope["state"]["cache_status"] = "revalidated"
            answer = refreshed or entry
            age = answer.age(self.clock())
            outcome = "stored" if refreshed is not None else f"detail={decision}"
            ttl = int(answer.lifetime - age)
            status = f"{self.options.name}; fwd={tee.reason}; fwd-status=304; {outcome}; ttl={ttl}".encode()
            await self._replay(request, answer, age, status, send)
        return refreshed

    async def _replay_stale(
        self, request: _Request, entry: StoredResponse, send: Send, upstream_status: int | None
    ) -> None:
        request.scope["state"]["cache_status"] = "stale"
        age = entry.age(self.clock())
        forwarded = f"; fwd-status={upstream_status}" if upstream_status is not None else ""
        ttl = int(entry.lifetime - age)
        status = f"{self.options.name}; fwd=stale{forwarded}; ttl={ttl}; detail=stale-if-error".encode()
        await self._replay(request, entry, age, status, send)

    async def _store(self, request: _Request, stored: StoredResponse, ttl: float) -> None:
        """Write a response, with the index that finds it when it varies, in one store operation."""
        if stored.vary:
            fields = tuple(name for name, _ in stored.vary)
            variant = vary_variant(request.head, fields, [value for _, value in stored.vary])
            records: list[tuple[str, StoredResponse | VaryIndex]] = [
                (request.head, VaryIndex(fields)),
                (variant, stored),
            ]
        else:
            records = [(request.head, stored)]
        await self.store.put(request.url, records, ttl=ttl, tags=stored.tags)

    # --- stale-while-revalidate --------------------------------------------------------------------------

    def _refresh_later(self, request: _Request, variant: str, entry: StoredResponse) -> None:
        """One background refresh per key in this process; the fill lock makes it one across replicas."""
        key = f"{request.url.digest}:{variant}"
        if key in self._refreshes:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(request, variant, entry))
        self._refreshes[key] = task
        task.add_done_callback(lambda _: self._refreshes.pop(key, None))

    async def _refresh(self, request: _Request, variant: str, entry: StoredResponse) -> None:
        token = await self.store.acquire(request.url, variant, self.options.lock_timeout)
        if token is None:
            return
        try:
            await self._forward(request, variant, entry, "stale", _no_body(), None)
        except Exception:
            logger.warning("Background refresh of %s failed", request.scope["path"], exc_info=True)
        finally:
            if token:
                await self.store.release(request.url, variant, token)

    # --- unsafe methods -----------------------------------------------------------------------------------

    async def _invalidating(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A successful unsafe request invalidates the stored GET for its URL and for the same-origin
        Location and Content-Location it answers with (RFC 9111 §4.4), before the client hears back."""

        async def send_after_invalidating(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
                await self._invalidate(scope, message.get("headers", []))
            await send(message)

        await self.app(scope, receive, send_after_invalidating)

    async def _invalidate(self, scope: Scope, headers: Sequence[Header]) -> None:
        rules = self.options.keys
        urls = {url_key(scope, rules)}
        host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), "")
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        base = f"{scope['scheme']}://{host}{path}"
        origin = urlsplit(base)[:2]
        for name, value in headers:
            if name in (b"location", b"content-location"):
                target = urljoin(base, value.decode("latin-1"))
                if urlsplit(target)[:2] == origin:
                    urls.add(url_key_for(target, rules))
        for url in urls:
            try:
                await self.store.delete(url)
            except StoreUnavailable:
                return  # logged by the store; its entries expire by their ttl


class _Tee:
    """One upstream response: held until its first body chunk (so the storing decision is known when
    Cache-Status is written), then streamed to the client while a copy is kept for the store. Past
    `max_object_bytes` the copy is dropped and streaming goes on."""

    def __init__(
        self,
        cache: CacheMiddleware,
        request: _Request,
        client: Send | None,
        reason: str,
        *,
        divert: tuple[int, ...],
        errors_divert: bool,
    ) -> None:
        self.cache, self.request, self.client, self.reason = cache, request, client, reason
        self.divert, self.errors_divert = divert, errors_divert
        self.request_time = cache.clock()
        self.response_time = self.request_time
        self.status = 0
        self.headers: list[Header] = []
        self.start: Message | None = None
        self.deadline: asyncio.Timeout | None = None
        self.committed = self.diverted = self.storing = self.complete = False
        self.decision: Storable | str | None = None
        self.chunks: list[bytes] = []
        self.size = 0

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers", []))
            self.response_time = self.cache.clock()
            self.diverted = self.status in self.divert or (self.errors_divert and self.status >= 500)
            self.start = message
            return
        if self.diverted:
            return
        if kind != "http.response.body":
            if self.client is not None:
                await self.client(message)
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        if not self.committed:
            await self._commit(len(body), more)
        if self.storing:
            self.size += len(body)
            if self.size > self.cache.options.max_object_bytes:
                self.storing, self.chunks = False, []
            else:
                self.chunks.append(body)
        self.complete = not more
        if self.client is None:
            return
        if not self.request.is_head:
            await self.client(message)
        elif not more:
            await self.client({"type": "http.response.body", "body": b""})

    async def finish(self) -> None:
        """An app that ended after its start message without a body message gets an empty one."""
        if self.start is not None and not self.committed:
            await self.send({"type": "http.response.body", "body": b""})

    def stored(self) -> StoredResponse | None:
        if not (self.storing and self.complete and isinstance(self.decision, Storable)):
            return None
        values = request_vary_values(self.request.scope, self.decision.vary)
        return self.decision.entry(b"".join(self.chunks), values)

    async def _commit(self, first_chunk: int, more: bool) -> None:
        self.committed = True
        if self.deadline is not None:
            self.deadline.reschedule(None)  # the client is being answered: no falling back now
        options = self.cache.options
        request = self.request
        decision = assess(
            self.status,
            self.headers,
            request_time=self.request_time,
            response_time=self.response_time,
            authorized=request.authorized,
            request_no_store=request.no_store,
            options=options,
        )
        if isinstance(decision, Storable) and _too_large(self.headers, first_chunk, more, options.max_object_bytes):
            decision = "too-large"
        self.decision = decision
        self.storing = isinstance(decision, Storable)
        if self.client is None:
            return
        assert self.start is not None
        request.scope["state"]["cache_status"] = "miss"
        status = f"{options.name}; fwd={self.reason}"
        if self.reason in ("stale", "request"):  # a stored response was there: say how the upstream answered
            status += f"; fwd-status={self.status}"
        status += "; stored" if self.storing else f"; detail={decision}"
        answer = [(b"cache-status", status.encode())]
        if request.conditions is not None and (start := request.conditions.answer(self.status, self.headers)):
            await _not_modified(start, answer, self.client)
            self.client = None  # answered: the body is only read to store it
            return
        await self.client({**self.start, "headers": [*self.headers, *answer]})


def _too_large(headers: Sequence[Header], first_chunk: int, more: bool, limit: int) -> bool:
    """Known too large before streaming: by its first and only chunk, or by its Content-Length."""
    if not more:
        return first_chunk > limit
    length = next((value for name, value in headers if name == b"content-length"), None)
    return length is not None and length.isdigit() and int(length) > limit


async def _not_modified(start: Message, answer: list[Header], send: Send) -> None:
    """A 304 in place of a 200 the cache would send, saying how the cache answered (Age, Cache-Status)."""
    start["headers"] += answer
    await send(start)
    await send(_END)


def _annotated(send: Send, cache_status: bytes) -> Send:
    async def send_with_status(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"cache-status", cache_status)]}
        await send(message)

    return send_with_status


def _no_body() -> Receive:
    """The receive of a request the cache makes itself: an empty body, and no client to disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        never: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        return await never

    return receive
