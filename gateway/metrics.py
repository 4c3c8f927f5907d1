"""Prometheus metrics at `{prefix}/metrics`, with label values taken from config only.

Routes are labelled by their name or template (requests no route matched share one label), upstreams by
name, flags by key and variant: a scan of random URLs cannot grow the number of series. With several
workers, `gateway run` points PROMETHEUS_MULTIPROC_DIR at a shared directory and the exposition adds up
every worker's values (prometheus-client's multiprocess mode).
"""

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.requests import Request
from starlette.responses import Response

from asgi_gateway.config.settings import PROMETHEUS_MULTIPROC_DIR
from asgi_gateway.flags.model import EvaluationContext
from asgi_gateway.flags.resolution import Resolution
from asgi_gateway.gateway.headers import Field
from asgi_gateway.gateway.series import Count, CounterFamily, Series, Tally, Timing
from asgi_gateway.gateway.target_metrics import TargetMetrics
from asgi_gateway.gateway.upstreams import STATUS_CLASSES, Body, Transport, UpstreamError, UpstreamResponse
from asgi_gateway.gateway.websocket import SessionStats
from asgi_gateway.gateway.wrapped import WrappedTransport
from asgi_gateway.middleware.state import RequestState
from asgi_gateway.middleware.types import Scope

UNMATCHED = "(unmatched)"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The gateway's series, in a registry of its own (so several gateways can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        multiprocess = bool(os.environ.get(PROMETHEUS_MULTIPROC_DIR))
        series = Series(registry, multiprocess=multiprocess)
        self.requests = series.counter("gateway_requests", "Requests answered", ["route", "method", "status"])
        self.duration = series.histogram("gateway_request_duration_seconds", "Time to answer", ["route", "method"])
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being answered", registry=registry, multiprocess_mode="livesum"
        )
        # One worker: a plain count the gauge reads when scraped (its own inc/dec take a lock each). Several:
        # the gauge itself, whose value the other workers' scrapes read from the shared files.
        self.in_flight_count: Gauge | Tally = self.in_flight
        if not multiprocess:
            tally = self.in_flight_count = Tally()
            self.in_flight.set_function(lambda: tally.value)
        self.upstream_requests = series.counter(
            "gateway_upstream_requests", "Upstream calls by outcome", ["upstream", "outcome"]
        )
        self.upstream_duration = series.histogram(
            "gateway_upstream_duration_seconds", "Time to an upstream's answer", ["upstream"]
        )
        self.cache_lookups = series.counter("gateway_cache_lookups", "Cache lookups by outcome", ["route", "outcome"])
        self.flag_evaluations = series.counter(
            "gateway_flag_evaluations", "Flag evaluations by variant", ["flag", "variant"]
        )
        self.fanout_calls = series.counter(
            "gateway_fanout_calls", "Fan-out calls by outcome", ["route", "call", "outcome"]
        )
        self.websocket_sessions = Gauge(
            "gateway_websocket_sessions", "Open WebSocket sessions", registry=registry, multiprocess_mode="livesum"
        )
        # counted when a session ends; direction: in (from the client) or out (to the client)
        self.websocket_messages = series.counter(
            "gateway_websocket_messages", "WebSocket messages relayed", ["route", "direction"]
        )
        self.websocket_bytes = series.counter(
            "gateway_websocket_bytes", "WebSocket message bytes relayed", ["route", "direction"]
        )
        self.redis_errors = series.counter("gateway_redis_errors", "Failed Redis calls", ["component"])
        self.reloads = series.counter("gateway_config_reloads", "Route file reloads", ["result"])
        self.targets = TargetMetrics(series)
        self.invalid_flag_definitions = Gauge(
            "gateway_flag_definitions_invalid",
            "Flag definitions in Redis skipped because they do not validate",
            registry=registry,
            multiprocess_mode="livemax",  # every worker reads the same Redis
        )

    def exposition(self) -> bytes:
        return generate_latest(self._scraped())

    def families(self) -> Iterable[Metric]:
        """What a scrape shows: this worker's series, or with several workers everyone's added up."""
        return self._scraped().collect()

    def _scraped(self) -> CollectorRegistry:
        if os.environ.get(PROMETHEUS_MULTIPROC_DIR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return registry
        return self.registry

    async def endpoint(self, request: Request) -> Response:
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)

    def flag_evaluated(self, key: str, context: EvaluationContext, resolution: Resolution[Any]) -> None:
        self.flag_evaluations.labels(key, resolution.label).inc()

    def reloaded(self, result: Mapping[str, Any]) -> None:
        self.reloads.labels("ok" if result.get("ok") else "rejected").inc()

    def redis_failed(self, component: str) -> None:
        self.redis_errors.labels(component).inc()

    def process_ended(self) -> None:
        """A worker's live gauges stop counting once it is gone."""
        if os.environ.get(PROMETHEUS_MULTIPROC_DIR):
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _Children(dict[tuple[str, ...], Count]):
    """A counter family's labelled children by label values, made on first use and kept: a kept one costs
    a dict lookup, labels() a tuple per call (and a lock, with several workers)."""

    def __init__(self, family: CounterFamily) -> None:
        super().__init__()
        self.family = family

    def __missing__(self, labels: tuple[str, ...]) -> Count:
        child = self[labels] = self.family.labels(*labels)
        return child


