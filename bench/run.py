"""`make bench`: the gateway measured beside nginx, a lean Python proxy and asgiproxy, in one run, on one core.

The system under test runs on CPU 0, wrk and the nginx origin on CPU 1, one worker each. Every round measures
every contender of every scenario once, in an order that rotates between rounds; figures are medians over
rounds, and every figure is also a ratio to the references measured in the same round, since absolute numbers
move by a fifth between runs on shared machines. Results go to bench/results/ and BENCHMARKS.md.

A path is one entry of SCENARIOS: the gateway route it needs, the URL, the request headers and the families
it is compared to. A target of issue 8 is one entry of TARGETS.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from harness import Load, free_port, nginx_accepts, processes, run_wrk, wait_ready
from payloads import documents
from report import render_markdown

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
SUT_CPU, LOAD_CPU = 0, 1
PACKAGES = ("asgi-gateway", "aiohttp", "uvicorn", "uvloop", "httptools", "granian", "starlette", "asgiproxy", "redis")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


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
    variants: tuple[str, ...] = ("",)  # the gateway's settings variants measured on this path (--quick: the first)
    same_body: bool = True  # every contender answers 200 with the origin's document at `url`, checked at start


ASGI_SERVERS = ("uvicorn", "granian")
FAMILIES: dict[str, tuple[str, ...]] = {
    "gateway": ASGI_SERVERS,
    "lean": ASGI_SERVERS,
    "asgiproxy": ASGI_SERVERS,
    "nginx": ("nginx",),
    "pure-asgi": ASGI_SERVERS,
    "redis-starlette": ASGI_SERVERS,
}
# Settings a gateway variant runs with, on top of the defaults (the runner passes no other GATEWAY_* variable).
GATEWAY_VARIANTS: dict[str, dict[str, str]] = {
    "": {},
    "access log off": {"GATEWAY_ACCESS_LOG": "off"},
}
PROXIES = frozenset({"gateway", "lean", "asgiproxy", "nginx"})  # families with a pool to the origin
BROWSER_HEADERS = (
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip, br"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "miss-1k",
        "Proxied miss, 1 KB",
        "/1k",
        route={"path": "/1k", "methods": ["GET"], "upstream": "origin"},
        compare=("lean", "asgiproxy", "nginx"),
        headers=BROWSER_HEADERS,
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
    ),
    Scenario(
        "memory-1k",
        "Reference: 1 KB answered from memory (what an in-process cache hit is to be compared to)",
        "/1k",
        route=None,
        compare=("pure-asgi",),
        headers=BROWSER_HEADERS,
        connections=(32,),
        quick_connections=(),
    ),
    Scenario(
        "redis-1k",
        "Reference: 1 KB from one Redis GET per request (what a cache hit from Redis is to be compared to)",
        "/1k",
        route=None,
        compare=("redis-starlette",),
        headers=BROWSER_HEADERS,
        connections=(32,),
        quick_connections=(),
    ),
)


@dataclass(frozen=True, slots=True)
class Target:
    """A goal of issue 8 for the gateway (each server) on one path at one connection count.

    kind: "rate" (req/s ratio to `family` >= bound), "p99" (p99 ratio to `family` <= bound),
    "errors" (errors <= bound), "rss" (peak RSS of all its processes, in MB, < bound).
    """

    label: str
    scenario: str
    connections: int
    kind: str
    bound: float
    family: str = ""

    def check(self, summary: "Summary", gateway: Contender) -> dict[str, Any]:
        stats = summary.stats.get(gateway)
        value: float | None = None
        by_cpu: float | None = None  # the rate ratio implied by CPU time per request, on a saturated core
        if stats is None:
            pass
        elif self.kind == "rate":
            value = summary.ratio(gateway, self.family, "requests_per_second")
            cost = summary.ratio(gateway, self.family, "cpu_us_per_request")
            by_cpu = 1 / cost if cost else None
        elif self.kind == "p99":
            value = summary.ratio(gateway, self.family, "p99_ms")
        elif self.kind == "errors":
            value = float(stats["errors"])
        elif self.kind == "rss":
            value = stats["peak_rss_mb"]
        else:
            raise ValueError(f"unknown target kind {self.kind!r}")
        passed = None
        if value is not None:
            passed = {"rate": value >= self.bound, "rss": value < self.bound}.get(self.kind, value <= self.bound)
        return {"target": self.label, "gateway": gateway.name, "value": value, "by_cpu": by_cpu, "passed": passed}


MISS = (("miss-1k", "miss 1 KB"), ("miss-64k", "miss 64 KB"))
TARGETS: tuple[Target, ...] = (
    *(Target(f"{title}, 32 conns: >= 1.0x asgiproxy", name, 32, "rate", 1.0, "asgiproxy") for name, title in MISS),
    *(Target(f"{title}, 32 conns: >= 0.7x lean", name, 32, "rate", 0.7, "lean") for name, title in MISS),
    *(Target(f"{title}, 128 conns: no errors", name, 128, "errors", 0) for name, title in MISS),
    *(Target(f"{title}, 128 conns: p99 <= 2x lean's", name, 128, "p99", 2.0, "lean") for name, title in MISS),
    Target("RSS under load, all processes (miss 64 KB, 128 conns) < 150 MB", "miss-64k", 128, "rss", 150),
)


def contenders_of(scenario: Scenario, quick: bool) -> list[Contender]:
    variants = scenario.variants[:1] if quick else scenario.variants
    gateways = [
        Contender("gateway", server, variant)
        for variant in (variants if scenario.route is not None else ())
        for server in FAMILIES["gateway"]
    ]
    return gateways + [Contender(family, server) for family in scenario.compare for server in FAMILIES[family]]


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
    upstream_opened: int | None


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
    scenarios: tuple[Scenario, ...]


def parse_args(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round of short runs (about two minutes)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=int, help="seconds per measured run (default 3, quick 2)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 1)")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS], help="only these")
    args = parser.parse_args(argv)
    chosen = tuple(s for s in SCENARIOS if not args.scenario or s.name in args.scenario)
    return Settings(
        rounds=args.rounds or (1 if args.quick else 3),
        seconds=args.seconds or (2 if args.quick else 3),
        warmup=args.warmup if args.warmup is not None else 1,
        quick=args.quick,
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


def write_origin_files(run_dir: Path) -> None:
    (run_dir / "www").mkdir()
    for path, body in documents().items():
        (run_dir / "www" / path.strip("/")).write_bytes(body)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / "tmp" / name).mkdir(parents=True)


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
    for scenario in scenarios:
        if scenario.route is not None and scenario.route not in routes:
            routes.append(scenario.route)
    path = run_dir / "routes.yaml"
    document = {"upstreams": {"origin": {"url": origin.url}}, "routes": [dict(route) for route in routes]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


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
    if contender.server == "uvicorn":  # the flags gateway.__main__ passes to uvicorn.run
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


def measure_all(settings: Settings, run_dir: Path) -> tuple[list[Measurement], list[str]]:
    notes: list[str] = []
    scenarios = [scenario for scenario in settings.scenarios if connections_of(scenario, settings)]
    if not redis_reachable():
        skipped = [s for s in scenarios if "redis-starlette" in s.compare]
        scenarios = [s for s in scenarios if s not in skipped]
        if skipped:
            notes.append(f"Redis at {REDIS_URL} did not answer: skipped {', '.join(s.name for s in skipped)}.")
    write_origin_files(run_dir)
    ports = {"origin": free_port(), "status": free_port()}
    origin = Origin(f"http://127.0.0.1:{ports['origin']}", f"http://127.0.0.1:{ports['status']}/status")
    routes = write_routes(run_dir, origin, scenarios)
    (run_dir / "logs").mkdir()
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

        served: dict[Contender, tuple[int, int]] = {}  # contender -> (pid, port)
        env = {name: value for name, value in os.environ.items() if not name.startswith(("GATEWAY_", "OTEL_"))}
        env |= {"BENCH_ORIGIN": origin.url, "BENCH_REDIS_URL": REDIS_URL, "PYTHONPATH": str(BENCH)}
        env["BENCH_REDIS_PREFIX"] = f"bench:{os.getpid()}:"
        for scenario in scenarios:
            for contender in contenders_of(scenario, settings.quick):
                if contender in served:
                    continue
                port = free_port()
                argv = command(contender, port, routes, run_dir, ports["origin"])
                pid = group.start(
                    contender.name,
                    argv,
                    cpu=SUT_CPU,
                    cwd=run_dir,
                    env=env | GATEWAY_VARIANTS[contender.variant],
                    discard_stdout=contender.family == "gateway",  # the access log: written, then dropped
                )
                wait_ready(f"http://127.0.0.1:{port}{scenario.url}", alive=partial(group.alive, pid))
                served[contender] = (pid, port)
                print(f"started {contender.name} on port {port} (pid {pid})", flush=True)
        for scenario in scenarios:
            for contender in contenders_of(scenario, settings.quick):
                if scenario.same_body:
                    check_answer(contender, f"http://127.0.0.1:{served[contender][1]}", scenario)

        for round_ in range(settings.rounds):
            for scenario in scenarios:
                for connections in connections_of(scenario, settings):
                    lineup = contenders_of(scenario, settings.quick)
                    shift = round_ % len(lineup)
                    for contender in lineup[shift:] + lineup[:shift]:
                        pid, port = served[contender]
                        measurement = measure_one(settings, round_, scenario, connections, contender, pid, port, origin)
                        measurements.append(measurement)
                        print(progress_line(settings, measurement), flush=True)
    return measurements, notes


def check_answer(contender: Contender, base_url: str, scenario: Scenario) -> None:
    """Every contender must answer the same bytes, or the comparison compares different work."""
    request = urllib.request.Request(base_url + scenario.url, headers=dict(scenario.headers))
    with urllib.request.urlopen(request, timeout=5) as response:
        status, body = response.status, response.read()
    if (status, body) != (200, documents()[scenario.url]):
        raise RuntimeError(f"{contender.name} answered {scenario.url} with {status} and {len(body)} other bytes")


def measure_one(
    settings: Settings,
    round_: int,
    scenario: Scenario,
    connections: int,
    contender: Contender,
    pid: int,
    port: int,
    origin: Origin,
) -> Measurement:
    url = f"http://127.0.0.1:{port}{scenario.url}"
    if settings.warmup > 0:
        run_wrk(url, connections=connections, seconds=settings.warmup, headers=scenario.headers, cpu=LOAD_CPU)
    before = nginx_accepts(origin.status_url)
    load = run_wrk(
        url, connections=connections, seconds=settings.seconds, headers=scenario.headers, cpu=LOAD_CPU, sample_pid=pid
    )
    # The second stub_status query is itself one accepted connection.
    opened = nginx_accepts(origin.status_url) - before - 1 if contender.family in PROXIES else None
    return Measurement(round_, scenario.name, connections, contender, load, opened)


def progress_line(settings: Settings, m: Measurement) -> str:
    opened = "-" if m.upstream_opened is None else str(m.upstream_opened)
    return (
        f"[round {m.round + 1}/{settings.rounds}] {m.scenario} c={m.connections:<3} {m.contender.name:<24}"
        f" {m.load.requests_per_second:>9,.0f} req/s  p50 {m.load.p50_ms:6.2f} ms  p99 {m.load.p99_ms:7.2f} ms"
        f"  cpu {m.load.cpu_us_per_request:5.0f} us/req  errors {m.load.errors}"
        f"  rss {m.load.peak_rss_bytes / 2**20:5.1f} MB  upstream opened {opened}"
    )


# micro-benchmarks ------------------------------------------------------------------------------------------


def run_micro(quick: bool) -> list[dict[str, Any]]:
    """Every bench/micro_*.py, pinned to the SUT's core; each prints its own table (or JSON) on stdout."""
    results = []
    for script in sorted(BENCH.glob("micro_*.py")):
        env = {**os.environ, "PYTHONPATH": str(BENCH), **({"BENCH_QUICK": "1"} if quick else {})}
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


