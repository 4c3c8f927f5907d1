"""ConditionalMiddleware against real ASGI apps: 304 for reads, 412 for writes, generated ETags, streaming."""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import xxhash
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from asgi_gateway.middleware.conditional import (
    ConditionalMiddleware,
    Validators,
    failed_precondition,
    is_not_modified,
    not_modified_start,
)
from asgi_gateway.middleware.etags import EntityTag
from asgi_gateway.middleware.types import ASGIApp, Message, Receive, Scope, Send

LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
ClientFactory = Callable[..., httpx.AsyncClient]  # (document, **ConditionalMiddleware options)


def tag_of(body: bytes, *, weak: bool = False) -> str:
    return f'{"W/" if weak else ""}"{xxhash.xxh3_128_hexdigest(body)}"'


@dataclass
class Document:
    """One resource behind a small Starlette app; the app records what reached it."""

    body: bytes = b"version 1"
    exists: bool = True
    own_etag: bool = False  # an ETag-aware upstream: "v<version>", evaluates its own If-None-Match/If-Match
    last_modified: str | None = None
    version: int = 1
    reads: list[Request] = field(default_factory=list)
    writes: list[Request] = field(default_factory=list)
    background_runs: int = 0

    def validators(self) -> dict[str, str]:
        headers = {"etag": f'"v{self.version}"'} if self.own_etag else {}
        if self.last_modified is not None:
            headers["last-modified"] = self.last_modified
        return headers

    def app(self) -> Starlette:
        async def read(request: Request) -> Response:
            self.reads.append(request)
            if not self.exists:
                return Response(b"no such document", status_code=404, media_type="text/plain")
            headers = self.validators()
            if self.own_etag and request.headers.get("if-none-match") == headers["etag"]:
                return Response(status_code=304, headers={**headers, "x-answered-by": "upstream"})
            return Response(
                self.body,
                media_type="text/plain",
                headers={**headers, "cache-control": "max-age=60", "vary": "accept", "x-extra": "1"},
                background=BackgroundTask(self.ran_in_background),
            )

        async def write(request: Request) -> Response:
            if self.own_etag and request.headers.get("if-match", f'"v{self.version}"') != f'"v{self.version}"':
                return Response(status_code=412, headers={"x-answered-by": "upstream"})
            self.writes.append(request)
            self.body, self.exists, self.version = await request.body(), True, self.version + 1
            return Response(status_code=204)

        return Starlette(
            routes=[
                Route("/doc", read, methods=["GET"]),
                Route("/doc", write, methods=["PUT", "PATCH", "DELETE", "POST"]),
            ]
        )

    async def ran_in_background(self) -> None:
        self.background_runs += 1


@pytest.fixture
def document() -> Document:
    return Document()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    clients: list[httpx.AsyncClient] = []

    def make(document: Document, **options: Any) -> httpx.AsyncClient:
        app = ConditionalMiddleware(document.app(), **options)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


# ---------------------------------------------------------------------------------------------- reads


@pytest.mark.anyio
async def test_generated_etag_then_304_with_only_the_permitted_headers(
    document: Document, make_client: ClientFactory
) -> None:
    client = make_client(document)
    first = await client.get("/doc")
    assert (first.status_code, first.content, first.headers["etag"]) == (200, b"version 1", tag_of(b"version 1"))

    second = await client.get("/doc", headers={"If-None-Match": first.headers["etag"]})

    assert (second.status_code, second.content) == (304, b"")
    assert dict(second.headers) == {"etag": tag_of(b"version 1"), "cache-control": "max-age=60", "vary": "accept"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        (tag_of(b"version 1"), 304),
        (tag_of(b"version 1", weak=True), 304),
        (f'"other", {tag_of(b"version 1")}', 304),
        (f'"a,b", {tag_of(b"version 1")}', 304),
        ("*", 304),
        ('"other"', 200),
        ('W/"other", "a,b"', 200),
        (tag_of(b"version 1").strip('"'), 200),
        (f"{tag_of(b'version 1')} junk", 200),
    ],
    ids=[
        "exact",
        "weak-form-matches-weakly",
        "in-a-list",
        "after-tag-with-comma",
        "star",
        "other-tag",
        "other-tags",
        "malformed-unquoted-ignored",
        "malformed-trailing-junk-ignored",
    ],
)
async def test_if_none_match_against_generated_etag(
    document: Document, make_client: ClientFactory, if_none_match: str, status: int
) -> None:
    response = await make_client(document).get("/doc", headers={"If-None-Match": if_none_match})
    assert response.status_code == status
    assert response.headers["etag"] == tag_of(b"version 1")


