"""The route file's schema: named upstreams, and routes that refer to them by name.

Every model forbids unknown keys and is frozen. Checks that need the whole file (references by name,
duplicate routes) live in `cross_reference_issues`, which reports each problem at its own location.
"""

import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from asgi_gateway.config.base import Loc, Method, Seconds, StrictModel, check_field_name
from asgi_gateway.config.edge import AuthSpec, CorsSpec, RateLimitSpec, rate_limit_key_issue
from asgi_gateway.config.pools import Balance, HealthCheckSpec, OriginUrl, OutlierSpec, RetrySpec, TargetSpec
from asgi_gateway.config.responses import CacheSpec, CompressSpec, EtagSpec, HeadersSpec
from asgi_gateway.flags.definitions import FlagDefinitions
from asgi_gateway.flags.model import FlagKind

ALL_METHODS: tuple[Method, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Starlette's path syntax: {name} or {name:convertor}; the gateway's routes are Starlette routes.
PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")
CONVERTORS = frozenset({"str", "path", "int", "float", "uuid"})


class TimeoutSpec(StrictModel):
    """Unset values fall back to the process settings (GATEWAY_TIMEOUT__*)."""

    connect: Seconds | None = None
    read: Seconds | None = None
    pool: Seconds | None = None


class UpstreamSpec(StrictModel):
    """One target (`url`) or a pool of them (`targets`); a pool's keys are described in config/pools.py."""

    url: OriginUrl | None = None
    targets: tuple[TargetSpec, ...] = ()  # a bare URL is a target of weight 1
    balance: Balance = "p2c"
    health_check: HealthCheckSpec | None = None
    outlier_detection: OutlierSpec | None = None
    retries: RetrySpec | None = None
    dns_refresh: Seconds | None = None  # each address a host name resolves to becomes a target of its own
    timeout: TimeoutSpec = TimeoutSpec()
    pool_size: int | None = Field(default=None, ge=1)
    http2: bool = False  # HTTP/2 needs the httpx transport
    app: str | None = None  # "package.module:attribute": an in-process ASGI app, reached without a socket

    @field_validator("targets", mode="before")
    @classmethod
    def _bare_urls(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple({"url": item} if isinstance(item, str) else item for item in value)
        return value

    @model_validator(mode="after")
    def _url_or_targets(self) -> "UpstreamSpec":
        if (self.url is None) == (not self.targets):
            raise ValueError("give either url (one target) or targets (a pool), not both or neither")
        if self.app is not None and (self.targets or self.dns_refresh is not None):
            raise ValueError("an in-process app is one target: it takes url, not targets or dns_refresh")
        return self

    @property
    def target_specs(self) -> tuple[TargetSpec, ...]:
        if self.url is not None:
            return (TargetSpec(url=self.url),)
        return self.targets

    @property
    def pooled(self) -> bool:
        """Whether the upstream needs a pool; one `url` without pool keys is a plain transport, as fast as ever."""
        watched = (self.health_check, self.outlier_detection, self.retries, self.dns_refresh)
        return bool(self.targets) or any(value is not None for value in watched)

    @field_validator("app")
    @classmethod
    def _import_string(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:[\w.]+", value):
            raise ValueError(f"must look like 'package.module:attribute', got {value!r}")
        return value


CALL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")
# Fan-out call templates: {param} (path), {query.name} (client query), {call.field.sub} (an earlier answer).
TEMPLATE_REF = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_-]*)((?:\.[a-zA-Z0-9_-]+)*)}")


