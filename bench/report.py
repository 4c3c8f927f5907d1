"""BENCHMARKS.md from a run's results.json: `python bench/report.py [bench/results/latest.json]` redraws it."""

import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

METHOD = """\
- **Pinning.** The system under test runs on CPU 0 (`taskset -c 0`), wrk (one thread), the nginx origin and the
  tracing sink on CPU 1; one worker process everywhere. The runner itself stays on CPU 1.
- **The gateway** is `gateway run --server <server>` with its defaults (JSON access log on, tracing off: the
  runner passes no `GATEWAY_*` or `OTEL_*` variable but the route file) and the route file the run writes to
  `bench/results/<run>/routes.yaml`; its access log goes to /dev/null. One process per server and variant
  serves every path. Variants add settings: `[access log off]` is `GATEWAY_ACCESS_LOG=off`; `[redis cache]` is
  `GATEWAY_REDIS_URL` to the local Redis with `GATEWAY_CACHE__L1_BYTES=0` (every hit is a Redis GET) and a key
  prefix of the run's own, whose keys are deleted at the end; `[tracing 1.0]` and `[tracing 0.0]` are
  `GATEWAY_OTEL__EXPORTER=otlp` (http/protobuf) to `bench/otlp_sink.py`, a local receiver that answers every
  export and keeps only counts, at `GATEWAY_OTEL__SAMPLE_RATIO` 1.0 and 0.0. With `--committed` the gateway runs
  the last commit's packages (`git archive HEAD`), not the working tree's.
- **Routes.** Cache paths use `cache: {ttl: 300}`; ETag paths use `etag: {}` and remove the origin's ETag and
  Last-Modified (an upstream without validators), so the ETag is the gateway's and so is every 304: wrk sends
  `If-None-Match` with the ETag the route gave a plain GET just before. The fan-out path is `fanout:` with
  three calls to the origin's 1 KB document. Each path's route is in the results' `routes.yaml`.
- **References.** `lean` is `bench/lean_proxy.py`: plain ASGI on aiohttp's client, one pooled session, bodies
  read whole, nothing else. `asgiproxy` is `bench/asgiproxy_app.py` (asgiproxy 0.2.0 with its concurrency limit
  and pool raised to the gateway's 256). `nginx` is `proxy_pass` through a keep-alive upstream pool
  (`bench/nginx/proxy.conf`). `pure-asgi` (`bench/pure_asgi.py`) answers from memory; `redis-starlette`
  (`bench/redis_app.py`) does one redis.asyncio GET per request. The Python references run under the same
  server with the flags the gateway gives it (uvicorn: uvloop, httptools, no access log, no Server or Date
  header; granian: its defaults, one worker).
- **Checks.** Before measuring, every contender answers each path a few times and the runner checks the
  answers (`bench/answers.py`): the origin's bytes; on cache paths also `Cache-Status: ...hit`; on 304 paths a
  304 with no body and the ETag asked about; on the fan-out path a JSON object with the document under each of
  the three call names. It also checks, from the origin's request counter, that the gateway asked the origin as
  often as the path says (0 for hits and cached 304s, 1 for misses, 3 for the fan-out).
- **Origin.** nginx (`bench/nginx/origin.conf`) serving 1 KB and 64 KB JSON files with ETag and Last-Modified
  (and a 50 MB file for the streaming check), keep-alive without a request limit, so a client pool that
  reconnects shows in nginx's accept counter.
- **Rounds.** Each round measures every contender of every path once, in an order that rotates between rounds,
  each run after a warm-up run. Figures are medians over rounds; *spread* is (max - min) / median of the rounds'
  rates. Ratios are taken within a round (contender / reference, under the same server where the reference
  runs under both), then the median over rounds: absolute numbers move by ~20% between runs on a shared
  machine, ratios much less. Comparisons between the gateway's own paths pair its runs of the same round too.
- **Columns.** req/s, p50 and p99 from `wrk --latency`. *CPU us/req* is the user + system CPU time of the
  contender's processes during the run divided by the requests served: 1,000,000 / it is the rate the contender
  would reach alone on the core, and other work on the machine lowers req/s but hardly moves this. Errors are
  non-2xx/3xx answers plus socket errors (connect, read, write, timeout) summed over rounds. RSS is the peak of
  the contender's whole process tree, sampled from /proc every 0.25 s; where the tree has more than one
  process (granian's supervisor and worker), the largest one's peak follows in brackets. *opened* is the median
  number of connections the origin accepted during a measured run: a keep-alive pool opens ~0. *origin
  calls/req* is the requests the origin served during the run per request measured. *vs X* is
  `req/s ratio · p99 ratio` to reference X: above 1.0 is faster for the rate, below 1.0 is better for p99.
- **Streaming.** A fresh gateway/uvicorn process, after 20 small requests, serves the origin's 50 MB file twice:
  to a reader at full speed and to one taking 25 MB/s (a gateway that did not wait for its client would have
  to hold the rest). Its RSS is sampled every 10 ms; growth is the peak less the RSS just before the request."""

