"""A tracing backend that keeps nothing: what the gateway's OTLP/HTTP exporter talks to while tracing is measured.

`python otlp_sink.py PORT` answers every POST under /v1/traces with an empty ExportTraceServiceResponse, as a
collector would, and counts what arrived per path (posts, bytes, spans); GET /stats returns those counts as
JSON, so the runner can tell whether a variant exported anything. Each variant posts to a path of its own.
"""

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()
_lock = threading.Lock()
_counts: dict[str, dict[str, int]] = {}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not self.path.startswith("/v1/traces"):
            self._answer(404, b"", "text/plain")
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with _lock:
            counts = _counts.setdefault(self.path, {"posts": 0, "bytes": 0, "spans": 0})
            counts["posts"] += 1
            counts["bytes"] += len(body)
            counts["spans"] += spans
        self._answer(200, _EMPTY_RESPONSE, "application/x-protobuf")

    def do_GET(self) -> None:
        if self.path != "/stats":
            self._answer(404, b"", "text/plain")
            return
        with _lock:
            text = json.dumps(_counts)
        self._answer(200, text.encode(), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per export would only fill the log


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