@pytest.mark.anyio
async def test_if_none_match_on_several_header_lines_is_one_list(
    document: Document, make_client: ClientFactory
) -> None:
    headers = [("If-None-Match", '"other"'), ("If-None-Match", tag_of(b"version 1"))]
    response = await make_client(document).get("/doc", headers=headers)
    assert response.status_code == 304


@pytest.mark.anyio
async def test_changed_body_yields_new_etag_and_200(document: Document, make_client: ClientFactory) -> None:
    client = make_client(document)
    old = (await client.get("/doc")).headers["etag"]
    document.body = b"version 2"

    response = await client.get("/doc", headers={"If-None-Match": old})

    assert (response.status_code, response.content) == (200, b"version 2")
    assert response.headers["etag"] == tag_of(b"version 2") != old


@pytest.mark.anyio
async def test_head_gets_the_same_etag_as_get_and_no_body(document: Document, make_client: ClientFactory) -> None:
    client = make_client(document)
    get = await client.get("/doc")

    head = await client.head("/doc")
    conditional_head = await client.head("/doc", headers={"If-None-Match": get.headers["etag"]})

    assert (head.status_code, head.content, head.headers["etag"]) == (200, b"", get.headers["etag"])
    assert head.headers["content-length"] == get.headers["content-length"] == "9"
    assert (conditional_head.status_code, conditional_head.content) == (304, b"")
    assert [request.method for request in document.reads] == ["GET", "GET", "GET"]


@pytest.mark.anyio
async def test_head_without_generation_stays_head(document: Document, make_client: ClientFactory) -> None:
    document.own_etag = True
    response = await make_client(document, generate_etag=False).head("/doc", headers={"If-None-Match": '"v1"'})
    assert (response.status_code, document.reads[0].method) == (304, "HEAD")


@pytest.mark.anyio
async def test_weak_generation(document: Document, make_client: ClientFactory) -> None:
    client = make_client(document, weak=True)
    first = await client.get("/doc")
    second = await client.get("/doc", headers={"If-None-Match": tag_of(b"version 1")})
    assert (first.headers["etag"], second.status_code) == (tag_of(b"version 1", weak=True), 304)


@pytest.mark.anyio
async def test_generation_off_adds_no_etag(document: Document, make_client: ClientFactory) -> None:
    client = make_client(document, generate_etag=False)
    response = await client.get("/doc", headers={"If-None-Match": tag_of(b"version 1")})
    assert (response.status_code, "etag" in response.headers) == (200, False)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"If-Modified-Since": LAST_MODIFIED}, 304),
        ({"If-Modified-Since": "Sunday, 06-Nov-94 08:49:37 GMT"}, 304),
        ({"If-Modified-Since": "Sun Nov  6 08:49:37 1994"}, 304),
        ({"If-Modified-Since": "Mon, 07 Nov 1994 08:49:37 GMT"}, 304),
        ({"If-Modified-Since": "Sun, 06 Nov 1994 08:49:36 GMT"}, 200),
        ({"If-Modified-Since": "garbage"}, 200),
        ({"If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 +0000"}, 200),
        ([("If-Modified-Since", LAST_MODIFIED), ("If-Modified-Since", LAST_MODIFIED)], 200),
        ({"If-Modified-Since": LAST_MODIFIED, "If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": LAST_MODIFIED, "If-None-Match": "no quotes"}, 304),
    ],
    ids=[
        "imf-fixdate-equal",
        "rfc850-equal",
        "asctime-equal",
        "later",
        "one-second-earlier",
        "garbage-ignored",
        "numeric-zone-ignored",
        "two-dates-ignored",
        "if-none-match-wins",
        "malformed-if-none-match-ignored",
    ],
)
async def test_if_modified_since(document: Document, make_client: ClientFactory, headers: Any, status: int) -> None:
    document.last_modified = LAST_MODIFIED
    response = await make_client(document).get("/doc", headers=headers)
    assert response.status_code == status
    assert response.headers["last-modified"] == LAST_MODIFIED


