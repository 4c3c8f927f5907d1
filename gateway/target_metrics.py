"""Per-target series of upstream pools: calls by outcome, availability, ejections.

Targets are labelled by URL, which comes from the route file or from DNS answers for its host names: the
number of series grows with the targets configured, not with requests.
"""

from prometheus_client import Gauge

from asgi_gateway.gateway.series import Count, CounterFamily, Series


class TargetMetrics:
    """A pool's `TargetEvents`, recorded as Prometheus series."""

    def __init__(self, series: Series) -> None:
        self.requests: CounterFamily = series.counter(
            "gateway_upstream_target_requests", "Calls to a pool's target by outcome", ["upstream", "target", "outcome"]
        )
        self.ejections: CounterFamily = series.counter(
            "gateway_upstream_target_ejections", "Targets taken out after failing in a row", ["upstream", "target"]
        )
        # several workers: a target counts as available only while every worker finds it so
        self.available = Gauge(
            "gateway_upstream_target_available",
            "1 while a pool's target takes requests (healthy and not ejected)",
            ["upstream", "target"],
            registry=series.registry,
            multiprocess_mode="livemin",
        )
        self._counted: dict[tuple[str, str, str], Count] = {}

    def attempt(self, upstream: str, target: str, outcome: str) -> None:
        key = (upstream, target, outcome)
        counted = self._counted.get(key)
        if counted is None:
            counted = self._counted[key] = self.requests.labels(upstream, target, outcome)
        counted.inc()

    def state(self, upstream: str, target: str, available: bool) -> None:
        self.available.labels(upstream, target).set(1 if available else 0)

    def ejected(self, upstream: str, target: str) -> None:
        self.ejections.labels(upstream, target).inc()
