"""What tracing costs a proxied miss: `python bench/micro_tracing.py [off|0|1|floor [requests]]` (no mode: all four).

The gateway runs in this process and is called as an ASGI app, one request at a time, exporting over OTLP/HTTP
to bench/otlp_sink.py; the sink and the 1 KB origin (bench/pure_asgi.py under uvicorn) run in processes of their
own; the access log is off, so the output is only the figures. Each gateway is stopped before the next starts,
which flushes what its batch processor still holds, so the export thread's work for every span is in this
process too. Prints the CPU per request of each mode and what the sink got from it, then (mode `floor`) what
tracing costs before the gateway does anything: a no-op ASGI app inside one SDK span with a server span's
attributes, and under the stock ASGI instrumentation, each against the bare app (no export in either).

For instruction counts, run it under `valgrind --tool=callgrind` at two request counts and take the difference
of the totals: start-up and shutdown cancel out (the origin and the sink are not traced by valgrind).
"""

import asyncio
import json
import subprocess
import sys
import tempfile
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from harness import cpu_per_request, free_port, get_scope, wait_ready
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from asgi_gateway.config.loader import load_route_file
from asgi_gateway.config.settings import Settings
from asgi_gateway.gateway.app import Gateway
from asgi_gateway.middleware.tracing import tracing_middleware

BENCH = Path(__file__).resolve().parent

WARM = 50
HEADERS = [
    (b"host", b"gw"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, br"),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) bench"),
]


async def run(origin: str, sink: str, mode: str, count: int) -> float:
    otel = {} if mode == "off" else {"exporter": "otlp", "traces_endpoint": f"{sink}/v1/traces/{mode}"}
    if mode != "off":
        otel["sample_ratio"] = mode
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "routes.yaml"
        path.write_text(f'upstreams:\n  origin: {{url: "{origin}"}}\nroutes:\n  - {{path: /1k, upstream: origin}}\n')
        settings = Settings(routes_file=path, watch_routes=False, access_log="off", otel=otel)
        app = Gateway(settings, load_route_file(path))
        async with app.running():
            return await cpu_per_request(app, partial(get_scope, "/1k", [(b"host", b"gw")]), count, warm=WARM)


# What the stock instrumentation records on such a request under the stable HTTP conventions.
SERVER_SPAN_ATTRIBUTES = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "url.path": "/1k",
    "server.address": "gw",
    "server.port": 80,
    "network.protocol.version": "1.1",
    "client.address": "127.0.0.1",
    "client.port": 50000,
    "http.route": "/1k",
}


async def floors(count: int) -> dict[str, float]:
    """CPU per request of a no-op app, bare, inside one SDK span, and under the stock instrumentation."""
    tracer_provider = TracerProvider()  # no span processor: nothing is exported
    tracer = tracer_provider.get_tracer("floor")

    async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def in_one_span(scope: dict[str, Any], receive: Any, send: Any) -> None:
        span = tracer.start_span("GET /1k", kind=SpanKind.SERVER, attributes=SERVER_SPAN_ATTRIBUTES)
        await answer(scope, receive, send)
        span.set_attribute("http.response.status_code", 200)
        span.end()

    apps = {
        "no-op app": answer,
        "one SDK span": in_one_span,
        "stock ASGI instrumentation": tracing_middleware(answer, tracer_provider=tracer_provider),
    }
    scope = partial(get_scope, "/1k", [(b"host", b"gw")])
    return {name: await cpu_per_request(app, scope, count, warm=WARM) for name, app in apps.items()}


def main() -> None:
    modes = sys.argv[1:2] or ["off", "0", "1", "floor"]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    origin_port, sink_port = free_port(), free_port()
    origin = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "pure_asgi:app", "--port", str(origin_port), "--log-level", "warning"],
        cwd=BENCH,
    )
    sink = subprocess.Popen([sys.executable, str(BENCH / "otlp_sink.py"), str(sink_port)])
    try:
        origin_url, sink_url = f"http://127.0.0.1:{origin_port}", f"http://127.0.0.1:{sink_port}"
        wait_ready(f"{origin_url}/1k", alive=lambda: origin.poll() is None)
        wait_ready(f"{sink_url}/stats", alive=lambda: sink.poll() is None)
        for mode in modes:
            if mode == "floor":
                costs = asyncio.run(floors(count * 5))
                bare = costs.pop("no-op app")
                for name, seconds in costs.items():
                    print(f"{(seconds - bare) * 1e6:8.1f} µs CPU/req  {name}, around a no-op app")
                continue
            seconds = asyncio.run(run(origin_url, sink_url, mode, count))
            with urllib.request.urlopen(f"{sink_url}/stats") as response:
                exported = json.load(response).get(f"/v1/traces/{mode}", {})
            print(f"{seconds * 1e6:8.1f} µs CPU/req  tracing {mode:>3}  ({count} requests; exported {exported})")
    finally:
        for process in (origin, sink):
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
