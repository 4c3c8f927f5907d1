"""Server spans for any Starlette app: the stock OpenTelemetry ASGI middleware, named by route template.

`OpenTelemetryMiddleware` starts the span before routing, named by the method alone (its own default, the raw
path, would make span names unbounded). Routing fills `scope["route"]` in the same scope dict; when the
response starts, the span is renamed `GET /users/{id}` and gets `http.route`.

Attributes follow the stable HTTP semantic conventions (`http.request.method`, `url.path`,
`http.response.status_code`, ...), which the instrumentation emits only when `OTEL_SEMCONV_STABILITY_OPT_IN`
names `http`; `http/dup` there adds the old names.
"""

import os
import random
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware, asgi_getter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TracerProvider
from opentelemetry.util.http import sanitize_method
from opentelemetry.util.types import AttributeValue

from asgi_gateway.middleware.types import ASGIApp, Message, Receive, Scope, Send

ScopeAttributes = Callable[[Scope], Mapping[str, AttributeValue]]
# Header fields the configured propagators read (W3C traceparent/tracestate and baggage by default).
PROPAGATION_FIELDS = frozenset(field.encode("latin-1") for field in propagate.get_global_textmap().fields)
SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


def tracing_middleware(
    app: ASGIApp,
    *,
    tracer_provider: TracerProvider,
    excluded_urls: str | None = None,
    scope_attributes: ScopeAttributes | None = None,
    records_new_traces: bool = True,
) -> ASGIApp:
    """A server span per request; receive/send spans off, so a streamed body is not one span per chunk.

    `excluded_urls` is a comma-separated list of regular expressions (OTel's format); `scope_attributes`
    adds attributes read from the scope after the app ran (for example what the route recorded in it).
    Say `records_new_traces=False` when the sampler never records a trace that starts here (a parent-based
    ratio of 0): requests without a sampled parent then skip the instrumentation, whose per-request work
    would only feed a span nobody records, and still carry a trace context for the calls they make.
    """
    named = _RouteSpanNamer(app, scope_attributes)
    opt_in_to_stable_http_conventions()
    middleware = OpenTelemetryMiddleware(
        named,
        tracer_provider=tracer_provider,
        excluded_urls=excluded_urls,
        default_span_details=_method_only,
        exclude_spans=["receive", "send"],
    )
    instrumented = cast(ASGIApp, middleware)
    return instrumented if records_new_traces else _UnrecordedUnlessParented(instrumented, app)


def opt_in_to_stable_http_conventions() -> None:
    """Ask the instrumentation for the stable HTTP conventions, through its one switch, the environment variable.

    It reads the variable once per process, when the first instrumentation is built, so this runs before that; an
    operator's own value is kept (`http/dup` for both sets of names), with `http` added when it names neither.
    """
    given = os.environ.get(SEMCONV_OPT_IN, "")
    if not {"http", "http/dup"} & {value.strip() for value in given.split(",")}:
        os.environ[SEMCONV_OPT_IN] = f"{given},http" if given.strip() else "http"


def _method_only(scope: Scope) -> tuple[str, dict[str, AttributeValue]]:
    """The span's name until routing renames it, and for requests no route matched: never the raw path."""
    method = sanitize_method(scope.get("method", "").strip())
    return ("HTTP" if method == "_OTHER" else method), {}  # the conventions' name for an unknown method


def _server_address(scope: Scope) -> dict[str, AttributeValue]:
    """`server.address` and `server.port` as the conventions ask: the host the client asked for (Host, with the
    scheme's port when it names none), else the local socket. The instrumentation takes the socket's, with the
    port inside the address (`127.0.0.1:8080`)."""
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    if host is not None:
        parts = urlsplit("//" + host.decode("latin-1"))
        try:
            port = parts.port or (443 if scope.get("scheme") == "https" else 80)
        except ValueError:  # a port that is no number: the socket's stands
            port = None
        if parts.hostname and port:
            return {"server.address": parts.hostname, "server.port": port}
    server = scope.get("server")
    return {"server.address": server[0]} if server else {}


class _UnrecordedUnlessParented:
    def __init__(self, instrumented: ASGIApp, plain: ASGIApp) -> None:
        self.instrumented = instrumented
        self.plain = plain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.instrumented(scope, receive, send)
            return
        carries_context = any(name in PROPAGATION_FIELDS for name, _ in scope["headers"])
        incoming = propagate.extract(cast(dict[str, Any], scope), getter=asgi_getter) if carries_context else None
        parent = trace.get_current_span(incoming).get_span_context()
        if parent.is_valid and parent.trace_flags.sampled:
            await self.instrumented(scope, receive, send)
            return
        if not parent.is_valid:  # a new trace, unsampled: the upstream still learns its id
            parent = SpanContext(random.getrandbits(128), random.getrandbits(64), False, TraceFlags(0))
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(parent), incoming))
        try:
            await self.plain(scope, receive, send)
        finally:
            context.detach(token)


class _RouteSpanNamer:
    """Names the span when the response starts: routing is done by then, and the span is still open
    (the OTel middleware ends it with the last body message). Its server address is set there too."""

    def __init__(self, app: ASGIApp, scope_attributes: ScopeAttributes | None) -> None:
        self.app = app
        self.scope_attributes = scope_attributes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_and_name(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._describe(scope)
            await send(message)

        await self.app(scope, receive, send_and_name)

    def _describe(self, scope: Scope) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes = _server_address(scope)  # one attribute update: each takes the span's lock and checks every value
        template = getattr(scope.get("route"), "path_format", None)
        if template:
            span.update_name(f"{scope['method']} {template}")
            attributes["http.route"] = template
        if self.scope_attributes is not None:
            attributes.update(self.scope_attributes(scope))
        span.set_attributes(attributes)