ADDING = """\
A path is one `Scenario` entry in `bench/run.py`'s `SCENARIOS`: a name, a title, the URL, the gateway route it
needs (a route-file mapping; the upstream `origin` is the nginx origin), the request headers, the reference
families it is compared to (`lean`, `asgiproxy`, `nginx`, `pure-asgi`, `redis-starlette`) and where they are
asked (`reference_url`), the connection counts, the servers it runs under, the gateway's settings variants to
run it under (a name in `GATEWAY_VARIANTS`: environment variables, such as tracing settings), the answer it must
give (`expect`, `document`) and how many origin requests each request makes (`origin_calls`). A goal to check is
one `Target` entry in `TARGETS`, and a ratio between two of the gateway's own paths or variants one
`Comparison` in `COMPARISONS` (both say what they compare with a `Versus`). Micro-benchmarks are any
`bench/micro_*.py`: the runner runs each pinned to CPU 0 (with `BENCH_QUICK=1` under `--quick`) and copies what
it prints below."""


def render_markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    out = [
        "# Benchmarks",
        "",
        f"Written by `{meta['command']}` ({meta['minutes']} min, started {meta['started']}); the command rewrites "
        "this file, and the raw figures of every round are in `bench/results/<run>/results.json`.",
        f"{meta['settings']['rounds']} round(s) of {meta['settings']['seconds']:g} s per contender and path, "
        f"after {meta['settings']['warmup']:g} s of warm-up.",
        "",
        "## Machine",
        "",
        "| CPU | cores | kernel | Python | load average (start / end) | commit |",
        "|---|---:|---|---|---|---|",
        f"| {meta['cpu']} | {meta['cores']} | {meta['kernel']} | {meta['python']} "
        f"| {' '.join(meta['loadavg_start'])} / {' '.join(meta['loadavg_end'])} | {meta['commit']} |",
        "",
        ", ".join(f"{name} {version}" for name, version in meta["packages"].items())
        + f", nginx {meta['nginx']}, {meta['wrk']}.",
        "",
    ]
    out += [f"> {note}" for note in result["notes"]]
    out += [
        "## Targets of issue 8",
        "",
        "*by CPU* is the rate ratio implied by CPU time per request (reference's / gateway's): what the ratio would",
        "be on an otherwise idle core, and the figure a busy neighbour disturbs least.",
        "",
        "| target | gateway | measured | by CPU | met |",
        "|---|---|---:|---:|:---:|",
    ]
    for check in result["targets"]:
        value = "n/a" if check["value"] is None else f"{check['value']:.2f}"
        by_cpu = "" if check["by_cpu"] is None else f"{check['by_cpu']:.2f}"
        met = {True: "yes", False: "**no**", None: "n/a"}[check["passed"]]
        out.append(f"| {check['target']} | {check['gateway']} | {value} | {by_cpu} | {met} |")
    out += ["", "## Paths against each other", "", *_comparisons(result.get("comparisons", [])), ""]
    out += _exports(result.get("exports", []))
    out += _stream(result.get("stream"))
    out += ["## Results", ""]
    for summary in result["summaries"]:
        out += _summary_table(summary)
    out += ["## uvicorn or granian", "", *_servers(result["summaries"]), ""]
    out += ["## Micro-benchmarks", ""]
    if not result["micro"]:
        out += ["None found (`bench/micro_*.py`).", ""]
    for micro in result["micro"]:
        status = "" if micro["ok"] else " (failed)"
        out += [f"### {micro['script']}{status}", "", "```text", micro["output"], "```", ""]
    out += ["## How it is measured", "", METHOD, "", "## Adding a path", "", ADDING, ""]
    return "\n".join(out)