@pytest.mark.anyio
async def test_last_modified_only_upstream_also_gets_generated_etag(
    document: Document, make_client: ClientFactory
) -> None:
    document.last_modified = LAST_MODIFIED
    client = make_client(document)
    first = await client.get("/doc")
    second = await client.get("/doc", headers={"If-None-Match": first.headers["etag"]})
    assert (first.headers["etag"], first.headers["last-modified"]) == (tag_of(b"version 1"), LAST_MODIFIED)
    assert (second.status_code, second.headers["last-modified"]) == (304, LAST_MODIFIED)


@pytest.mark.anyio
async def test_if_modified_since_without_last_modified_is_200(document: Document, make_client: ClientFactory) -> None:
    response = await make_client(document).get("/doc", headers={"If-Modified-Since": LAST_MODIFIED})
    assert response.status_code == 200


@pytest.mark.anyio
async def test_upstream_etag_is_kept_and_evaluated(document: Document, make_client: ClientFactory) -> None:
    document.own_etag = True
    client = make_client(document)
    first = await client.get("/doc")
    second = await client.get("/doc", headers={"If-None-Match": 'W/"v1"'})
    assert first.headers["etag"] == '"v1"'
    assert (second.status_code, second.headers["etag"], "x-answered-by" in second.headers) == (304, '"v1"', False)


@pytest.mark.anyio
async def test_upstream_own_304_passes_through(document: Document, make_client: ClientFactory) -> None:
    """Conditional headers reach the app; its 304 (marked x-answered-by) is forwarded as it is."""
    document.own_etag = True
    response = await make_client(document).get("/doc", headers={"If-None-Match": '"v1"'})
    assert (response.status_code, response.headers["x-answered-by"], response.headers["etag"]) == (
        304,
        "upstream",
        '"v1"',
    )
    assert document.reads[0].headers["if-none-match"] == '"v1"'


@pytest.mark.anyio
async def test_missing_resource_ignores_preconditions(document: Document, make_client: ClientFactory) -> None:
    document.exists = False
    response = await make_client(document).get("/doc", headers={"If-None-Match": "*"})
    assert (response.status_code, response.content, "etag" in response.headers) == (404, b"no such document", False)


@pytest.mark.anyio
async def test_304_does_not_cut_short_background_work(document: Document, make_client: ClientFactory) -> None:
    document.own_etag = True
    response = await make_client(document).get("/doc", headers={"If-None-Match": 'W/"v1"'})
    assert (response.status_code, document.background_runs) == (304, 1)


@pytest.mark.anyio
async def test_if_range_reaches_the_app_intact(document: Document, make_client: ClientFactory) -> None:
    await make_client(document).get("/doc", headers={"If-Range": '"v1"', "Range": "bytes=0-1"})
    assert (document.reads[0].headers["if-range"], document.reads[0].headers["range"]) == ('"v1"', "bytes=0-1")


def status_app(status: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"body"})

    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "tagged"),
    [(200, True), (203, True), (204, True), (206, False), (301, False), (404, False), (500, False)],
    ids=["200", "203", "204", "206-partial", "301", "404", "500"],
)
async def test_only_whole_successful_responses_get_etags(status: int, tagged: bool) -> None:
    transport = httpx.ASGITransport(app=ConditionalMiddleware(status_app(status)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert ("etag" in response.headers, response.status_code) == (tagged, status)


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "CONNECT"], ids=str.lower)
async def test_other_methods_pass_through(method: str) -> None:
    transport = httpx.ASGITransport(app=ConditionalMiddleware(status_app(200)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, "/", headers={"If-None-Match": "*", "If-Match": '"x"'})
    assert (response.status_code, response.content, "etag" in response.headers) == (200, b"body", False)


@pytest.mark.anyio
@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
async def test_non_http_scopes_pass_through(scope_type: str) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    scope: Scope = {"type": scope_type, "headers": [], "method": "GET"}
    await ConditionalMiddleware(app)(scope, empty_request(), record_into([]))
    assert seen == [scope]


@pytest.mark.parametrize(
    "options",
    [
        {"max_body_bytes": 0},
        {"max_body_bytes": -1},
        {"max_body_bytes": True},
        {"max_body_bytes": 1.5},
        {"preconditions": "x"},
    ],
    ids=["zero-limit", "negative-limit", "bool-limit", "float-limit", "unknown-mode"],
)
def test_invalid_options_raise_value_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        ConditionalMiddleware(status_app(200), **options)


# ---------------------------------------------------------------------------------------------- writes


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "POST"])
async def test_stale_if_match_is_412_and_never_reaches_the_app(
    document: Document, make_client: ClientFactory, method: str
) -> None:
    client = make_client(document)
    stale = (await client.get("/doc")).headers["etag"]
    document.body = b"changed by someone else"

    response = await client.request(method, "/doc", content=b"mine", headers={"If-Match": stale})

    assert (response.status_code, response.headers["content-type"]) == (412, "application/problem+json")
    assert response.json()["detail"] == "If-Match does not hold for the current representation"
    assert (document.writes, document.body) == ([], b"changed by someone else")


