"""The dashboard at `{prefix}/ui`: routes, upstreams, flags and the last reload, as one server-rendered page.

It reads what the gateway already keeps (the current route file and pools, the metrics a scrape would show,
the flag resolver) and holds only two things of its own: the counts of its recent views, so it can show
request rates, and the last reload's result. The page asks the browser to load it again every few seconds
and carries no script at all.
"""

import json
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

from prometheus_client.metrics_core import Metric
from starlette.requests import Request
from starlette.responses import HTMLResponse

from asgi_gateway.config.routes import ALL_METHODS, RouteFile, RouteSpec
from asgi_gateway.flags.definitions import Definition, FlagDefinition
from asgi_gateway.flags.resolver import Resolver
from asgi_gateway.gateway.metrics import Metrics

REFRESH_SECONDS = 5
RATE_WINDOW_SECONDS = 60.0
_KEPT_VIEWS = 64  # counts of recent views; a busier viewer shortens the window instead of growing the list
CACHE_HITS = frozenset({"hit", "stale", "revalidated"})  # answered from a stored entry
UPSTREAM_ANSWERED = frozenset({"1xx", "2xx", "3xx", "4xx"})  # a 4xx is the client's; 5xx and no answer are failures
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}

Labels = tuple[str, ...]


class RateWindow:
    """Per-key rates from the counts seen at each view: over the last minute or a little more, measured from
    the latest view at least that old; before there is one, from the oldest view, or since start."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.views: deque[tuple[float, dict[str, float]]] = deque(maxlen=_KEPT_VIEWS)

    def rates(self, counts: Mapping[str, float]) -> tuple[dict[str, float], str]:
        """(rate per key, what they were measured over)."""
        now = self.clock()
        while len(self.views) > 1 and now - self.views[1][0] >= RATE_WINDOW_SECONDS:
            self.views.popleft()
        since, before = self.views[0] if self.views else (self.started, {})
        over = f"last {now - since:.0f} s" if self.views else "since start"
        self.views.append((now, dict(counts)))
        elapsed = now - since
        if elapsed <= 0:
            return dict.fromkeys(counts, 0.0), over
        return {key: (count - before.get(key, 0.0)) / elapsed for key, count in counts.items()}, over


class Dashboard:
    def __init__(
        self,
        *,
        metrics: Metrics,
        resolver: Resolver,
        routes: Callable[[], RouteFile],
        upstreams: Callable[[], Mapping[str, Mapping[str, Any]]],
        status: Callable[[], Mapping[str, Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.resolver = resolver
        self.routes = routes
        self.upstreams = upstreams
        self.status = status
        self.rates = RateWindow(clock)
        self.last_reload: tuple[datetime, Mapping[str, Any]] | None = None

    def reloaded(self, result: Mapping[str, Any]) -> None:
        self.last_reload = datetime.now(UTC), result

    async def page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self.render(), headers=PAGE_HEADERS)

    def render(self) -> str:
        families = list(self.metrics.families())
        sections = [
            self._config_section(),
            self._routes_section(families),
            self._upstreams_section(families),
            self._flags_section(families),
        ]
        return _PAGE.format(refresh=REFRESH_SECONDS, style=_STYLE, body="\n".join(sections))

    def _config_section(self) -> str:
        status = self.status()
        rows = [("Config version", _code(status.get("config_version", "-")))]
        if self.last_reload is None:
            rows.append(("Last reload", "none since start"))
        else:
            at, result = self.last_reload
            when = at.strftime("%Y-%m-%d %H:%M:%S UTC")
            if result.get("ok"):
                change = f"{_code(result.get('previous', '-'))} → {_code(result.get('version', '-'))}"
                rows.append(("Last reload", f'<span class="ok">applied</span> at {when}: {change}'))
            else:
                errors = "".join(f"<li>{escape(str(error))}</li>" for error in result.get("errors", ()))
                rejected = f'<span class="bad">rejected</span> at {when}, still serving {_code(result.get("version"))}'
                rows.append(("Last reload", f"{rejected}<ul>{errors}</ul>"))
        body = "".join(f"<tr><th scope='row'>{name}</th><td>{value}</td></tr>" for name, value in rows)
        return f'<section id="config"><h2>Configuration</h2><table class="facts">{body}</table></section>'

    def _routes_section(self, families: list[Metric]) -> str:
        requests = _sums(families, "gateway_requests_total", ("route",))
        errors = _sums(families, "gateway_requests_total", ("route", "status"))
        lookups = _sums(families, "gateway_cache_lookups_total", ("route", "outcome"))
        counts = {route: count for (route,), count in requests.items()}
        rates, over = self.rates.rates(counts)
        rows = []
        for route in self.routes().routes:
            label = route.label
            total = counts.get(label, 0.0)
            rows.append(
                [
                    _code(label),
                    "any" if set(route.methods) == set(ALL_METHODS) else escape(" ".join(route.methods)),
                    escape(route.host or "*"),
                    _route_target(route),
                    _number(total),
                    f"{rates.get(label, 0.0):.2f}",
                    _share(errors.get((label, "5xx"), 0.0), total),
                    _cache_cell(route, {outcome: n for (name, outcome), n in lookups.items() if name == label}),
                ]
            )
        headers = ["Route", "Methods", "Host", "Upstream", "Requests", f"Req/s ({over})", "5xx", "Cache hits"]
        return _section("routes", "Routes", headers, rows)

    def _upstreams_section(self, families: list[Metric]) -> str:
        outcomes = _sums(families, "gateway_upstream_requests_total", ("upstream", "outcome"))
        rows = []
        for name, described in self.upstreams().items():
            mine = {outcome: count for (who, outcome), count in outcomes.items() if who == name}
            total = sum(mine.values())
            failed = sum(count for outcome, count in mine.items() if outcome not in UPSTREAM_ANSWERED)
            spread = ", ".join(f"{escape(outcome)} {_number(count)}" for outcome, count in sorted(mine.items()))
            rows.append([_code(name), targets_cell(described), _number(total), _share(failed, total), spread or "-"])
        headers = ["Upstream", "Targets", "Calls", "Failed", "Outcomes"]
        return _section("upstreams", "Upstreams", headers, rows)

    def _flags_section(self, families: list[Metric]) -> str:
        evaluations = _sums(families, "gateway_flag_evaluations_total", ("flag", "variant"))
        problems = self.resolver.problems
        rows = []
        for key, definition in sorted(self.resolver.definitions().items()):
            seen = {variant: count for (flag, variant), count in evaluations.items() if flag == key}
            counted = ", ".join(f"{escape(variant)} {_number(count)}" for variant, count in sorted(seen.items()))
            problem = problems.get(key)
            rows.append(
                [
                    _code(key),
                    escape(_kind(definition)),
                    '<span class="ok">on</span>' if _enabled(definition) else '<span class="muted">off</span>',
                    _variants_cell(definition),
                    counted or "-",
                    f'<span class="bad">{escape(problem)}</span>' if problem else "",
                ]
            )
        headers = ["Flag", "Type", "State", "Variants (default first)", "Evaluations", "Problem"]
        return _section("flags", "Flags", headers, rows)


def targets_cell(described: Mapping[str, Any]) -> str:
    """An upstream's targets with their states, as `Gateway.describe_upstreams` gives them (a pool's checks and
    ejections; `unchecked` for a single url); a pool in panic mode says so."""
    items = "".join(
        f'<li><span class="state {escape(target["state"])}">{escape(target["state"])}</span> {_code(target["url"])}'
        + (f' <span class="muted">weight {target["weight"]}</span>' if target["weight"] != 1 else "")
        + "</li>"
        for target in described["targets"]
    )
    panic = '<li><span class="state unhealthy">panic: every target tried</span></li>' if described["panic"] else ""
    return f'<ul class="targets">{panic}{items}</ul>'


def _route_target(route: RouteSpec) -> str:
    if route.fanout is not None:
        return "fan-out: " + ", ".join(_code(call.upstream) for call in route.fanout.calls.values())
    steered = "".join(
        f'<li><span class="muted">if {escape(rule.flag)} = {escape(_json(rule.equals))}:</span> {_code(rule.upstream)}'
        for rule in route.when
    )
    return _code(route.upstream or "-") + (f"<ul>{steered}</ul>" if steered else "")


def _cache_cell(route: RouteSpec, outcomes: Mapping[str, float]) -> str:
    if route.cache is None:
        return '<span class="muted">no cache</span>'
    lookups = sum(count for outcome, count in outcomes.items() if outcome != "bypass")
    hits = sum(count for outcome, count in outcomes.items() if outcome in CACHE_HITS)
    if not lookups:
        return '<span class="muted">no lookups yet</span>'
    return f"{hits / lookups:.0%} of {_number(lookups)}"


def _kind(definition: Definition) -> str:
    return str(definition.type if isinstance(definition, FlagDefinition) else definition.kind)


def _enabled(definition: Definition) -> bool:
    return definition.enabled if isinstance(definition, FlagDefinition) else definition.state == "ENABLED"


def _variants_cell(definition: Definition) -> str:
    """The default first, then the declared variants by name."""
    if isinstance(definition, FlagDefinition) and definition.default_variant is None:
        default = f"<li><b>default</b> = {_code(_json(definition.default))}</li>"
    else:
        default = f"<li><b>default</b> = {_code(definition.default_variant or '-')}</li>"
    declared = "".join(
        f"<li>{escape(name)} = {_code(_json(value))}</li>" for name, value in sorted(definition.variants.items())
    )
    return f'<ul class="variants">{default}{declared}</ul>'


def _sums(families: Iterable[Metric], sample: str, labels: Labels) -> dict[Labels, float]:
    """A counter's samples added up by some of their labels (over the others, and over workers)."""
    sums: dict[Labels, float] = defaultdict(float)
    for family in families:
        for item in family.samples:
            if item.name == sample:
                sums[tuple(item.labels.get(label, "") for label in labels)] += item.value
    return sums


