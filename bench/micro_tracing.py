"""What tracing costs a proxied miss: `python bench/micro_tracing.py [off|0|1 [requests]]` (no mode: all three).

The gateway runs in this process and is called as an ASGI app, one request at a time, exporting over OTLP/HTTP
to bench/otlp_sink.py; the sink and the 1 KB origin (bench/pure_asgi.py under uvicorn) run in processes of their
own; the access log is off, so the output is only the figures. Each gateway is stopped before the next starts,
which flushes what its batch processor still holds, so the export thread's work for every span is in this
process too. Prints the CPU per request of each mode and what the sink got from it.

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

from harness import cpu_per_request, free_port, get_scope, wait_ready

from asgi_gateway.config.loader import load_route_file
from asgi_gateway.config.settings import Settings
from asgi_gateway.gateway.app import Gateway

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


def main() -> None:
    modes = sys.argv[1:2] or ["off", "0", "1"]
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
