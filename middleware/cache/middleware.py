"""CacheMiddleware: the cache's only I/O driver (lookup, coalesce, forward, store, revalidate, invalidate).

RFC 9111 shared-cache semantics; the rules themselves live in policy.py (storing) and lookup.py (serving),
and this module carries out what they decide. A hit is answered here with the stored ASGI headers plus `Age`
(§5.1) and `Cache-Status` (RFC 9211, status.py), body in one message. A client's If-None-Match /
If-Modified-Since is evaluated against the response it would get (§4.3.2), stored or just fetched, and
answered 304; the upstream is always asked for the whole response, which is what gets stored.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import urljoin, urlsplit

from asgi_gateway.middleware.cache.coalesce import Flights
from asgi_gateway.middleware.cache.keys import UrlKeys, request_vary_values, url_key, url_key_for, vary_variant
from asgi_gateway.middleware.cache.lookup import Action, decide, stale_if_error_allows
from asgi_gateway.middleware.cache.policy import (
    CacheOptions,
    Storable,
    assess,
    conditional_headers,
    refreshed_headers,
    same_validator,
)
from asgi_gateway.middleware.cache.request import CacheRequest, read_request
from asgi_gateway.middleware.cache.status import BYPASS, FRESH_HIT, STALE_HIT, CacheStatus
from asgi_gateway.middleware.cache.store import CacheStore, StoredResponse, StoreUnavailable, VaryIndex
from asgi_gateway.middleware.cache.tee import ResponseTee, send_not_modified
from asgi_gateway.middleware.internal import empty_receive
from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.state import CacheOutcome, RequestState
from asgi_gateway.middleware.types import ASGIApp, Header, Message, Receive, Scope, Send

__all__ = ["CacheMiddleware"]

logger = logging.getLogger("middleware.cache")

_SAFE = frozenset({"OPTIONS", "TRACE"})  # GET and HEAD are served; every other method invalidates (§4.4)
_CLIENT_CONDITIONS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-range", b"if-match", b"if-unmodified-since"}
)
_SOLO_SECONDS = 30.0  # how long a key whose response could not be stored skips coalescing (hit-for-pass)
_SOLO_LIMIT = 4096
_ONLY_IF_CACHED = CacheStatus(detail="only-if-cached")


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
        self._name = options.name.encode()
        self._bypass_status = BYPASS.encode(self._name)

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
        state: RequestState = scope.setdefault("state", {})
        if not self.store.available:
            await self._bypass(scope, receive, send)
            return
        extras = self.key_extras(scope) if self.key_extras is not None else None
        request = read_request(scope, self._url_keys, extras, honour_no_cache=self.options.honour_client_no_cache)
        entry, variant, miss = await self._lookup(request)
        action, age, remaining, reason = decide(request.demands, entry, miss, self.clock())
        if action is Action.SERVE:
            assert entry is not None
            await self._replay(request, entry, age, remaining, "hit", FRESH_HIT, send)
        elif action is Action.SERVE_STALE:
            assert entry is not None
            await self._replay(request, entry, age, remaining, "stale", STALE_HIT, send)
            self._refresh_later(request, variant, entry)
        elif action is Action.ONLY_IF_CACHED_MISS:
            state["cache_status"] = "miss"
            detail = "The response is not stored fresh and the request is only-if-cached"
            headers = {"Cache-Status": _ONLY_IF_CACHED.encode(self._name).decode()}
            await problem_response(504, detail, headers=headers)(scope, receive, send)
        elif not self.store.available:  # the lookup just failed: step aside for this request too
            await self._bypass(scope, receive, send)
        else:
            await self._fill(request, variant, entry, reason, receive, send)

    async def _bypass(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: RequestState = scope["state"]
        state["cache_status"] = "bypass"
        bypass = self._bypass_status

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"cache-status", bypass)]}
            await send(message)

        await self.app(scope, receive, send_with_status)

    async def _lookup(self, request: CacheRequest) -> tuple[StoredResponse | None, str, str]:
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

    async def _replay(
        self,
        request: CacheRequest,
        entry: StoredResponse,
        age: float,
        remaining: float,
        outcome: CacheOutcome,
        status: CacheStatus,
        send: Send,
    ) -> None:
        """Answer with a stored response; `outcome` is what layers outside read in `scope["state"]`."""
        state: RequestState = request.scope["state"]
        state["cache_status"] = outcome
        answer = [(b"age", b"%d" % age), (b"cache-status", status.encode(self._name, remaining))]
        if request.conditions is not None and (start := request.conditions.answer(entry.status, entry.headers)):
            await send_not_modified(start, answer, send)
            return
        await send({"type": "http.response.start", "status": entry.status, "headers": [*entry.headers, *answer]})
        await send({"type": "http.response.body", "body": b"" if request.is_head else entry.body})

    # --- misses: coalesce, then forward -------------------------------------------------------------------

    async def _fill(
        self,
        request: CacheRequest,
        variant: str,
        entry: StoredResponse | None,
        miss: str,
        receive: Receive,
        send: Send,
    ) -> None:
        """One request upstream per key: in this process through a shared future, across replicas
        through the store's fill lock. Keys whose last response could not be stored skip both."""
        key = request.key(variant)
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

    def _can_share(self, request: CacheRequest, shared: StoredResponse) -> bool:
        """Whether another request's fresh result may answer this one."""
        age = shared.age(self.clock())
        return request.matches(shared) and request.demands.accepts(age, shared.lifetime - age)

    async def _replay_shared(self, request: CacheRequest, shared: StoredResponse, miss: str, send: Send) -> None:
        age = shared.age(self.clock())
        status = CacheStatus(fwd=miss, collapsed=True)
        await self._replay(request, shared, age, shared.lifetime - age, "hit", status, send)

    async def _forward(
        self,
        request: CacheRequest,
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
        if entry is not None and send is not None and stale_if_error_allows(entry, now):
            fallback = (entry, send)
        divert = (304,) if conditions else ()
        tee = ResponseTee(options, self.clock, request, send, reason, divert=divert, errors_divert=fallback is not None)
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
        key = request.key(variant)
        if stored is None:
            if isinstance(tee.decision, str):
                if len(self._solo) >= _SOLO_LIMIT:
                    self._solo.clear()
                self._solo[key] = self.clock() + _SOLO_SECONDS
            return None
        self._solo.pop(key, None)
        assert isinstance(tee.decision, Storable)
        await self._store(request, stored, tee.decision.retention)
        return stored

    async def _revalidated(
        self, request: CacheRequest, variant: str, entry: StoredResponse, tee: ResponseTee, send: Send | None
    ) -> StoredResponse | None:
        """A 304 refreshes the stored headers and lifetime; the body stays where it is (RFC 9111 §4.3.4)."""
        if not same_validator(entry, tee.headers):  # a 304 about another representation: ask plainly
            return await self._forward(request, variant, None, "stale", empty_receive(), send)
        merged = refreshed_headers(entry, tee.headers, tee.response_time)
        decision = assess(
            entry.status,
            merged,
            request_time=tee.request_time,
            response_time=tee.response_time,
            authorized=request.authorized,
            request_no_store=request.demands.no_store,
            options=self.options,
        )
        refreshed = None
        if isinstance(decision, Storable):
            refreshed = decision.entry(entry.body, [value for _, value in entry.vary])
            await self._store(request, refreshed, decision.retention)
        if send is not None:
            answer = refreshed or entry
            age = answer.age(self.clock())
            status = CacheStatus(
                fwd=tee.reason,
                fwd_status=304,
                stored=refreshed is not None,
                not_stored=decision if isinstance(decision, str) else None,
            )
            await self._replay(request, answer, age, answer.lifetime - age, "revalidated", status, send)
        return refreshed

    async def _replay_stale(
        self, request: CacheRequest, entry: StoredResponse, send: Send, upstream_status: int | None
    ) -> None:
        age = entry.age(self.clock())
        status = CacheStatus(fwd="stale", fwd_status=upstream_status, detail="stale-if-error")
        await self._replay(request, entry, age, entry.lifetime - age, "stale", status, send)

    async def _store(self, request: CacheRequest, stored: StoredResponse, retention: float) -> None:
        """Write a response, with the index that finds it when it varies, in one store operation, to be kept
        `retention` seconds."""
        if stored.vary:
            fields = tuple(name for name, _ in stored.vary)
            variant = vary_variant(request.head, fields, [value for _, value in stored.vary])
            records: list[tuple[str, StoredResponse | VaryIndex]] = [
                (request.head, VaryIndex(fields)),
                (variant, stored),
            ]
        else:
            records = [(request.head, stored)]
        await self.store.put(request.url, records, retention=retention, tags=stored.tags)

    # --- stale-while-revalidate --------------------------------------------------------------------------

    def _refresh_later(self, request: CacheRequest, variant: str, entry: StoredResponse) -> None:
        """One background refresh per key in this process; the fill lock makes it one across replicas."""
        key = request.key(variant)
        if key in self._refreshes:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(request, variant, entry))
        self._refreshes[key] = task
        task.add_done_callback(lambda _: self._refreshes.pop(key, None))

    async def _refresh(self, request: CacheRequest, variant: str, entry: StoredResponse) -> None:
        token = await self.store.acquire(request.url, variant, self.options.lock_timeout)
        if token is None:
            return
        try:
            await self._forward(request, variant, entry, "stale", empty_receive(), None)
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
                return  # logged by the store; its entries expire when their retention ends