def _section(anchor: str, title: str, headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th scope='col'>{escape(header)}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    empty = "" if rows else f"<p class='muted'>No {title.lower()}.</p>"
    return (
        f'<section id="{anchor}"><h2>{escape(title)}</h2>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{empty}</section>"
    )


def _code(text: object) -> str:
    return f"<code>{escape(str(text))}</code>"


def _number(value: float) -> str:
    return f"{value:,.0f}"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gateway</title>
<style>{style}</style>
</head>
<body>
<header><h1>Gateway</h1><p class="muted">refreshed every {refresh} s</p></header>
<main>
{body}
</main>
</body>
</html>
"""

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
header { display: flex; align-items: baseline; gap: 1em; padding: 0.8em 1.5em; background: #24292f; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
header .muted { color: #afb8c1; }
main { padding: 0.5em 1.5em 2em; }
h2 { font-size: 1.05em; margin: 1.4em 0 0.5em; }
table { border-collapse: collapse; background: #fff; border: 1px solid #d0d7de; width: 100%; }
th, td { text-align: left; padding: 0.35em 0.7em; border-bottom: 1px solid #eaeef2; vertical-align: top; }
thead th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
table.facts { width: auto; }
table.facts th { font-weight: 600; }
code { font: 0.92em ui-monospace, monospace; }
ul { margin: 0; padding: 0; list-style: none; }
.muted { color: #656d76; }
.ok { color: #1a7f37; font-weight: 600; }
.bad { color: #cf222e; font-weight: 600; }
.state { display: inline-block; font-size: 0.85em; padding: 0 0.4em; border-radius: 3px; }
.state.unchecked { background: #eaeef2; color: #656d76; }
.state.healthy { background: #dafbe1; color: #1a7f37; }
.state.unhealthy, .state.ejected { background: #ffebe9; color: #cf222e; }
""".strip()