@pytest.mark.anyio
async def test_current_if_match_is_let_through_without_the_header(
    document: Document, make_client: ClientFactory
) -> None:
    client = make_client(document)
    current = (await client.get("/doc")).headers["etag"]

    response = await client.put("/doc", content=b"version 2", headers={"If-Match": current, "X-Keep": "1"})

    assert (response.status_code, document.body) == (204, b"version 2")
    [write] = document.writes
    assert ("if-match" in write.headers, write.headers["x-keep"]) == (False, "1")


@pytest.mark.anyio
async def test_internal_get_asks_for_the_whole_current_representation(
    document: Document, make_client: ClientFactory
) -> None:
    headers = {
        "If-Match": tag_of(b"version 1"),
        "If-Modified-Since": LAST_MODIFIED,
        "Range": "bytes=0-1",
        "Content-Type": "text/plain",
        "Authorization": "Bearer t",
    }
    await make_client(document).put("/doc?x=1", content=b"version 2", headers=headers)
    [internal_get] = document.reads
    assert (internal_get.method, internal_get.url.query, internal_get.headers["authorization"]) == (
        "GET",
        "x=1",
        "Bearer t",
    )
    assert {"if-match", "if-modified-since", "range", "content-type", "content-length"}.isdisjoint(internal_get.headers)
    assert (await internal_get.body(), len(document.writes)) == (b"", 1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("exists", "headers", "status"),
    [
        (True, {"If-Match": "*"}, 204),
        (False, {"If-Match": "*"}, 412),
        (False, {"If-Match": tag_of(b"version 1")}, 412),
        (True, {"If-None-Match": "*"}, 412),
        (False, {"If-None-Match": "*"}, 204),
        (True, {"If-None-Match": tag_of(b"version 1", weak=True)}, 412),
        (True, {"If-None-Match": '"other"'}, 204),
        (True, {"If-Match": "not a tag"}, 204),
        (True, {"If-Match": f'"other", {tag_of(b"version 1")}'}, 204),
        (True, {"If-Match": tag_of(b"version 1", weak=True)}, 412),
    ],
    ids=[
        "if-match-star-exists",
        "if-match-star-missing",
        "if-match-tag-missing",
        "if-none-match-star-exists",
        "if-none-match-star-missing-creates",
        "if-none-match-weak-tag-matches",
        "if-none-match-other-tag",
        "malformed-if-match-ignored",
        "if-match-list",
        "if-match-weak-form-never-matches",
    ],
)
async def test_write_preconditions_on_generated_etags(
    document: Document, make_client: ClientFactory, exists: bool, headers: dict[str, str], status: int
) -> None:
    document.exists = exists
    response = await make_client(document).put("/doc", content=b"new", headers=headers)
    assert (response.status_code, len(document.writes)) == (status, 1 if status == 204 else 0)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"If-Unmodified-Since": LAST_MODIFIED}, 204),
        ({"If-Unmodified-Since": "Sunday, 06-Nov-94 08:49:38 GMT"}, 204),
        ({"If-Unmodified-Since": "Sun Nov  6 08:49:36 1994"}, 412),
        ({"If-Unmodified-Since": "garbage"}, 204),
        ({"If-Unmodified-Since": "Sun Nov  6 08:49:36 1994", "If-Match": tag_of(b"version 1")}, 204),
        ({"If-Unmodified-Since": LAST_MODIFIED, "If-Match": '"other"'}, 412),
    ],
    ids=["equal", "later-rfc850", "earlier-asctime", "garbage-ignored", "ignored-under-if-match", "if-match-decides"],
)
async def test_if_unmodified_since(
    document: Document, make_client: ClientFactory, headers: dict[str, str], status: int
) -> None:
    document.last_modified = LAST_MODIFIED
    response = await make_client(document).put("/doc", content=b"new", headers=headers)
    assert (response.status_code, len(document.writes)) == (status, 1 if status == 204 else 0)
    if status == 204:
        assert "if-unmodified-since" not in document.writes[0].headers


