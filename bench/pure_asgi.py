"""A plain ASGI app answering from memory: the ceiling of an ASGI server on this machine.

The "cache hit from the in-process tier" path is to be measured against it. It serves the origin's
documents with the origin's kind of headers, so the bytes on the wire match a proxied answer.
"""

from payloads import documents
from starlette.types import Receive, Scope, Send

RawHeaders = list[tuple[bytes, bytes]]

_NOT_FOUND: tuple[int, RawHeaders, bytes] = (404, [(b"content-type", b"text/plain"), (b"content-length", b"0")], b"")


def _answers() -> dict[str, tuple[int, RawHeaders, bytes]]:
    answers = {}
    for path, body in documents().items():
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"etag", b'"bench-' + path.strip("/").encode() + b'"'),
            (b"last-modified", b"Mon, 02 Nov 2026 10:00:00 GMT"),
        ]
        answers[path] = (200, headers, body)
    return answers


_ANSWERS = _answers()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    status, headers, body = _ANSWERS.get(scope["path"], _NOT_FOUND)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
