"""`make bench`: the gateway measured beside nginx, a lean Python proxy and asgiproxy, in one run, on one core.

The system under test runs on CPU 0, wrk and the nginx origin on CPU 1, one worker each. Every round measures
every contender of every scenario once, in an order that rotates between rounds; figures are medians over
rounds, and every figure is also a ratio to the references measured in the same round, since absolute numbers
move by a fifth between runs on shared machines. Results go to bench/results/ and BENCHMARKS.md.

A path is one entry of SCENARIOS: the gateway route it needs, the URL, the request headers, the answer it must
give and the families it is compared to. A target of issue 8 is one entry of TARGETS; a ratio between two of
the gateway's own paths (a 304 against a hit, tracing against none) is one entry of COMPARISONS.
"""

import argparse
import hashlib
import io
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import yaml
from answers import Expect, fetch, problem
from harness import Load, Processes, download, free_port, nginx_counters, processes, run_wrk, wait_ready
from payloads import documents
from report import render_markdown

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
SUT_CPU, LOAD_CPU = 0, 1
PACKAGES = ("asgi-gateway", "aiohttp", "uvicorn", "uvloop", "httptools", "granian", "starlette", "asgiproxy", "redis")
SOURCES = ("gateway", "middleware", "flags", "config")  # what --committed takes from the last commit
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CHECKS = 3  # requests per contender and path whose answers and origin calls are checked before measuring


# what is measured ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contender:
    """One server process: a family (what it is) under one ASGI server (or nginx), in a variant of its settings."""

    family: str
    server: str
    variant: str = ""  # a key of GATEWAY_VARIANTS

    @property
    def name(self) -> str:
        name = self.family if self.family == self.server else f"{self.family}/{self.server}"
        return f"{name} [{self.variant}]" if self.variant else name


ASGI_SERVERS = ("uvicorn", "granian")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One path. `route` is the gateway's route for it (None: only the references are measured)."""

    name: str
    title: str
    url: str
    route: Mapping[str, Any] | None
    compare: tuple[str, ...]  # reference families, each measured beside the gateway and used in its ratios
    headers: tuple[tuple[str, str], ...] = ()
    connections: tuple[int, ...] = (32, 128)
    quick_connections: tuple[int, ...] | None = None  # --quick: these only (default: all; empty: skipped)
    variants: tuple[str, ...] = ("",)  # the gateway's settings variants measured on this path
    quick_variants: tuple[str, ...] | None = None  # --quick: these (default: the first)
    servers: tuple[str, ...] = ASGI_SERVERS  # the ASGI servers the gateway and the Python references run under
    document: str = "/1k"  # the origin's document the answer carries (payloads.documents)
    reference_url: str | None = None  # where the references are asked, when not at `url`
    expect: Expect = "document"  # the gateway's answer, checked before measuring (answers.problem)
    origin_calls: int = 1  # requests the gateway sends the origin per request, checked before measuring


FAMILIES: dict[str, tuple[str, ...]] = {
    "gateway": ASGI_SERVERS,
    "lean": ASGI_SERVERS,
    "asgiproxy": ASGI_SERVERS,
    "nginx": ("nginx",),
    "pure-asgi": ASGI_SERVERS,
    "redis-starlette": ASGI_SERVERS,
}


def _tracing(ratio: float) -> dict[str, str]:
    """OTLP/HTTP to the run's sink (bench/otlp_sink.py), one path per variant so their exports are told apart."""
    return {
        "GATEWAY_OTEL__EXPORTER": "otlp",
        "GATEWAY_OTEL__PROTOCOL": "http/protobuf",
        "GATEWAY_OTEL__TRACES_ENDPOINT": f"{{otlp_sink}}/v1/traces/ratio-{ratio}",
        "GATEWAY_OTEL__SAMPLE_RATIO": str(ratio),
    }


# Settings a gateway variant runs with, on top of the defaults (the runner passes no other GATEWAY_* variable).
# {redis_url}, {redis_prefix} (this run's own) and {otlp_sink} (the sink's base URL) are filled in at start.
GATEWAY_VARIANTS: dict[str, dict[str, str]] = {
    "": {},
    "access log off": {"GATEWAY_ACCESS_LOG": "off"},
    # Redis without the in-process tier in front of it, so every hit is a Redis GET.
    "redis cache": {
        "GATEWAY_REDIS_URL": "{redis_url}",
        "GATEWAY_CACHE__L1_BYTES": "0",
        "GATEWAY_CACHE__REDIS_PREFIX": "{redis_prefix}cache:",
        "GATEWAY_FLAGS__REDIS_PREFIX": "{redis_prefix}flags:",
    },
    "tracing 1.0": _tracing(1.0),
    "tracing 0.0": _tracing(0.0),
}
PROXIES = frozenset({"gateway", "lean", "asgiproxy", "nginx"})  # families with a pool to the origin
BROWSER_HEADERS = (
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip, br"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
)