@pytest.mark.anyio
async def test_auto_forwards_preconditions_to_an_app_with_its_own_etags(
    document: Document, make_client: ClientFactory
) -> None:
    document.own_etag = True
    client = make_client(document)

    stale = await client.put("/doc", content=b"new", headers={"If-Match": '"v0"'})
    current = await client.put("/doc", content=b"new", headers={"If-Match": '"v1"'})

    assert (stale.status_code, stale.headers["x-answered-by"]) == (412, "upstream")
    assert current.status_code == 204
    assert document.writes[0].headers["if-match"] == '"v1"'


@pytest.mark.anyio
async def test_gateway_mode_evaluates_even_an_apps_own_etags(document: Document, make_client: ClientFactory) -> None:
    document.own_etag = True
    client = make_client(document, preconditions="gateway")

    stale = await client.put("/doc", content=b"new", headers={"If-Match": '"v0"'})
    current = await client.put("/doc", content=b"new", headers={"If-Match": '"v1"'})

    assert (stale.status_code, stale.headers["content-type"], "x-answered-by" in stale.headers) == (
        412,
        "application/problem+json",
        False,
    )
    assert (current.status_code, "if-match" in document.writes[0].headers) == (204, False)


@pytest.mark.anyio
async def test_upstream_mode_forwards_untouched_without_an_internal_get(
    document: Document, make_client: ClientFactory
) -> None:
    response = await make_client(document, preconditions="upstream").put(
        "/doc", content=b"new", headers={"If-Match": '"stale"'}
    )
    assert (response.status_code, document.reads, document.writes[0].headers["if-match"]) == (204, [], '"stale"')


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "headers"),
    [({}, {}), ({"generate_etag": False}, {"If-Match": '"stale"'})],
    ids=["no-preconditions", "auto-without-generation"],
)
async def test_auto_makes_no_internal_get_when_it_cannot_matter(
    document: Document, make_client: ClientFactory, options: dict[str, Any], headers: dict[str, str]
) -> None:
    response = await make_client(document, **options).put("/doc", content=b"new", headers=headers)
    assert (response.status_code, document.reads, len(document.writes)) == (204, [], 1)


@pytest.mark.anyio
async def test_write_against_a_body_too_large_to_tag_fails_if_match(
    document: Document, make_client: ClientFactory
) -> None:
    """No ETag can be made for it, so no listed tag can match (RFC 9110 §13.1.1)."""
    response = await make_client(document, max_body_bytes=4).put(
        "/doc", content=b"x", headers={"If-Match": tag_of(b"version 1")}
    )
    assert (response.status_code, document.writes) == (412, [])


# ---------------------------------------------------------------------------------------------- ASGI level


async def receive_nothing() -> Message:
    """An empty request body, then nothing: an idle client that stays connected."""
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


def empty_request() -> Receive:
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            return await receive_nothing()
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


def record_into(messages: list[Message], reached: tuple[bytes, anyio.Event] | None = None) -> Send:
    async def send(message: Message) -> None:
        messages.append(message)
        if reached is not None and message.get("body") == reached[0]:
            reached[1].set()

    return send


def http_scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {"type": "http", "method": method, "path": "/", "query_string": b"", "headers": headers or []}


