"""Tracing for the gateway: a tracer provider from settings, and a client span around every upstream call.

The client span lives in the transport seam, so the aiohttp and httpx transports share it and calls that
are not proxying (fan-out branches, revalidations) get one too. It injects W3C `traceparent`, `tracestate`
and `baggage`, replacing any the client sent: the upstream's spans become children of this call.
With the exporter `none` none of this is installed, and requests pay nothing for it.
"""

from collections.abc import Mapping
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from asgi_gateway.config.settings import OtelSettings
from asgi_gateway.gateway.headers import Field
from asgi_gateway.gateway.upstreams import Body, Transport, UpstreamError, UpstreamResponse
from asgi_gateway.gateway.wrapped import WrappedTransport
from asgi_gateway.middleware.tracing import PROPAGATION_FIELDS
from asgi_gateway.middleware.types import Scope

TRACER_NAME = "gateway"


def build_tracer_provider(otel: OtelSettings) -> TracerProvider | None:
    """None for the exporter `none`; otherwise a provider exporting in batches, parent-based ratio sampling."""
    if otel.exporter == "none":
        return None
    resource = Resource.create({**otel.resource_attributes, "service.name": otel.service_name})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(otel.sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(_exporter(otel)))
    return provider


def _exporter(otel: OtelSettings) -> SpanExporter:
    if otel.exporter == "console":
        return ConsoleSpanExporter()
    headers = otel.headers or None
    if otel.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=otel.traces_endpoint or otel.endpoint, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    endpoint = otel.traces_endpoint or (otel.endpoint.rstrip("/") + "/v1/traces" if otel.endpoint else None)
    return HttpExporter(endpoint=endpoint, headers=headers)


def server_span_attributes(scope: Scope) -> Mapping[str, AttributeValue]:
    """What the route recorded about itself: which route and upstream answered, and how the cache did."""
    attributes: dict[str, AttributeValue] = {}
    route = scope.get("route")
    if route is not None and getattr(route, "name", None):
        attributes["gateway.route"] = route.name
    state = scope.get("state", {})
    for key, attribute in (("upstream", "gateway.upstream"), ("cache_status", "gateway.cache.status")):
        if key in state:
            attributes[attribute] = state[key]
    return attributes


class TracedTransport(WrappedTransport):
    """A client span (the stable HTTP client semantic conventions) around each request a transport sends."""

    def __init__(self, inner: Transport, *, upstream: str, tracer_provider: trace.TracerProvider) -> None:
        super().__init__(inner)
        self.upstream = upstream
        self.tracer = tracer_provider.get_tracer(TRACER_NAME)

    async def send(
        self, method: str, url: str, headers: list[Field], body: Body, *, deadline: float | None = None
    ) -> UpstreamResponse:
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            # The gateway's samplers are parent-based: a child of an unsampled span is never recorded, so the
            # call carries the current context as it is rather than paying for a span nobody keeps.
            return await self.inner.send(method, url, _with_context(headers), body, deadline=deadline)
        # Started with its attributes (one attribute set, which the sampler sees too) and never made current:
        # nothing below the transport reads the current span; the outgoing headers carry it.
        span = self.tracer.start_span(method, kind=SpanKind.CLIENT, attributes=self._attributes(method, url))
        try:
            outgoing = _with_context(headers, trace.set_span_in_context(span))
            response = await self.inner.send(method, url, outgoing, body, deadline=deadline)
            if span.is_recording():
                _describe_response(span, response)
            return response
        except Exception as exc:  # as `use_span` would: an exception event and an error status, not on cancellation
            if span.is_recording():
                if isinstance(exc, UpstreamError):
                    span.set_attribute("error.type", type(exc).__name__)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()

    def _attributes(self, method: str, url: str) -> dict[str, AttributeValue]:
        parts = urlsplit(url)
        return {
            "http.request.method": method,
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "url.full": url,
            "url.scheme": parts.scheme,
            "url.path": parts.path,
            "gateway.upstream": self.upstream,
        }


def _describe_response(span: trace.Span, response: UpstreamResponse) -> None:
    attributes: dict[str, AttributeValue] = {"http.response.status_code": response.status}
    if response.protocol_version is not None:
        attributes["network.protocol.version"] = response.protocol_version
    if response.status >= 400:  # a client span's error, where a server span's is only 5xx
        attributes["error.type"] = str(response.status)
        span.set_status(Status(StatusCode.ERROR))
    span.set_attributes(attributes)


def _with_context(headers: list[Field], context: Context | None = None) -> list[Field]:
    """The headers with a trace context (traceparent, tracestate, baggage; the current one unless given) in
    place of the client's."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context)
    outgoing = [(name, value) for name, value in headers if name not in _PROPAGATION_NAMES]
    outgoing += carrier.items()
    return outgoing


_PROPAGATION_NAMES = frozenset(name.decode("latin-1") for name in PROPAGATION_FIELDS)
