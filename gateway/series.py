"""Counters and histograms for one worker, updated without locks, exposed through prometheus-client.

prometheus-client guards every update with a lock and checks the metric's state on each call, for each of
the four updates of a proxied request (request count and duration, upstream count and duration). With one
worker the event loop is the only writer, so a plain count does: these families keep plain numbers and
hand them to the registry as custom collectors when it is scraped (without the `_created` samples).
Several workers use prometheus-client's own metrics, whose multiprocess mode adds up every worker's files.
"""

from abc import abstractmethod
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Timing(Protocol):
    def observe(self, amount: float) -> None: ...


class CounterFamily(Protocol):
    def labels(self, *labelvalues: str) -> Count: ...


class HistogramFamily(Protocol):
    def labels(self, *labelvalues: str) -> Timing: ...


Child = TypeVar("Child")


class Tally:
    """A count without a lock (also the in-flight count a gauge reads when scraped)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self) -> None:
        self.value -= 1


class Timings:
    """A histogram's bucket counts and sum without a lock; `bounds` ends with +Inf."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bucket whose bound is >= amount
        self.sum += amount


class _LockFreeFamily(Collector, Generic[Child]):
    """A labelled family registered as a custom collector; `describe` lets any registry refuse a clash."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.children: dict[tuple[str, ...], Child] = {}
        registry.register(self)

    def labels(self, *labelvalues: str) -> Child:
        child = self.children.get(labelvalues)
        if child is None:
            child = self.children[labelvalues] = self._new_child()
        return child

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    @abstractmethod
    def _new_child(self) -> Child: ...

    @abstractmethod
    def _family(self) -> Metric: ...


class LockFreeCounter(_LockFreeFamily[Tally]):
    def _new_child(self) -> Tally:
        return Tally()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in self.children.items():
            family.add_metric(values, child.value)
        yield family


class LockFreeHistogram(_LockFreeFamily[Timings]):
    """prometheus-client's default buckets, the last being +Inf."""

    BOUNDS = tuple(float(bound) for bound in Histogram.DEFAULT_BUCKETS)
    _LES = tuple(floatToGoString(bound) for bound in BOUNDS)  # type: ignore[no-untyped-call]

    def _new_child(self) -> Timings:
        return Timings(self.BOUNDS)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in self.children.items():
            cumulative, total = [], 0
            for le, count in zip(self._LES, child.counts, strict=True):
                total += count
                cumulative.append((le, float(total)))
            family.add_metric(values, cumulative, child.sum)
        yield family


class Series:
    """Makes the families of one registry: lock-free for one worker, prometheus-client's own for several."""

    def __init__(self, registry: CollectorRegistry, *, multiprocess: bool) -> None:
        self.registry = registry
        self.multiprocess = multiprocess

    def counter(self, name: str, documentation: str, labelnames: Sequence[str]) -> CounterFamily:
        if self.multiprocess:
            return Counter(name, documentation, labelnames, registry=self.registry)
        return LockFreeCounter(name, documentation, labelnames, self.registry)

    def histogram(self, name: str, documentation: str, labelnames: Sequence[str]) -> HistogramFamily:
        if self.multiprocess:
            return Histogram(name, documentation, labelnames, registry=self.registry)
        return LockFreeHistogram(name, documentation, labelnames, self.registry)