def stepping_app(start_headers: list[tuple[bytes, bytes]], first: bytes, released: anyio.Event) -> ASGIApp:
    """Sends `first`, then waits for the chunk to be released before producing the second."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": start_headers})
        await send({"type": "http.response.body", "body": first, "more_body": True})
        await released.wait()
        await send({"type": "http.response.body", "body": b"second", "more_body": False})

    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("start_headers", "first", "request_headers"),
    [
        ([(b"content-type", b"text/event-stream")], b"data: 1\n\n", []),
        ([(b"content-type", b"Text/Event-Stream; charset=utf-8")], b"data: 1\n\n", []),
        ([(b"content-type", b"text/event-stream"), (b"etag", b'"s1"')], b"data: 1\n\n", [(b"if-none-match", b'"s1"')]),
        ([], b"x" * 11, []),
        ([(b"content-length", b"17")], b"first", []),
    ],
    ids=[
        "event-stream",
        "event-stream-with-parameters",
        "event-stream-never-answered-304",
        "body-over-limit",
        "content-length-over-limit",
    ],
)
async def test_streamed_responses_are_not_buffered(
    start_headers: list[tuple[bytes, bytes]], first: bytes, request_headers: list[tuple[bytes, bytes]]
) -> None:
    """The first chunk reaches `send` before the app produces the second: nothing waits for the whole body."""
    released = anyio.Event()
    messages: list[Message] = []
    middleware = ConditionalMiddleware(stepping_app(start_headers, first, released), max_body_bytes=10)

    with anyio.fail_after(5):
        await middleware(http_scope(headers=request_headers), empty_request(), record_into(messages, (first, released)))

    assert [message.get("body") for message in messages] == [None, first, b"second"]
    assert messages[0]["status"] == 200
    assert Headers(raw=messages[0]["headers"]).getlist("etag") == [
        h[1].decode() for h in start_headers if h[0] == b"etag"
    ]


@pytest.mark.anyio
async def test_chunks_held_before_the_limit_is_passed_are_flushed_in_order() -> None:
    released = anyio.Event()
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b"67890", "more_body": True})
        await released.wait()
        await send({"type": "http.response.body", "body": b"end", "more_body": False})

    with anyio.fail_after(5):
        await ConditionalMiddleware(app, max_body_bytes=8)(
            http_scope(), empty_request(), record_into(messages, (b"67890", released))
        )

    assert [(m.get("body"), m.get("more_body")) for m in messages] == [
        (None, None),
        (b"12345", True),
        (b"67890", True),
        (b"end", False),
    ]


def endless_stream(stopped: anyio.Event, headers: dict[str, str] | None = None) -> ASGIApp:
    """Server-sent events that never end unless the app is stopped."""

    async def events() -> AsyncIterator[bytes]:
        while True:
            yield b"data: tick\n\n"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await StreamingResponse(events(), media_type="text/event-stream", headers=headers)(scope, receive, send)
        finally:
            stopped.set()

    return app


@pytest.mark.anyio
async def test_head_of_an_endless_stream_ends_and_stops_the_app() -> None:
    stopped = anyio.Event()
    messages: list[Message] = []
    with anyio.fail_after(5):
        await ConditionalMiddleware(endless_stream(stopped))(http_scope("HEAD"), empty_request(), record_into(messages))
    assert [(m["type"], m.get("body")) for m in messages] == [
        ("http.response.start", None),
        ("http.response.body", b""),
    ]
    assert stopped.is_set()


@pytest.mark.anyio
async def test_304_before_the_body_ended_drops_the_rest_and_lets_the_app_finish() -> None:
    finished = anyio.Event()
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"etag", b'"s1"')]})
        for chunk in (b"one", b"two"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        finished.set()

    await ConditionalMiddleware(app)(
        http_scope(headers=[(b"if-none-match", b'"s1"')]), empty_request(), record_into(messages)
    )
    assert [(m.get("status"), m.get("body")) for m in messages] == [(304, None), (None, b"")]
    assert finished.is_set()


@pytest.mark.anyio
async def test_write_to_an_endless_stream_does_not_wait_for_it() -> None:
    """The internal GET sees an event stream (no tag can be made), stops it, and refuses the If-Match."""
    stopped = anyio.Event()
    messages: list[Message] = []
    app = ConditionalMiddleware(endless_stream(stopped))
    with anyio.fail_after(5):
        await app(http_scope("PUT", [(b"if-match", b'"x"')]), empty_request(), record_into(messages))
    assert (messages[0]["status"], stopped.is_set()) == (412, True)


@pytest.mark.anyio
async def test_pathsend_while_holding_is_forwarded_after_the_start() -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.pathsend", "path": "/tmp/file"})

    await ConditionalMiddleware(app)(http_scope(), empty_request(), record_into(messages))
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.pathsend"]
    assert "etag" not in Headers(raw=messages[0]["headers"])


# ---------------------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("request_headers", "response_headers", "expected"),
    [
        ({"if-none-match": '"a"'}, {"etag": 'W/"a"'}, True),
        ({"if-none-match": '"a"'}, {}, False),
        ({"if-none-match": "*"}, {}, True),
        ({"if-modified-since": LAST_MODIFIED}, {"last-modified": LAST_MODIFIED}, True),
        ({"if-modified-since": LAST_MODIFIED}, {"last-modified": "garbage"}, False),
        ({}, {"etag": '"a"', "last-modified": LAST_MODIFIED}, False),
    ],
    ids=["weak-match", "no-etag", "star", "date", "malformed-last-modified", "unconditional"],
)
def test_is_not_modified(request_headers: dict[str, str], response_headers: dict[str, str], expected: bool) -> None:
    assert is_not_modified(Headers(request_headers), Headers(response_headers)) is expected


def test_not_modified_start_keeps_only_rfc_9110_15_4_5_fields() -> None:
    stored = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"9"),
        (b"etag", b'"a"'),
        (b"cache-control", b"max-age=60"),
        (b"content-location", b"/doc"),
        (b"date", LAST_MODIFIED.encode()),
        (b"expires", LAST_MODIFIED.encode()),
        (b"vary", b"accept"),
        (b"last-modified", LAST_MODIFIED.encode()),
        (b"set-cookie", b"a=b"),
    ]
    assert not_modified_start(stored) == {"type": "http.response.start", "status": 304, "headers": stored[2:-1]}


@pytest.mark.parametrize(
    ("request_headers", "current", "expected"),
    [
        ({"if-match": '"a"'}, Validators(EntityTag("a")), None),
        ({"if-match": '"a"'}, Validators(EntityTag("b")), "If-Match"),
        ({"if-match": '"a"'}, None, "If-Match"),
        ({"if-match": "*"}, Validators(), None),
        ({"if-match": '"a"', "if-none-match": '"a"'}, Validators(EntityTag("a")), "If-None-Match"),
        ({"if-unmodified-since": "Sun, 06 Nov 1994 08:49:36 GMT"}, Validators(), None),
        ({"if-unmodified-since": "Sun, 06 Nov 1994 08:49:36 GMT"}, None, None),
        ({"if-none-match": "*"}, None, None),
        ({}, None, None),
    ],
    ids=[
        "if-match-holds",
        "if-match-other",
        "if-match-nothing-current",
        "if-match-star-untagged-representation",
        "if-none-match-after-if-match",
        "if-unmodified-since-without-last-modified",
        "if-unmodified-since-nothing-current",
        "if-none-match-star-nothing-current",
        "unconditional",
    ],
)
def test_failed_precondition(request_headers: dict[str, str], current: Validators | None, expected: str | None) -> None:
    assert failed_precondition(Headers(request_headers), current) == expected


def chunked_app(chunks: list[bytes], writes: list[Scope]) -> ASGIApp:
    """GET answers with `chunks` and no Content-Length; anything else is a write, recorded."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            writes.append(scope)
            await Response(status_code=204)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1})

    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("limit", "status", "writes"), [(10, 204, 1), (3, 412, 0)], ids=["hashed-in-chunks", "over-the-limit"]
)
async def test_internal_get_hashes_a_chunked_body_up_to_the_limit(limit: int, status: int, writes: int) -> None:
    recorded: list[Scope] = []
    messages: list[Message] = []
    app = ConditionalMiddleware(chunked_app([b"ab", b"cd"], recorded), max_body_bytes=limit)
    await app(http_scope("PUT", [(b"if-match", tag_of(b"abcd").encode())]), empty_request(), record_into(messages))
    assert (messages[0]["status"], len(recorded)) == (status, writes)


@pytest.mark.anyio
async def test_head_of_a_body_over_the_limit_sends_no_body_and_no_etag() -> None:
    messages: list[Message] = []
    app = ConditionalMiddleware(chunked_app([b"ab", b"cd", b"ef"], []), max_body_bytes=3)
    await app(http_scope("HEAD"), empty_request(), record_into(messages))
    assert [(m["type"], m.get("body")) for m in messages] == [
        ("http.response.start", None),
        ("http.response.body", b""),
    ]
    assert messages[0]["headers"] == []