# The gateway's routes (the upstream `origin` is the nginx origin). Routes other than the plain proxy take the
# origin's 1 KB document under a path of their own, so every path is one route of one route file.
MISS: dict[str, Any] = {"path": "/1k", "methods": ["GET"], "upstream": "origin"}
CACHED: dict[str, Any] = {
    "path": "/cached/1k",
    "methods": ["GET"],
    "upstream": "origin",
    "rewrite": "/1k",
    "cache": {"ttl": 300},
}
# The origin's validators removed, as from an upstream without any: the gateway tags the body itself, and the
# If-None-Match it forwards cannot match the origin's own ETag, so every 304 is the gateway's.
NO_VALIDATORS: dict[str, Any] = {"response": {"remove": ["ETag", "Last-Modified"]}}
TAGGED: dict[str, Any] = {
    "path": "/etag/1k",
    "methods": ["GET"],
    "upstream": "origin",
    "rewrite": "/1k",
    "etag": {},
    "headers": NO_VALIDATORS,
}
TAGGED_CACHED: dict[str, Any] = {**TAGGED, "path": "/etag-cached/1k", "cache": {"ttl": 300}}
FANOUT_CALLS = ("one", "two", "three")
FANOUT: dict[str, Any] = {
    "path": "/fanout/3x1k",
    "fanout": {"calls": {name: {"upstream": "origin", "path": "/1k"} for name in FANOUT_CALLS}},
}
# The same document through a pool of three targets: the origin on three loopback addresses, one keep-alive
# pool each. Its own path, served by the origin as /1k is, so the request differs from the miss only in the pool.
POOL: dict[str, Any] = {"path": "/pool/1k", "methods": ["GET"], "upstream": "pool"}
POOL_ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
STREAM: dict[str, Any] = {
    "path": "/50m",
    "methods": ["GET"],
    "upstream": "origin",
}  # the 50 MB check (stream_check), no scenario
STREAM_BYTES = 50 << 20
STREAM_PACE = 25 << 20  # bytes/s of the slow reader: the gateway must hold back, not buffer what it has not sent
STREAM_GROWTH_MB = 5.0  # issue 8: "without RSS growing by more than a few MB"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "miss-1k",
        "Proxied miss, 1 KB",
        "/1k",
        route=MISS,
        compare=("lean", "asgiproxy", "nginx"),
        headers=BROWSER_HEADERS,
        quick_connections=(32,),
        variants=("", "access log off"),
    ),
    Scenario(
        "miss-64k",
        "Proxied miss, 64 KB",
        "/64k",
        route={"path": "/64k", "methods": ["GET"], "upstream": "origin"},
        compare=("lean", "asgiproxy", "nginx"),
        headers=BROWSER_HEADERS,
        quick_connections=(32,),
        document="/64k",
    ),
    Scenario(
        "cache-memory-1k",
        "Cache hit from the in-process store, 1 KB (`cache: {ttl: 300}`, no Redis), against a pure ASGI app",
        "/cached/1k",
        route=CACHED,
        compare=("pure-asgi",),
        headers=BROWSER_HEADERS,
        connections=(32,),
        reference_url="/1k",
        expect="hit",
        origin_calls=0,
    ),
    Scenario(
        "cache-redis-1k",
        "Cache hit from Redis, 1 KB (the same route, `GATEWAY_CACHE__L1_BYTES=0`), against one Redis GET in Starlette",
        "/cached/1k",
        route=CACHED,
        compare=("redis-starlette",),
        headers=BROWSER_HEADERS,
        connections=(32,),
        variants=("redis cache",),
        servers=("uvicorn",),
        reference_url="/1k",
        expect="hit",
        origin_calls=0,
    ),
    Scenario(
        "etag-1k",
        "Full 200 through an `etag: {}` route, 1 KB (the gateway hashes the body into an ETag)",
        "/etag/1k",
        route=TAGGED,
        compare=(),
        headers=BROWSER_HEADERS,
        connections=(32,),
        servers=("uvicorn",),
    ),
    Scenario(
        "etag-304-1k",
        "Conditional GET answered 304 by the gateway, `etag: {}` route (the origin still sends the body)",
        "/etag/1k",
        route=TAGGED,
        compare=(),
        headers=BROWSER_HEADERS,
        connections=(32,),
        servers=("uvicorn",),
        expect="not modified",
    ),
    Scenario(
        "etag-cache-1k",
        "Full 200 through an `etag: {}` + `cache: {ttl: 300}` route, 1 KB (a cache hit, tagged)",
        "/etag-cached/1k",
        route=TAGGED_CACHED,
        compare=(),
        headers=BROWSER_HEADERS,
        connections=(32,),
        servers=("uvicorn",),
        expect="hit",
        origin_calls=0,
    ),
    Scenario(
        "etag-cache-304-1k",
        "Conditional GET answered 304 by the gateway, `etag: {}` + `cache: {ttl: 300}` route (from the cache entry)",
        "/etag-cached/1k",
        route=TAGGED_CACHED,
        compare=(),
        headers=BROWSER_HEADERS,
        connections=(32,),
        servers=("uvicorn",),
        expect="not modified",
        origin_calls=0,
    ),
    Scenario(
        "fanout-3x1k",
        "Fan-out of three calls to the origin's 1 KB document, merged by name (3 KB of JSON)",
        "/fanout/3x1k",
        route=FANOUT,
        compare=(),
        headers=BROWSER_HEADERS,
        connections=(32, 1),
        quick_connections=(32,),
        servers=("uvicorn",),
        expect="fanout",
        origin_calls=len(FANOUT_CALLS),
    ),
    Scenario(
        "pool-3x1k",
        "Proxied miss, 1 KB, through a pool of three targets (p2c; off: the single-URL miss-1k)",
        POOL["path"],
        route=POOL,
        compare=(),
        headers=BROWSER_HEADERS,
        connections=(32,),
        servers=("uvicorn",),
    ),
    Scenario(
        "one-call-1k",
        "Proxied miss, 1 KB, one connection (the fan-out's single call, for its latency)",
        "/1k",
        route=MISS,
        compare=(),
        headers=BROWSER_HEADERS,
        connections=(1,),
        quick_connections=(),
        servers=("uvicorn",),
    ),
    Scenario(
        "traced-1k",
        "Proxied miss, 1 KB, traced: OTLP/HTTP to a local sink at sample ratio 1.0 and 0.0 (off: miss-1k)",
        "/1k",
        route=MISS,
        compare=(),
        headers=BROWSER_HEADERS,
        connections=(32,),
        variants=("tracing 1.0", "tracing 0.0"),
        quick_variants=("tracing 1.0", "tracing 0.0"),
        servers=("uvicorn",),
    ),
)


@dataclass(frozen=True, slots=True)
class Versus:
    """The other side of a ratio, measured in the same round under the gateway's own server: a reference family
    on the same path, or the gateway itself on another path (`scenario`) or in another settings variant."""

    family: str = "gateway"
    scenario: str = ""  # default: the path of the target or comparison
    variant: str = ""  # the gateway's variant, for family "gateway"

    def of(self, gateway: Contender, measured: Sequence[Contender]) -> Contender | None:
        if self.family != "gateway":
            return reference_for(gateway, self.family, measured)
        other = Contender("gateway", gateway.server, self.variant)
        return other if other in measured else None


