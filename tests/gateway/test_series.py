"""One worker's lock-free counters and histograms are scraped as prometheus-client's own would be."""

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from asgi_gateway.gateway.series import LockFreeCounter, LockFreeHistogram, Series

OBSERVED = (0.0, 0.001, 0.005, 0.0051, 0.3, 7.5, 10.0, 11.0)  # on, between and past the bounds


def scrape(*, multiprocess: bool) -> list[str]:
    registry = CollectorRegistry()
    series = Series(registry, multiprocess=multiprocess)
    timed = series.histogram("answer_seconds", "Time to answer", ["route"])
    counted = series.counter("answers", "Answers", ["route", "status"])
    for seconds in OBSERVED:
        timed.labels("/a").observe(seconds)
    timed.labels("/b").observe(0.02)
    counted.labels("/a", "2xx").inc()
    counted.labels("/a", "2xx").inc(2)
    counted.labels("/a", "5xx").inc()
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def test_the_scrape_matches_prometheus_clients_own_metrics() -> None:
    assert scrape(multiprocess=False) == scrape(multiprocess=True)


def test_one_worker_gets_the_lock_free_families() -> None:
    series = Series(CollectorRegistry(), multiprocess=False)
    assert isinstance(series.counter("c", "C", ["x"]), LockFreeCounter)
    assert isinstance(series.histogram("h", "H", ["x"]), LockFreeHistogram)


def test_a_lock_free_name_cannot_be_registered_twice() -> None:
    registry = CollectorRegistry()
    Series(registry, multiprocess=False).counter("answers", "Answers", ["route"])
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Series(registry, multiprocess=True).counter("answers", "Answers", ["route"])