class RequestMetrics:
    """Records a finished request by route, method and status class, with its latency and what the route
    recorded in `scope["state"]` (cache outcome, fan-out calls)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.in_flight = metrics.in_flight_count
        self.sessions = metrics.websocket_sessions
        self._requests: dict[tuple[str, str, int], tuple[Count, Timing]] = {}  # by route, method, status
        self._lookups = _Children(metrics.cache_lookups)  # by route, cache outcome
        self._fanout_calls = _Children(metrics.fanout_calls)  # by route, call, outcome

    def record(self, scope: Scope, status: int, duration: float) -> None:
        route = getattr(scope.get("route"), "name", None) or UNMATCHED
        method = scope["method"]
        children = self._requests.get((route, method, status)) or self._request_children(route, method, status)
        children[0].inc()
        children[1].observe(duration)
        state: RequestState | None = scope.get("state")
        if not state:
            return
        cache_status = state.get("cache_status")
        if cache_status is not None:
            self._lookups[route, cache_status].inc()
        fanout = state.get("fanout")
        if fanout:
            for call, outcome in fanout.items():
                self._fanout_calls[route, call, outcome].inc()

    def session_ended(self, scope: Scope, stats: SessionStats) -> None:
        route = getattr(scope.get("route"), "name", None) or UNMATCHED
        metrics = self.metrics
        for direction, messages, size in (
            ("in", stats.messages_in, stats.bytes_in),
            ("out", stats.messages_out, stats.bytes_out),
        ):
            metrics.websocket_messages.labels(route, direction).inc(messages)
            metrics.websocket_bytes.labels(route, direction).inc(size)

    def _request_children(self, route: str, method: str, status: int) -> tuple[Count, Timing]:
        """Kept by the request's own method and status, so a request finds them with one lookup; methods
        outside the standard ones share the label OTHER and are not kept (a client could send any number)."""
        label = method if method in _METHODS else "OTHER"
        metrics = self.metrics
        children = (
            metrics.requests.labels(route, label, STATUS_CLASSES.get(status // 100, "other")),
            metrics.duration.labels(route, label),
        )
        if label == method:
            self._requests[route, method, status] = children
        return children


class MeteredTransport(WrappedTransport):
    """Counts each upstream call by outcome (status class, or the kind of failure) and times it."""

    def __init__(self, inner: Transport, *, upstream: str, metrics: Metrics) -> None:
        super().__init__(inner)
        self.upstream = upstream
        self.metrics = metrics
        self._timed = metrics.upstream_duration.labels(upstream)
        self._counted: dict[str, Count] = {}  # outcome -> labelled child

    async def send(
        self, method: str, url: str, headers: list[Field], body: Body, *, deadline: float | None = None
    ) -> UpstreamResponse:
        started = time.perf_counter()
        try:
            response = await self.inner.send(method, url, headers, body, deadline=deadline)
        except UpstreamError as exc:
            self._count(exc.kind)
            raise
        finally:
            self._timed.observe(time.perf_counter() - started)
        self._count(STATUS_CLASSES.get(response.status // 100, "other"))
        return response

    def _count(self, outcome: str) -> None:
        counted = self._counted.get(outcome)
        if counted is None:
            counted = self._counted[outcome] = self.metrics.upstream_requests.labels(self.upstream, outcome)
        counted.inc()