def machine() -> dict[str, Any]:
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
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "gateway", "config", "middleware", "flags"],
                           capture_output=True, text=True, cwd=ROOT).stdout  # fmt: skip
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "packages": packages,
        "nginx": nginx.removeprefix("nginx version: "),
        "wrk": wrk,
        "commit": commit.strip() + (" (with uncommitted changes)" if dirty.strip() else ""),
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
    meta = machine()
    meta["command"] = "make bench" + (" ARGS=" + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    meta["started"] = started.isoformat(timespec="seconds")
    meta["settings"] = {"rounds": settings.rounds, "seconds": settings.seconds, "warmup": settings.warmup}
    measurements, notes = measure_all(settings, run_dir)
    micro = run_micro(settings.quick)
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
    result = {
        "meta": meta,
        "notes": notes,
        "summaries": [summary_json(summary) for summary in summaries],
        "targets": [check for target in TARGETS for summary in summaries
                    if (summary.scenario.name, summary.connections) == (target.scenario, target.connections)
                    for check in target_json(target, summary)],
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


def summary_json(summary: Summary) -> dict[str, Any]:
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
        "connections": summary.connections,
        "compare": list(summary.scenario.compare),
        "rows": rows,
    }


def target_json(target: Target, summary: Summary) -> list[dict[str, Any]]:
    return [
        target.check(summary, gateway)
        for gateway in summary.contenders
        if gateway.family == "gateway" and not gateway.variant
    ]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: every process the run started has been stopped")