class CallSpec(StrictModel):
    """One upstream call of a fan-out route."""

    upstream: str
    path: str  # template; may carry a query: "/orders?user={id}"
    method: Method = "GET"
    timeout: Seconds | None = None  # this call alone; the route's deadline bounds them all
    required: bool = True  # a failed required call fails the whole answer (502/504)
    forward_headers: tuple[str, ...] = ()  # client headers to pass on, beyond trace context, request id, flags
    cache: CacheSpec | None = None  # a cacheable branch is served from cache like a proxy route

    @field_validator("path")
    @classmethod
    def _call_template(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        if "{" in TEMPLATE_REF.sub("", value) or "}" in TEMPLATE_REF.sub("", value):
            raise ValueError(f"has an unbalanced or malformed '{{...}}' in {value!r}")
        return value

    @field_validator("forward_headers")
    @classmethod
    def _header_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            check_field_name(name)
        return names

    def references(self) -> list[tuple[str, tuple[str, ...]]]:
        """(name, fields) per `{name.field...}` in the path template."""
        return [(m.group(1), tuple(filter(None, m.group(2).split(".")))) for m in TEMPLATE_REF.finditer(self.path)]


class FanoutSpec(StrictModel):
    calls: dict[str, CallSpec]
    max_concurrency: int = Field(default=8, ge=1)
    deadline: Seconds = 5.0
    merge: Literal["by_name", "root"] = "by_name"  # root: the answers' objects merged into one

    @field_validator("calls")
    @classmethod
    def _call_names(cls, calls: dict[str, CallSpec]) -> dict[str, CallSpec]:
        if not calls:
            raise ValueError("must list at least one call")
        for name in calls:
            if not CALL_NAME.match(name) or name == "query":
                raise ValueError(f"call name {name!r} must be an identifier other than 'query'")
        return calls


# A message the server side reads whole before the gateway sees it; uvicorn's limit (ws_max_size).
MAX_WEBSOCKET_MESSAGE_BYTES = 16 * 1024 * 1024


class WebSocketSpec(StrictModel):
    """WebSocket sessions proxied on a route (an upgrade request for its path)."""

    idle_timeout: Seconds = 300  # no message either way for this long: both sides are closed (1001)
    max_message_bytes: int = Field(default=1 << 20, gt=0, le=MAX_WEBSOCKET_MESSAGE_BYTES)  # larger: closed (1009)


class WhenSpec(StrictModel):
    """Flag-steered routing: requests whose flag resolves to `equals` go to `upstream`."""

    flag: str
    equals: JsonValue
    upstream: str


class RouteSpec(StrictModel):
    path: str
    name: str | None = None  # for logs and metrics; defaults to the path template
    methods: tuple[Method, ...] = ALL_METHODS
    host: str | None = None
    upstream: str | None = None
    rewrite: str | None = None
    headers: HeadersSpec = HeadersSpec()
    fanout: FanoutSpec | None = None
    etag: EtagSpec | bool | None = None  # None: the settings' default; false: off; true or a mapping: on
    cache: CacheSpec | None = None
    idempotent: tuple[Method, ...] = ()  # beside GET and HEAD: methods resent once after a dropped connection
    flags: tuple[str, ...] = ()  # resolved per request and forwarded upstream; `when:` flags count too
    when: tuple[WhenSpec, ...] = ()  # the first match wins; none matching: `upstream`
    websocket: WebSocketSpec | None = WebSocketSpec()  # `false` (None): upgrades get 404; fan-out routes take none
    auth: AuthSpec | None = None  # who may call (config/edge.py)
    rate_limit: RateLimitSpec | None = None
    cors: CorsSpec | None = None
    compress: CompressSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _fanout_reads(cls, data: object) -> object:
        """A fan-out route answers reads: GET (and HEAD) unless its methods say otherwise."""
        if isinstance(data, dict) and "fanout" in data and "methods" not in data:
            return {**data, "methods": ["GET"]}
        return data

    @field_validator("websocket", mode="before")
    @classmethod
    def _websocket_switch(cls, value: object) -> object:
        """`true` is the defaults, `false` none; a mapping sets them."""
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("methods", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(item.upper() if isinstance(item, str) else item for item in value)
        return value

    @field_validator("methods")
    @classmethod
    def _some_methods(cls, value: tuple[Method, ...]) -> tuple[Method, ...]:
        if not value:
            raise ValueError("must name at least one method")
        if len(set(value)) != len(value):
            raise ValueError("lists a method twice")
        return value

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        names = [name for name, _ in template_params(value)]
        if len(set(names)) != len(names):
            raise ValueError(f"repeats a parameter name in {value!r}")
        for name, convertor in template_params(value):
            if convertor and convertor not in CONVERTORS:
                raise ValueError(
                    f"unknown convertor '{convertor}' for {{{name}}} (known: {', '.join(sorted(CONVERTORS))})"
                )
        catch_all = [match for match in PARAM.finditer(value) if match.group(2) == "path"]
        if catch_all and (len(catch_all) > 1 or catch_all[0].end() != len(value)):
            raise ValueError("a {name:path} catch-all may only end the path")
        if "{" in PARAM.sub("", value) or "}" in PARAM.sub("", value):
            raise ValueError(f"has an unbalanced or malformed '{{...}}' in {value!r}")
        return value

    @field_validator("rewrite")
    @classmethod
    def _rewrite_template(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value

    @field_validator("host")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", value):
            raise ValueError(f"must be a host name, optionally with :port, got {value!r}")
        return None if value is None else value.lower()

    @property
    def label(self) -> str:
        return self.name or self.path

    @property
    def websocket_options(self) -> WebSocketSpec | None:
        """The route's WebSocket settings, or None when it takes no sessions."""
        return None if self.fanout is not None else self.websocket

    @property
    def flag_keys(self) -> tuple[str, ...]:
        """Every flag this route resolves: its own list, then those its `when:` rules read."""
        return tuple(dict.fromkeys([*self.flags, *(rule.flag for rule in self.when)]))


class RouteFile(StrictModel):
    upstreams: dict[str, UpstreamSpec] = Field(default_factory=dict)
    flags: FlagDefinitions = FlagDefinitions({})
    routes: tuple[RouteSpec, ...]

    @field_validator("routes")
    @classmethod
    def _some_routes(cls, value: tuple[RouteSpec, ...]) -> tuple[RouteSpec, ...]:
        if not value:
            raise ValueError("must list at least one route")
        return value


def template_params(template: str) -> Iterator[tuple[str, str | None]]:
    """(name, convertor) for each `{name}` / `{name:convertor}` in a path template."""
    for match in PARAM.finditer(template):
        yield match.group(1), match.group(2)


def route_shape(route: RouteSpec) -> tuple[str | None, str]:
    """Two routes with the same shape match the same requests, whatever they call their parameters."""
    return route.host, PARAM.sub(lambda m: "{" + (m.group(2) or "str") + "}", route.path)


def cross_reference_issues(file: RouteFile) -> list[tuple[Loc, str]]:
    """What only the whole file can tell: unknown names, unknown rewrite parameters, conflicting routes."""
    issues: list[tuple[Loc, str]] = []
    known = ", ".join(sorted(file.upstreams)) or "none defined"
    seen: dict[tuple[str | None, str], list[tuple[int, RouteSpec]]] = {}
    for index, route in enumerate(file.routes):
        loc: Loc = ("routes", index)
        if route.fanout is not None:
            if route.upstream is not None or route.rewrite is not None:
                issues.append((loc, "has both a fanout and an upstream/rewrite; a route does one or the other"))
            if "websocket" in route.model_fields_set and route.websocket is not None:
                issues.append(((*loc, "websocket"), "a fan-out route has no upstream to take WebSocket sessions"))
            issues.extend(_fanout_issues(route, route.fanout, (*loc, "fanout"), file, known))
        elif route.upstream is None:
            issues.append((loc, "needs an upstream (or a fanout)"))
        elif route.upstream not in file.upstreams:
            issues.append(((*loc, "upstream"), f"unknown upstream '{route.upstream}' (known: {known})"))
        issues.extend(_flag_issues(route, loc, file, known))
        if (edge_issue := rate_limit_key_issue(route.auth, route.rate_limit)) is not None:
            issues.append(((*loc, "rate_limit", "key"), edge_issue))
        if route.rewrite is not None:
            params = {name for name, _ in template_params(route.path)}
            for name, _ in template_params(route.rewrite):
                if name not in params:
                    issues.append(
                        ((*loc, "rewrite"), f"uses {{{name}}}, which the path {route.path!r} does not define")
                    )
        for other_index, other in seen.setdefault(route_shape(route), []):
            shared = sorted(set(route.methods) & set(other.methods))
            if shared:
                issues.append((loc, f"conflicts with routes[{other_index}] ({other.path}) for {', '.join(shared)}"))
        seen[route_shape(route)].append((index, route))
    return issues


# What `equals` must be for each flag type, so a `when:` rule can match at all.
_EQUALS_TYPES: dict[FlagKind, tuple[type, ...]] = {
    FlagKind.BOOL: (bool,),
    FlagKind.INT: (int,),
    FlagKind.FLOAT: (int, float),
    FlagKind.STR: (str,),
}


def _flag_issues(route: RouteSpec, loc: Loc, file: RouteFile, known: str) -> list[tuple[Loc, str]]:
    issues: list[tuple[Loc, str]] = []
    defined = file.flags.root
    names = ", ".join(sorted(defined)) or "none defined"
    for index, key in enumerate(route.flags):
        if key not in defined:
            issues.append(((*loc, "flags", index), f"unknown flag '{key}' (defined: {names})"))
    for index, rule in enumerate(route.when):
        rule_loc: Loc = (*loc, "when", index)
        if route.fanout is not None:
            issues.append((rule_loc, "a fan-out route has no upstream to steer"))
        if rule.upstream not in file.upstreams:
            issues.append(((*rule_loc, "upstream"), f"unknown upstream '{rule.upstream}' (known: {known})"))
        definition = defined.get(rule.flag)
        if definition is None:
            issues.append(((*rule_loc, "flag"), f"unknown flag '{rule.flag}' (defined: {names})"))
            continue
        expected = _EQUALS_TYPES.get(definition.type)
        mismatched = expected is not None and (
            not isinstance(rule.equals, expected) or (bool not in expected and isinstance(rule.equals, bool))
        )
        if mismatched:
            issues.append(((*rule_loc, "equals"), f"{rule.equals!r} can never equal a {definition.type} flag"))
    return issues


def _fanout_issues(
    route: RouteSpec, fanout: FanoutSpec, loc: Loc, file: RouteFile, known: str
) -> list[tuple[Loc, str]]:
    issues: list[tuple[Loc, str]] = []
    params = {name for name, _ in template_params(route.path)}
    for name, call in fanout.calls.items():
        call_loc: Loc = (*loc, "calls", name)
        if call.upstream not in file.upstreams:
            issues.append(((*call_loc, "upstream"), f"unknown upstream '{call.upstream}' (known: {known})"))
        for ref, fields in call.references():
            if ref == "query" and len(fields) == 1:
                continue
            if ref in fanout.calls and ref != name and fields:
                continue
            if ref in params and not fields:
                continue
            issues.append(
                (
                    (*call_loc, "path"),
                    f"{{{'.'.join((ref, *fields))}}} is neither a path parameter, "
                    "{query.NAME} nor {CALL.FIELD} of another call",
                )
            )
    cycle = _dependency_cycle(fanout)
    if cycle:
        issues.append(((*loc, "calls"), f"calls wait for each other in a cycle: {' -> '.join(cycle)}"))
    return issues


def _dependency_cycle(fanout: FanoutSpec) -> list[str]:
    """A cycle among calls that use each other's answers, or [] when they can be ordered."""
    waits = {
        name: {ref for ref, fields in call.references() if ref in fanout.calls and fields}
        for name, call in fanout.calls.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str]:
        if name in visiting:
            return [*visiting[visiting.index(name) :], name]
        if name in done:
            return []
        visiting.append(name)
        for other in sorted(waits[name]):
            cycle = visit(other)
            if cycle:
                return cycle
        visiting.pop()
        done.add(name)
        return []

    for name in fanout.calls:
        cycle = visit(name)
        if cycle:
            return cycle
    return []