# (scenario, connections, contender) -> round -> what wrk measured
Index = dict[tuple[str, int, Contender], dict[int, Load]]


Key = tuple[str, int, Contender]  # (scenario, connections, contender)


def median_ratio(index: Index, mine: Key, theirs: Key, metric: str) -> float | None:
    """Median over rounds of mine / theirs, both measured in the same round."""
    a, b = index.get(mine, {}), index.get(theirs, {})
    ratios = [getattr(a[r], metric) / getattr(b[r], metric) for r in a if r in b and getattr(b[r], metric)]
    return statistics.median(ratios) if ratios else None


def measured_at(index: Index, scenario: str, connections: int) -> list[Contender]:
    return [contender for (name, conns, contender) in index if (name, conns) == (scenario, connections)]


@dataclass(frozen=True, slots=True)
class Target:
    """A goal of issue 8 for the gateway (each server it ran under, in `variant`) on one path at one connection count.

    kind: "rate" (req/s ratio to `versus` >= bound), "cpu" (CPU us/request ratio to `versus` <= bound, or < with
    `strict`), "p99" (p99 ratio to `versus` <= bound), "errors" (errors <= bound), "rss" (peak RSS of all its
    processes, in MB, < bound).
    """

    label: str
    scenario: str
    connections: int
    kind: str
    bound: float
    versus: Versus | None = None
    variant: str = ""
    strict: bool = False

    def check(self, index: Index) -> list[dict[str, Any]]:
        gateways = [
            contender
            for contender in measured_at(index, self.scenario, self.connections)
            if contender.family == "gateway" and contender.variant == self.variant
        ]
        return [self._check(index, gateway) for gateway in gateways]

    def _check(self, index: Index, gateway: Contender) -> dict[str, Any]:
        mine = (self.scenario, self.connections, gateway)
        loads = list(index[mine].values())
        value: float | None = None
        by_cpu: float | None = None  # the rate ratio implied by CPU time per request, on a saturated core
        if self.kind in ("rate", "cpu", "p99"):
            assert self.versus is not None, f"{self.label}: a ratio needs `versus`"
            path = self.versus.scenario or self.scenario
            other = self.versus.of(gateway, measured_at(index, path, self.connections))
            theirs = (path, self.connections, other) if other is not None else None
            if theirs is not None:
                metric = {"rate": "requests_per_second", "cpu": "cpu_us_per_request", "p99": "p99_ms"}[self.kind]
                value = median_ratio(index, mine, theirs, metric)
                if self.kind == "rate":
                    cost = median_ratio(index, mine, theirs, "cpu_us_per_request")
                    by_cpu = 1 / cost if cost else None
        elif self.kind == "errors":
            value = float(sum(load.errors for load in loads))
        elif self.kind == "rss":
            value = max(load.peak_rss_bytes for load in loads) / 2**20
        else:
            raise ValueError(f"unknown target kind {self.kind!r}")
        passed = None
        if value is not None:
            if self.kind == "rate":
                passed = value >= self.bound
            elif self.kind == "rss" or self.strict:
                passed = value < self.bound
            else:
                passed = value <= self.bound
        return {"target": self.label, "gateway": gateway.name, "value": value, "by_cpu": by_cpu, "passed": passed}