def _summary_table(summary: dict[str, Any]) -> list[str]:
    rows = summary["rows"]
    compare = [f for f in summary["compare"] if any(row["ratios"][f]["requests_per_second"] for row in rows)]
    header = ["contender", "req/s", "spread", "p50 ms", "p99 ms", "CPU us/req", "errors", "RSS MB", "opened"]
    calls = any(row.get("origin_calls_per_request") is not None for row in rows)
    header += ["origin calls/req"] if calls else []
    header += [f"vs {family}" for family in compare]
    request = f"`GET {summary['url']}`"
    request += "".join(f", `{name}: {value}`" for name, value in summary.get("headers", []))
    if summary.get("reference_url") and compare:
        request += f" (references: `GET {summary['reference_url']}`)"
    lines = [
        f"### {summary['title']}",
        "",
        f"{request}, {summary['connections']} connection{'s' if summary['connections'] != 1 else ''}.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for row in rows:
        opened = "-" if row["upstream_opened"] is None else f"{row['upstream_opened']:g}"
        cells = [
            f"**{row['contender']}**" if row["family"] == "gateway" else row["contender"],
            f"{row['requests_per_second']:,.0f}",
            f"{row['spread_pct']:.0f}%" if row["rounds"] > 1 else "-",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['cpu_us_per_request']:.0f}",
            str(row["errors"]),
            _rss(row),
            opened,
        ]
        if calls:
            cells.append(f"{row['origin_calls_per_request']:.2f}")
        for family in compare:
            ratio = row["ratios"][family]
            if ratio["requests_per_second"] is None:
                cells.append("")
            else:
                cells.append(f"{ratio['requests_per_second']:.2f}x · {ratio['p99_ms']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _comparisons(rows: list[dict[str, Any]]) -> list[str]:
    """The gateway's paths and variants against each other, paired round by round."""
    if not rows:
        return ["None measured in this run."]
    lines = [
        "Ratios are this path's figure over the other's, medians of the rounds' ratios; *p50 +ms* is the median",
        "of the rounds' p50 differences (at one connection, the latency the path adds).",
        "",
        "| comparison | gateway | against | conns | req/s | CPU us/req | p50 +ms | p99 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [row["comparison"], row["gateway"], row["versus"], str(row["connections"])]
        cells += [_times(row["rate"]), _times(row["cpu"])]
        cells += ["" if row["p50_delta_ms"] is None else f"{row['p50_delta_ms']:+.2f}", _times(row["p99"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _times(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _exports(exports: list[dict[str, Any]]) -> list[str]:
    """What the traced gateways sent the sink: spans per request shows whether every request was recorded."""
    if not exports:
        return []
    lines = [
        "## Tracing export",
        "",
        "What each traced gateway exported to the sink over the whole run (warm-ups included), counted after it was",
        "stopped, which flushes what it still held. A server span and a client span per request make 2 spans.",
        "",
        "| gateway | requests | exports | MB | spans | spans/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for export in exports:
        lines.append(
            f"| {export['contender']} | {export['requests']:,} | {export['posts']:,} | {export['bytes'] / 2**20:.1f} "
            f"| {export['spans']:,} | {export['spans_per_request']:.2f} |"
        )
    return [*lines, ""]


def _stream(stream: dict[str, Any] | None) -> list[str]:
    if not stream:
        return []
    lines = [
        f"## Streaming a {stream['megabytes']:g} MB body",
        "",
        "| reader | seconds | MB/s | RSS before MB | peak MB | growth MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in stream["runs"]:
        lines.append(
            f"| {run['reader']} | {run['seconds']:.2f} | {stream['megabytes'] / run['seconds']:.0f} "
            f"| {run['rss_before_mb']:.1f} | {run['peak_rss_mb']:.1f} | {run['growth_mb']:+.1f} |"
        )
    return [*lines, ""]


def _rss(row: dict[str, Any]) -> str:
    """The whole tree, and its largest process where the tree has more than one (granian's worker)."""
    tree, largest = row["peak_rss_mb"], row["peak_process_rss_mb"]
    return f"{tree:.0f}" if round(tree) == round(largest) else f"{tree:.0f} ({largest:.0f})"


SAME = 0.05  # closer than this, two servers are not told apart by a run on a shared machine


def _servers(summaries: list[dict[str, Any]]) -> list[str]:
    """The gateway under granian against itself under uvicorn, path by path, and what follows from it."""
    lines = ["| path | connections | req/s granian / uvicorn | p99 granian / uvicorn |", "|---|---:|---:|---:|"]
    rates, tails = [], []
    for summary in summaries:
        rows = {row["contender"]: row for row in summary["rows"]}
        uvicorn, granian = rows.get("gateway/uvicorn"), rows.get("gateway/granian")
        if uvicorn is None or granian is None:
            continue
        rate = granian["requests_per_second"] / uvicorn["requests_per_second"]
        tail = granian["p99_ms"] / uvicorn["p99_ms"]
        rates.append(rate)
        tails.append(tail)
        lines.append(f"| {summary['scenario']} | {summary['connections']} | {rate:.2f}x | {tail:.2f}x |")
    if not rates:
        return ["The gateway was not measured under both servers in this run."]
    rate, tail = _geomean(rates), _geomean(tails)
    if abs(rate - 1) < SAME and abs(tail - 1) < SAME:
        advice = (
            f"Within {SAME:.0%} of each other on rate and tail: keep **uvicorn**, the default, which runs one "
            "process instead of granian's two and so needs less memory (RSS column)."
        )
    elif rate >= 1.0 and tail <= 1.0:
        advice = "**granian** served more requests per second with a shorter tail: choose it (`--server granian`)."
    elif rate <= 1.0 and tail >= 1.0:
        advice = "**uvicorn** served more requests per second with a shorter tail: keep the default."
    else:
        advice = (
            f"Mixed: granian's rate is {rate:.2f}x uvicorn's and its p99 {tail:.2f}x uvicorn's. Choose granian "
            "for tail latency under many connections, uvicorn where its rate is higher."
        )
    summary_line = f"Geometric mean over the paths: rate {rate:.2f}x, p99 {tail:.2f}x. {advice}"
    return [*lines, "", summary_line]


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(value) for value in values) / len(values))


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else ROOT / "bench" / "results" / "latest.json"
    (ROOT / "BENCHMARKS.md").write_text(render_markdown(json.loads(source.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