MISSES = (("miss-1k", "miss 1 KB"), ("miss-64k", "miss 64 KB"))
ASGIPROXY, LEAN = Versus("asgiproxy"), Versus("lean")
HIT = Versus(scenario="cache-memory-1k")
TARGETS: tuple[Target, ...] = (
    *(Target(f"{title}, 32 conns: >= 1.0x asgiproxy", name, 32, "rate", 1.0, ASGIPROXY) for name, title in MISSES),
    *(Target(f"{title}, 32 conns: >= 0.7x lean", name, 32, "rate", 0.7, LEAN) for name, title in MISSES),
    *(Target(f"{title}, 128 conns: no errors", name, 128, "errors", 0) for name, title in MISSES),
    *(Target(f"{title}, 128 conns: p99 <= 2x lean's", name, 128, "p99", 2.0, LEAN) for name, title in MISSES),
    Target("RSS under load, all processes (miss 64 KB, 128 conns) < 150 MB", "miss-64k", 128, "rss", 150),
    Target("cache hit from memory, 1 KB: >= 0.5x pure ASGI", "cache-memory-1k", 32, "rate", 0.5, Versus("pure-asgi")),
    Target(
        "cache hit from Redis, 1 KB: >= 0.8x redis-starlette",
        "cache-redis-1k",
        32,
        "rate",
        0.8,
        Versus("redis-starlette"),
        variant="redis cache",
    ),
    # "A 304 costs no more than a hit": where there is a hit to compare with. A route without a cache asks the
    # upstream for every 304 and hashes the body, as for its 200 (the same instructions within 0.3 %, callgrind),
    # so its 304 is held to its own 200 within the noise allowance tracing has too; against a memory hit it stays
    # a comparison below.
    Target("304, etag route: CPU/req <= 1.1x its 200's", "etag-304-1k", 32, "cpu", 1.1, Versus(scenario="etag-1k")),
    Target("304, etag + cache route: CPU/req <= a memory hit's", "etag-cache-304-1k", 32, "cpu", 1.0, HIT),
    Target(
        "304, etag + cache route: CPU/req < its 200's (a hit)",
        "etag-cache-304-1k",
        32,
        "cpu",
        1.0,
        Versus(scenario="etag-cache-1k"),
        strict=True,
    ),
    Target(
        "miss through a 3-target pool: CPU/req <= 1.05x the single URL's",
        "pool-3x1k",
        32,
        "cpu",
        1.05,
        Versus(scenario="miss-1k"),
    ),
    Target("fan-out of 3, 32 conns: >= 0.4x the miss rate", "fanout-3x1k", 32, "rate", 0.4, Versus(scenario="miss-1k")),
    Target(
        "tracing at ratio 0.0: CPU/req <= 1.1x tracing off",
        "traced-1k",
        32,
        "cpu",
        1.1,
        Versus(scenario="miss-1k"),
        variant="tracing 0.0",
    ),
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The gateway on one path (in `variant`) against `versus`, per server both ran under, in the same rounds."""

    label: str
    scenario: str
    versus: Versus
    connections: int = 32
    variant: str = ""

    def rows(self, index: Index) -> list[dict[str, Any]]:
        rows = []
        path = self.versus.scenario or self.scenario
        for gateway in measured_at(index, self.scenario, self.connections):
            if gateway.family != "gateway" or gateway.variant != self.variant:
                continue
            other = self.versus.of(gateway, measured_at(index, path, self.connections))
            if other is None:
                continue
            mine, theirs = (self.scenario, self.connections, gateway), (path, self.connections, other)
            a, b = index[mine], index[theirs]
            p50_deltas = [a[r].p50_ms - b[r].p50_ms for r in a if r in b]
            rows.append(
                {
                    "comparison": self.label,
                    "gateway": gateway.name,
                    "versus": f"{other.name} on {path}",
                    "connections": self.connections,
                    "rate": median_ratio(index, mine, theirs, "requests_per_second"),
                    "cpu": median_ratio(index, mine, theirs, "cpu_us_per_request"),
                    "p99": median_ratio(index, mine, theirs, "p99_ms"),
                    "p50_delta_ms": statistics.median(p50_deltas) if p50_deltas else None,
                }
            )
        return rows


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("cache hit from memory / proxied miss", "cache-memory-1k", Versus(scenario="miss-1k")),
    Comparison(
        "cache hit from Redis / proxied miss", "cache-redis-1k", Versus(scenario="miss-1k"), variant="redis cache"
    ),
    Comparison("cache hit from Redis / from memory", "cache-redis-1k", HIT, variant="redis cache"),
    Comparison("200 with a generated ETag / proxied miss", "etag-1k", Versus(scenario="miss-1k")),
    Comparison("304, etag route / its 200", "etag-304-1k", Versus(scenario="etag-1k")),
    Comparison("304, etag route / cache hit from memory", "etag-304-1k", HIT),
    Comparison("304, etag + cache route / its 200 (a hit)", "etag-cache-304-1k", Versus(scenario="etag-cache-1k")),
    Comparison("304, etag + cache route / cache hit from memory", "etag-cache-304-1k", HIT),
    Comparison("200 (hit), etag + cache route / cache hit from memory", "etag-cache-1k", HIT),
    Comparison("fan-out of 3 / proxied miss", "fanout-3x1k", Versus(scenario="miss-1k")),
    Comparison("fan-out of 3 / one proxied call, 1 connection", "fanout-3x1k", Versus(scenario="one-call-1k"), 1),
    Comparison("tracing at ratio 1.0 / tracing off", "traced-1k", Versus(scenario="miss-1k"), variant="tracing 1.0"),
    Comparison("tracing at ratio 0.0 / tracing off", "traced-1k", Versus(scenario="miss-1k"), variant="tracing 0.0"),
)


def contenders_of(scenario: Scenario, quick: bool) -> list[Contender]:
    variants = scenario.variants
    if quick:
        variants = scenario.quick_variants if scenario.quick_variants is not None else scenario.variants[:1]
    gateways = [
        Contender("gateway", server, variant)
        for variant in (variants if scenario.route is not None else ())
        for server in scenario.servers
    ]
    references = [
        Contender(family, server)
        for family in scenario.compare
        for server in FAMILIES[family]
        if server in scenario.servers or server not in ASGI_SERVERS
    ]
    return gateways + references


def url_of(scenario: Scenario, contender: Contender) -> str:
    return scenario.url if contender.family == "gateway" else scenario.reference_url or scenario.url


def reference_for(contender: Contender, family: str, measured: Sequence[Contender]) -> Contender | None:
    """The reference of `family` under the same server as `contender`, else its only variant (nginx)."""
    same = Contender(family, contender.server)
    if same in measured:
        return same
    variants = [other for other in measured if other.family == family]
    return variants[0] if len(variants) == 1 else None


# one measurement, and the summary of all rounds ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    round: int
    scenario: str
    connections: int
    contender: Contender
    load: Load
    upstream_opened: int | None  # connections the origin accepted (proxies only)
    origin_requests: int  # requests the origin served during the run
    warmup_requests: int


@dataclass
class Summary:
    """Medians over rounds for one scenario at one connection count, and per-round ratios' medians."""

    scenario: Scenario
    connections: int
    runs: list[Measurement]
    stats: dict[Contender, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for contender in dict.fromkeys(run.contender for run in self.runs):
            mine = [run for run in self.runs if run.contender == contender]
            rates = [run.load.requests_per_second for run in mine]
            opened = [run.upstream_opened for run in mine if run.upstream_opened is not None]
            self.stats[contender] = {
                "requests_per_second": statistics.median(rates),
                "spread_pct": 100 * (max(rates) - min(rates)) / statistics.median(rates) if rates[0] else 0.0,
                "p50_ms": statistics.median(run.load.p50_ms for run in mine),
                "p99_ms": statistics.median(run.load.p99_ms for run in mine),
                "cpu_us_per_request": statistics.median(run.load.cpu_us_per_request for run in mine),
                "errors": sum(run.load.errors for run in mine),
                "requests": sum(run.load.requests for run in mine),
                "peak_rss_mb": max(run.load.peak_rss_bytes for run in mine) / 2**20,
                "peak_process_rss_mb": max(run.load.peak_process_rss_bytes for run in mine) / 2**20,
                "upstream_opened": statistics.median(opened) if opened else None,
                "origin_calls_per_request": statistics.median(
                    run.origin_requests / run.load.requests if run.load.requests else 0.0 for run in mine
                ),
                "rounds": len(mine),
            }

    @property
    def contenders(self) -> list[Contender]:
        return list(self.stats)

    def ratio(self, contender: Contender, family: str, metric: str) -> float | None:
        """Median over rounds of contender / reference, both measured in the same round."""
        reference = reference_for(contender, family, self.contenders)
        if reference is None or reference == contender:
            return None
        ratios = []
        for round_ in {run.round for run in self.runs}:
            mine = [getattr(r.load, metric) for r in self.runs if r.round == round_ and r.contender == contender]
            theirs = [getattr(r.load, metric) for r in self.runs if r.round == round_ and r.contender == reference]
            if mine and theirs and theirs[0]:
                ratios.append(mine[0] / theirs[0])
        return statistics.median(ratios) if ratios else None


# the run ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int
    seconds: int
    warmup: int
    quick: bool
    committed: bool
    stream: bool
    scenarios: tuple[Scenario, ...]


STREAM_CHECK = "stream-50m"


def parse_args(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round of short runs (about two minutes)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=int, help="seconds per measured run (default 3, quick 2)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 1)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in SCENARIOS] + [STREAM_CHECK],
        help="only these (the 50 MB streaming check is " + STREAM_CHECK + ")",
    )
    parser.add_argument(
        "--committed",
        action="store_true",
        help="measure the last commit's " + ", ".join(SOURCES) + " rather than the working tree's",
    )
    args = parser.parse_args(argv)
    chosen = tuple(s for s in SCENARIOS if not args.scenario or s.name in args.scenario)
    return Settings(
        rounds=args.rounds or (1 if args.quick else 3),
        seconds=args.seconds or (2 if args.quick else 3),
        warmup=args.warmup if args.warmup is not None else 1,
        quick=args.quick,
        committed=args.committed,
        stream=not args.scenario or STREAM_CHECK in args.scenario,
        scenarios=chosen,
    )


def connections_of(scenario: Scenario, settings: Settings) -> tuple[int, ...]:
    if settings.quick and scenario.quick_connections is not None:
        return scenario.quick_connections
    return scenario.connections


@dataclass(frozen=True, slots=True)
class Origin:
    url: str
    status_url: str


def write_origin_files(run_dir: Path) -> str:
    """The origin's documents, and the 50 MB file of the streaming check; returns that file's SHA-256."""
    (run_dir / "www").mkdir()
    for path, body in documents().items():
        (run_dir / "www" / path.strip("/")).write_bytes(body)
    (run_dir / "www" / POOL["path"].strip("/")).parent.mkdir()
    (run_dir / "www" / POOL["path"].strip("/")).write_bytes(documents()["/1k"])
    large = random.Random(0).randbytes(STREAM_BYTES)  # incompressible, in case anything on the way compresses
    (run_dir / "www" / STREAM["path"].strip("/")).write_bytes(large)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / "tmp" / name).mkdir(parents=True)
    return hashlib.sha256(large).hexdigest()


def nginx_config(template: str, run_dir: Path, **ports: int) -> Path:
    text = (BENCH / "nginx" / template).read_text().replace("@PREFIX@", str(run_dir))
    for name, port in ports.items():
        text = text.replace(f"@{name.upper()}@", str(port))
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise ValueError(f"unfilled placeholders in {template}: {leftover}")
    path = run_dir / template
    path.write_text(text)
    return path


def write_routes(run_dir: Path, origin: Origin, scenarios: Sequence[Scenario]) -> Path:
    routes: list[Mapping[str, Any]] = []
    for route in [scenario.route for scenario in scenarios] + [STREAM]:
        if route is not None and route not in routes:
            routes.append(route)
    path = run_dir / "routes.yaml"
    port = urlsplit(origin.url).port
    pool = {"targets": [f"http://{address}:{port}" for address in POOL_ADDRESSES]}
    document = {"upstreams": {"origin": {"url": origin.url}, "pool": pool}, "routes": [dict(route) for route in routes]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def committed_sources(run_dir: Path) -> Path:
    """The last commit's packages as asgi_gateway.*, on the gateway's PYTHONPATH, where they are found before the
    editable install's: what is measured then stays put while others edit the tree."""
    archive = subprocess.run(["git", "archive", "HEAD", *SOURCES], cwd=ROOT, capture_output=True, check=True)
    target = run_dir / "src"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target / "asgi_gateway", filter="data")
    return target


def command(contender: Contender, port: int, routes: Path, run_dir: Path, origin_port: int) -> list[str]:
    """How each contender is served: the gateway as users run it, the references with the same server flags."""
    if contender.family == "gateway":
        return [
            str(BIN / "gateway"), "run", "--routes", str(routes), "--port", str(port),
            "--server", contender.server,
        ]  # fmt: skip
    if contender.family == "nginx":
        config = nginx_config("proxy.conf", run_dir, port=port, origin_port=origin_port)
        return ["nginx", "-p", str(run_dir), "-e", str(run_dir / "proxy-error.log"), "-c", str(config)]
    module = {
        "lean": "lean_proxy",
        "asgiproxy": "asgiproxy_app",
        "pure-asgi": "pure_asgi",
        "redis-starlette": "redis_app",
    }
    target = f"{module[contender.family]}:app"
    if contender.server == "uvicorn":  # the flags asgi_gateway.gateway.__main__ passes to uvicorn.run
        return [
            str(BIN / "uvicorn"), target, "--app-dir", str(BENCH), "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--ws", "none", "--lifespan", "on", "--no-access-log",
            "--log-level", "warning", "--no-server-header", "--no-date-header",
        ]  # fmt: skip
    return [
        str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--log-level", "warning", target,
    ]  # fmt: skip


def redis_reachable() -> bool:
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def needs_redis(scenario: Scenario) -> bool:
    variants = {name for variant in scenario.variants for name in GATEWAY_VARIANTS[variant]}
    return "redis-starlette" in scenario.compare or "GATEWAY_REDIS_URL" in variants


def traced(contender: Contender) -> bool:
    return "GATEWAY_OTEL__EXPORTER" in GATEWAY_VARIANTS[contender.variant]


def delete_redis_keys(prefix: str) -> int:
    """The run's own keys (the gateway's cache entries, redis_app's documents if it could not remove them)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


@dataclass
class Bench:
    """One run's processes and what the runner knows about them."""

    settings: Settings
    run_dir: Path
    group: Processes
    origin: Origin
    origin_port: int
    routes: Path
    env: dict[str, str]
    values: dict[str, str]  # what fills GATEWAY_VARIANTS' placeholders
    served: dict[Contender, tuple[int, int]] = field(default_factory=dict)  # contender -> (pid, port)
    headers: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # scenario -> what wrk sends

    def variant_env(self, contender: Contender) -> dict[str, str]:
        return {name: value.format(**self.values) for name, value in GATEWAY_VARIANTS[contender.variant].items()}

    def start(self, contender: Contender, scenario: Scenario) -> None:
        port = free_port()
        pid = self.group.start(
            contender.name,
            command(contender, port, self.routes, self.run_dir, self.origin_port),
            cpu=SUT_CPU,
            cwd=self.run_dir,
            env=self.env | self.variant_env(contender),
            discard_stdout=contender.family == "gateway",  # the access log: written, then dropped
        )
        wait_ready(f"http://127.0.0.1:{port}{url_of(scenario, contender)}", alive=partial(self.group.alive, pid))
        self.served[contender] = (pid, port)
        print(f"started {contender.name} on port {port} (pid {pid})", flush=True)

    def base_url(self, contender: Contender) -> str:
        return f"http://127.0.0.1:{self.served[contender][1]}"

    def check(self, scenario: Scenario) -> None:
        """Every contender answers the path as it must, the gateway asks the origin as often as the path says,
        and a 304 path learns the ETag its requests carry."""
        contenders = contenders_of(scenario, self.settings.quick)
        headers = scenario.headers
        etag = ""
        if scenario.expect == "not modified":
            tags = {fetch(self.base_url(c) + url_of(scenario, c), headers).headers.get("etag") for c in contenders}
            if len(tags) != 1 or None in tags:
                raise RuntimeError(f"{scenario.name}: the gateways gave these ETags for {scenario.url}: {tags}")
            etag = str(tags.pop())
            headers = (*headers, ("If-None-Match", etag))
        self.headers[scenario.name] = headers
        document = documents()[scenario.document]
        calls = tuple(scenario.route["fanout"]["calls"]) if scenario.route and "fanout" in scenario.route else ()
        for contender in contenders:
            url = self.base_url(contender) + url_of(scenario, contender)
            gateway = contender.family == "gateway"
            expect = scenario.expect if gateway else "document"
            expected_calls = CHECKS * (scenario.origin_calls if gateway else int(contender.family in PROXIES))
            fetch(url, headers)  # a cache stores the answer here
            before = nginx_counters(self.origin.status_url)
            for _ in range(CHECKS):
                wrong = problem(fetch(url, headers), expect, document, etag=etag, calls=calls)
                if wrong is not None:
                    raise RuntimeError(f"{contender.name} answered GET {url_of(scenario, contender)} with {wrong}")
            asked = nginx_counters(self.origin.status_url).since(before).requests
            if asked != expected_calls:
                raise RuntimeError(
                    f"{contender.name} asked the origin {asked} times for {CHECKS} requests to "
                    f"{url_of(scenario, contender)}, not {expected_calls}"
                )

    def measure(self, round_: int, scenario: Scenario, connections: int, contender: Contender) -> Measurement:
        pid, port = self.served[contender]
        url = f"http://127.0.0.1:{port}{url_of(scenario, contender)}"
        headers = self.headers[scenario.name]
        warmup = 0
        if self.settings.warmup > 0:
            warm = run_wrk(url, connections=connections, seconds=self.settings.warmup, headers=headers, cpu=LOAD_CPU)
            warmup = warm.requests
        before = nginx_counters(self.origin.status_url)
        load = run_wrk(
            url, connections=connections, seconds=self.settings.seconds, headers=headers, cpu=LOAD_CPU, sample_pid=pid
        )
        origin = nginx_counters(self.origin.status_url).since(before)
        opened = origin.accepts if contender.family in PROXIES else None
        return Measurement(round_, scenario.name, connections, contender, load, opened, origin.requests, warmup)


def measure_all(settings: Settings, run_dir: Path, prefix: str) -> tuple[list[Measurement], dict[str, Any]]:
    """Every round of every path, then the 50 MB streaming check; `extra` holds the notes, the streaming check
    and what the traced gateways exported."""
    extra: dict[str, Any] = {"notes": [], "stream": None, "exports": []}
    scenarios = [scenario for scenario in settings.scenarios if connections_of(scenario, settings)]
    if not redis_reachable():
        skipped = [s for s in scenarios if needs_redis(s)]
        scenarios = [s for s in scenarios if s not in skipped]
        if skipped:
            extra["notes"].append(f"Redis at {REDIS_URL} did not answer: skipped {', '.join(s.name for s in skipped)}.")
    stream_sha256 = write_origin_files(run_dir)
    ports = {"origin": free_port(), "status": free_port(), "sink": free_port()}
    origin = Origin(f"http://127.0.0.1:{ports['origin']}", f"http://127.0.0.1:{ports['status']}/status")
    routes = write_routes(run_dir, origin, scenarios)
    (run_dir / "logs").mkdir()
    env = {name: value for name, value in os.environ.items() if not name.startswith(("GATEWAY_", "OTEL_"))}
    path = [str(committed_sources(run_dir))] if settings.committed else []
    env |= {
        "BENCH_ORIGIN": origin.url,
        "BENCH_REDIS_URL": REDIS_URL,
        "PYTHONPATH": os.pathsep.join([*path, str(BENCH)]),
    }
    env["BENCH_REDIS_PREFIX"] = prefix
    measurements: list[Measurement] = []
    with processes(run_dir / "logs") as group:
        config = nginx_config("origin.conf", run_dir, origin_port=ports["origin"], status_port=ports["status"])
        origin_pid = group.start(
            "origin",
            ["nginx", "-p", str(run_dir), "-e", str(run_dir / "origin-error.log"), "-c", str(config)],
            cpu=LOAD_CPU,
            cwd=run_dir,
            env=os.environ,
        )
        wait_ready(origin.url + "/1k", alive=lambda: group.alive(origin_pid))
        sink = f"http://127.0.0.1:{ports['sink']}"
        sink_argv = [sys.executable, str(BENCH / "otlp_sink.py"), str(ports["sink"])]
        sink_pid = group.start("otlp-sink", sink_argv, cpu=LOAD_CPU, cwd=run_dir, env=env)
        wait_ready(sink + "/stats", alive=partial(group.alive, sink_pid))
        values = {"redis_url": REDIS_URL, "redis_prefix": prefix, "otlp_sink": sink}
        bench = Bench(settings, run_dir, group, origin, ports["origin"], routes, env, values)
        for scenario in scenarios:
            for contender in contenders_of(scenario, settings.quick):
                if contender not in bench.served:
                    bench.start(contender, scenario)
        for scenario in scenarios:
            bench.check(scenario)
        print(f"checked the answers of {len(scenarios)} paths", flush=True)

        for round_ in range(settings.rounds):
            for scenario in scenarios:
                for connections in connections_of(scenario, settings):
                    lineup = contenders_of(scenario, settings.quick)
                    shift = round_ % len(lineup)
                    for contender in lineup[shift:] + lineup[:shift]:
                        measurement = bench.measure(round_, scenario, connections, contender)
                        measurements.append(measurement)
                        print(progress_line(settings, measurement), flush=True)
        extra["headers"] = {name: [list(header) for header in sent] for name, sent in bench.headers.items()}
        extra["exports"] = tracing_exports(bench, measurements, sink)
        if settings.stream:
            extra["stream"] = stream_check(bench, stream_sha256)
    return measurements, extra


def tracing_exports(bench: Bench, measurements: Sequence[Measurement], sink: str) -> list[dict[str, Any]]:
    """What each traced gateway sent the sink. They are stopped first, which flushes the spans they still hold."""
    contenders = [contender for contender in bench.served if traced(contender)]
    for contender in contenders:
        bench.group.stop(bench.served[contender][0])
    with urllib.request.urlopen(sink + "/stats", timeout=5) as response:
        stats: dict[str, dict[str, int]] = json.loads(response.read())
    exports = []
    for contender in contenders:
        endpoint = bench.variant_env(contender)["GATEWAY_OTEL__TRACES_ENDPOINT"]
        counts = stats.get(urlsplit(endpoint).path, {"posts": 0, "bytes": 0, "spans": 0})
        served = sum(m.load.requests + m.warmup_requests for m in measurements if m.contender == contender) + 4 * CHECKS
        exports.append(
            {"contender": contender.name, **counts, "requests": served, "spans_per_request": counts["spans"] / served}
        )
    return exports


def stream_check(bench: Bench, sha256: str) -> dict[str, Any]:
    """A 50 MB body through a fresh gateway/uvicorn: read at full speed, then by a slow reader, while its RSS is
    sampled. A fresh process, so the peak of the load before does not hide the growth."""
    contender = Contender("gateway", "uvicorn")
    port = free_port()
    pid = bench.group.start(
        "gateway-stream-check",
        command(contender, port, bench.routes, bench.run_dir, bench.origin_port),
        cpu=SUT_CPU,
        cwd=bench.run_dir,
        env=bench.env,
        discard_stdout=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/1k", alive=partial(bench.group.alive, pid))
    for _ in range(20):  # the proxy path's first-use allocations, before the baseline is taken
        fetch(base + "/1k")
    runs: list[dict[str, Any]] = []
    for reader, pace in (("full speed", None), (f"{STREAM_PACE >> 20} MB/s", float(STREAM_PACE))):
        got = download(base + STREAM["path"], sample_pid=pid, bytes_per_second=pace)
        if (got.status, got.size, got.sha256) != (200, STREAM_BYTES, sha256):
            raise RuntimeError(f"the 50 MB body came back as {got.status} with {got.size} other bytes")
        runs.append(
            {
                "reader": reader,
                "seconds": got.seconds,
                "rss_before_mb": got.rss_before_bytes / 2**20,
                "peak_rss_mb": got.peak_rss_bytes / 2**20,
                "growth_mb": got.rss_growth_bytes / 2**20,
            }
        )
        print(f"stream check, reader at {reader}: {got.seconds:.2f} s, RSS +{got.rss_growth_bytes / 2**20:.1f} MB")
    bench.group.stop(pid)
    growth = max(run["growth_mb"] for run in runs)
    target = {
        "target": f"50 MB body streamed through: RSS growth < {STREAM_GROWTH_MB:g} MB",
        "gateway": "gateway/uvicorn (a fresh process)",
        "value": growth,
        "by_cpu": None,
        "passed": growth < STREAM_GROWTH_MB,
    }
    return {"megabytes": STREAM_BYTES / 2**20, "runs": runs, "target": target}


def progress_line(settings: Settings, m: Measurement) -> str:
    opened = "-" if m.upstream_opened is None else str(m.upstream_opened)
    calls = m.origin_requests / m.load.requests if m.load.requests else 0.0
    return (
        f"[round {m.round + 1}/{settings.rounds}] {m.scenario} c={m.connections:<3} {m.contender.name:<28}"
        f" {m.load.requests_per_second:>9,.0f} req/s  p50 {m.load.p50_ms:6.2f} ms  p99 {m.load.p99_ms:7.2f} ms"
        f"  cpu {m.load.cpu_us_per_request:5.0f} us/req  errors {m.load.errors}"
        f"  rss {m.load.peak_rss_bytes / 2**20:5.1f} MB  upstream opened {opened}  origin calls/req {calls:.2f}"
    )


# micro-benchmarks ------------------------------------------------------------------------------------------


def run_micro(quick: bool, pythonpath: str) -> list[dict[str, Any]]:
    """Every bench/micro_*.py, pinned to the SUT's core; each prints its own table (or JSON) on stdout."""
    results = []
    for script in sorted(BENCH.glob("micro_*.py")):
        env = {**os.environ, "PYTHONPATH": pythonpath, **({"BENCH_QUICK": "1"} if quick else {})}
        argv = ["taskset", "-c", str(SUT_CPU), sys.executable, str(script)]
        started = time.monotonic()
        try:
            done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            results.append({"script": script.name, "ok": False, "output": "timed out after 300 s"})
            continue
        output = (done.stdout if done.returncode == 0 else done.stdout + done.stderr).strip("\n").rstrip()
        try:
            parsed: Any = json.loads(output)
        except ValueError:
            parsed = None
        results.append(
            {
                "script": script.name,
                "ok": done.returncode == 0,
                "seconds": round(time.monotonic() - started, 1),
                "output": output,
                "json": parsed,
            }
        )
        print(f"{script.name}: {'ok' if done.returncode == 0 else 'FAILED'}\n{output}\n", flush=True)
    return results


# the machine -----------------------------------------------------------------------------------------------


def machine(committed: bool) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0].strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    status = ["git", "status", "--porcelain", "--", *SOURCES]
    dirty = subprocess.run(status, capture_output=True, text=True, cwd=ROOT).stdout
    if committed:
        state = " (the commit's code; uncommitted changes left out)" if dirty.strip() else ""
    else:
        state = " (with uncommitted changes)" if dirty.strip() else ""
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "packages": packages,
        "nginx": nginx.removeprefix("nginx version: "),
        "wrk": wrk,
        "commit": commit.strip() + state,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def check_tools() -> None:
    missing = [tool for tool in ("nginx", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `make bench`, which installs them (nginx-light, wrk)")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs: the system under test on CPU 0, wrk and the origin on CPU 1")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    check_tools()
    os.sched_setaffinity(0, {LOAD_CPU})  # the runner's own sampling stays off the SUT's core
    started = datetime.now(UTC)
    run_dir = RESULTS / started.strftime("%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True)
    meta = machine(settings.committed)
    meta["command"] = "make bench" + (" ARGS=" + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    meta["started"] = started.isoformat(timespec="seconds")
    meta["settings"] = {"rounds": settings.rounds, "seconds": settings.seconds, "warmup": settings.warmup}
    prefix = f"bench:{os.getpid()}:"  # every Redis key of this run: the gateway's cache, redis_app's documents
    try:
        measurements, extra = measure_all(settings, run_dir, prefix)
    finally:
        if redis_reachable():
            print(f"deleted {delete_redis_keys(prefix)} Redis keys under {prefix}", flush=True)
    sources = run_dir / "src"
    micro = run_micro(settings.quick, os.pathsep.join([*([str(sources)] if sources.is_dir() else []), str(BENCH)]))
    meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    meta["minutes"] = round((datetime.now(UTC) - started).total_seconds() / 60, 1)

    summaries = [
        Summary(
            scenario,
            connections,
            [m for m in measurements if (m.scenario, m.connections) == (scenario.name, connections)],
        )
        for scenario in settings.scenarios
        for connections in connections_of(scenario, settings)
        if any((m.scenario, m.connections) == (scenario.name, connections) for m in measurements)
    ]
    index: Index = {}
    for m in measurements:
        index.setdefault((m.scenario, m.connections, m.contender), {})[m.round] = m.load
    stream = extra["stream"]
    result = {
        "meta": meta,
        "notes": extra["notes"],
        "summaries": [summary_json(summary, extra_headers(summary.scenario, extra)) for summary in summaries],
        "targets": [check for target in TARGETS for check in target.check(index)]
        + ([stream["target"]] if stream else []),
        "comparisons": [row for comparison in COMPARISONS for row in comparison.rows(index)],
        "exports": extra["exports"],
        "stream": stream,
        "micro": micro,
        "measurements": [
            {**asdict(m), "contender": m.contender.name, "errors": m.load.errors} for m in measurements
        ],
    }  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps(result, indent=2))
    shutil.copyfile(run_dir / "results.json", RESULTS / "latest.json")
    (ROOT / "BENCHMARKS.md").write_text(render_markdown(result))
    print(f"\nresults: {run_dir.relative_to(ROOT)}/results.json; summary: BENCHMARKS.md ({meta['minutes']} min)")
    return 0


def extra_headers(scenario: Scenario, extra: dict[str, Any]) -> list[list[str]]:
    """What wrk sent beyond the scenario's own headers (the 304 paths' If-None-Match)."""
    sent: dict[str, list[list[str]]] = extra.get("headers", {})
    return sent.get(scenario.name, [])[len(scenario.headers) :]


def summary_json(summary: Summary, added_headers: list[list[str]]) -> dict[str, Any]:
    rows = []
    for contender, stats in summary.stats.items():
        ratios = {
            family: {
                "requests_per_second": summary.ratio(contender, family, "requests_per_second"),
                "p99_ms": summary.ratio(contender, family, "p99_ms"),
                "cpu_us_per_request": summary.ratio(contender, family, "cpu_us_per_request"),
            }
            for family in summary.scenario.compare
        }
        rows.append({"contender": contender.name, "family": contender.family, "server": contender.server,
                     **stats, "ratios": ratios})  # fmt: skip
    return {
        "scenario": summary.scenario.name,
        "title": summary.scenario.title,
        "url": summary.scenario.url,
        "reference_url": summary.scenario.reference_url,
        "headers": added_headers,
        "connections": summary.connections,
        "compare": list(summary.scenario.compare),
        "rows": rows,
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: every process the run started has been stopped")
