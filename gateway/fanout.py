"""Aggregate routes: several upstream calls, concurrently and bounded, answered as one JSON object.

Each call goes through the upstream's own transport, with its tracing and metrics, like a proxied request.
A call with a cache of its own is an internal GET through that cache (an ASGI app); the others go to the
transport directly, which spares them the ASGI round trip a proxy route needs for a client.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, quote

import msgspec
from opentelemetry import trace

from asgi_gateway.gateway.gather import Call, Outcome, gather
from asgi_gateway.gateway.headers import NO_RULES, Field, upstream_request_headers
from asgi_gateway.gateway.templates import PCHAR_SAFE, Template
from asgi_gateway.gateway.upstreams import Upstream, UpstreamTimeout
from asgi_gateway.middleware.internal import call_internal
from asgi_gateway.middleware.problem import problem_response
from asgi_gateway.middleware.tracing import PROPAGATION_FIELDS
from asgi_gateway.middleware.types import ASGIApp, Header, RawHeaders, Receive, Scope, Send

_QUERY_VALUE_SAFE = "!$'()*+,;:@-._~/?"
_parse = msgspec.json.Decoder().decode
_check_syntax = msgspec.json.Decoder(msgspec.Raw).decode  # the grammar only: no objects built, UTF-8 unchecked
_encode = msgspec.json.Encoder().encode


class CallFailed(Exception):
    pass


class Answer(NamedTuple):
    """A call's JSON answer as received, for the merged answer, and parsed where something reads its value:
    a later call's template, or a merge at the root (None otherwise: parsing is most of a call's cost)."""

    value: Any
    raw: bytes


@dataclass(frozen=True, slots=True)
class FanoutCall:
    name: str
    upstream: Upstream
    template: Template  # the call's path, split once
    method: str = "GET"
    required: bool = True
    timeout: float | None = None
    forward: frozenset[bytes] = frozenset()
    after: tuple[str, ...] = ()
    cache: ASGIApp | None = None  # the call's cache, over a proxy to `upstream`


def render(
    template: Template, path_params: Mapping[str, Any], query: Mapping[str, list[str]], answers: Mapping[str, Answer]
) -> str:
    """Fill `{param}`, `{query.name}` and `{call.field}`, percent-encoding each value for where it lands."""
    if len(template) == 1:  # no fields: the path as configured
        return template[0][0]
    out: list[str] = []
    in_query = False
    for literal, field in template:
        out.append(literal)
        in_query = in_query or "?" in literal
        if field is None:
            continue
        name, *fields = field.split(".")
        if name == "query" and fields:
            value: Any = query.get(fields[0], [""])[0]
        elif fields:
            value = answers[name].value
            for part in fields:
                if not isinstance(value, dict) or part not in value:
                    raise CallFailed(f"{{{field}}}: the answer of '{name}' has no such field")
                value = value[part]
        else:
            value = path_params[name]
        text = value if isinstance(value, str) else json.dumps(value)
        out.append(quote(text, safe=_QUERY_VALUE_SAFE if in_query else PCHAR_SAFE))
    return "".join(out)


class FanoutHandler:
    """Runs a route's calls under its concurrency bound and deadline and merges the answers."""

    def __init__(
        self,
        calls: Sequence[FanoutCall],
        *,
        max_concurrency: int,
        deadline: float,
        merge: Literal["by_name", "root"] = "by_name",
        forward: frozenset[bytes] = PROPAGATION_FIELDS,  # client headers every call carries, beside its own
        shared_limit: asyncio.Semaphore | None = None,
    ) -> None:
        self.calls = calls
        self._required = frozenset(call.name for call in calls if call.required)
        self._members = {call.name: _encode(call.name) + b":" for call in calls}  # `"name":`, encoded once
        # answers whose values are read: by a later call's `{call.field}` (`{query.name}` is the client's query)
        read = {field.partition(".")[0] for call in calls for _, field in call.template if field and "." in field}
        self._parsed = frozenset(self._members) if merge == "root" else frozenset(read - {"query"})
        self.max_concurrency = max_concurrency
        self.deadline = deadline
        self.merge = merge
        self._forwarded = {call.name: forward | call.forward for call in calls}  # what each call carries
        # the most time each call can take, which its transport is told: gather gives up on it by then
        self._bounds = {call.name: deadline if call.timeout is None else min(call.timeout, deadline) for call in calls}
        self.shared_limit = shared_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_query = scope["query_string"]
        query = parse_qs(raw_query.decode("latin-1"), keep_blank_values=True) if raw_query else {}
        prepared: dict[tuple[str, frozenset[bytes]], list[Field]] = {}  # by upstream host and forward set
        outcomes = await gather(
            [
                Call(
                    call.name,
                    self._runner(call, scope, query, prepared),
                    required=call.required,
                    timeout=call.timeout,
                    after=call.after,
                )
                for call in self.calls
            ],
            max_concurrency=self.max_concurrency,
            deadline=self.deadline,
            shared_limit=self.shared_limit,
        )
        statuses = {name: outcome.status for name, outcome in outcomes.items()}
        scope.setdefault("state", {})["fanout"] = statuses  # for metrics
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes({f"gateway.fanout.{name}": status for name, status in statuses.items()})
        await self._answer(outcomes, scope, receive, send)

    def _runner(
        self,
        call: FanoutCall,
        scope: Scope,
        query: Mapping[str, list[str]],
        prepared: dict[tuple[str, frozenset[bytes]], list[Field]],
    ) -> Callable[[Mapping[str, Answer]], Awaitable[Answer]]:
        """`prepared` holds the request's header fields for each upstream and forward set: calls that share
        both send the same fields, made once (transports do not change the list they are given)."""

        parse = call.name in self._parsed

        async def run(answers: Mapping[str, Answer]) -> Answer:
            target = render(call.template, scope.get("path_params", {}), query, answers)
            forward = self._forwarded[call.name]
            if call.cache is not None:
                status, headers, body = await call_internal(call.cache, _call_scope(scope, call, target, forward))
            else:
                fields = prepared.get((call.upstream.host, forward))
                if fields is None:
                    fields = prepared[call.upstream.host, forward] = _call_fields(call.upstream, scope, forward)
                status, headers, body = await _fetch(call, target, fields, self._bounds[call.name])
            if status == 504:
                raise TimeoutError("upstream timed out")
            if not 200 <= status < 300:
                raise CallFailed(f"upstream answered {status}")
            content_type = _content_type(headers)
            if not (content_type.startswith(b"application/json") or b"+json" in content_type):
                raise CallFailed(f"not JSON (content-type {content_type.decode('latin-1') or 'missing'})")
            return _json_answer(body, parse=parse)

        return run

    async def _answer(
        self, outcomes: Mapping[str, Outcome[Answer]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        failed_required = self._failed_required(outcomes)
        if failed_required is not None:
            name, outcome = failed_required
            status = 504 if outcome.status == "timeout" else 502
            problem = problem_response(status, f"The call '{name}' failed: {outcome.error}.", call=name)
            await problem(scope, receive, send)
            return
        failed = [f"{name}; reason={outcome.status}" for name, outcome in outcomes.items() if not outcome.ok]
        if self.merge == "root":
            merged: dict[str, Any] = {}
            for name, outcome in outcomes.items():
                value = outcome.value.value if outcome.value is not None else None
                merged.update(value if isinstance(value, dict) else {name: value})
            body = _encode(merged)
        else:  # each answer's own bytes, validated but not parsed and serialised again
            members = [
                self._members[name] + (outcome.value.raw if outcome.value is not None else b"null")
                for name, outcome in outcomes.items()
            ]
            body = b"{" + b",".join(members) + b"}"
        # plain ASGI messages: the answer is built once and whole, so no Response object is needed
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if failed:
            headers.append((b"gateway-partial", ", ".join(failed).encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _failed_required(self, outcomes: Mapping[str, Outcome[Answer]]) -> tuple[str, Outcome[Answer]] | None:
        """The required call that failed. The siblings it cut off failed too, as `cancelled`, and may come first:
        one of those is named only when no required call failed of its own (it waited for an optional one)."""
        cut_off: tuple[str, Outcome[Answer]] | None = None
        for name, outcome in outcomes.items():
            if outcome.ok or name not in self._required:
                continue
            if outcome.status != "cancelled":
                return name, outcome
            cut_off = cut_off or (name, outcome)
        return cut_off


def _content_type(headers: Sequence[Header]) -> bytes:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.lower()
    return b""


def _json_answer(body: bytes, *, parse: bool) -> Answer:
    """Strict RFC 8259 (UTF-8, no NaN or Infinity), so the bytes can go into the merged answer as they are."""
    try:
        if parse:
            return Answer(_parse(body), body)
        if not body.isascii():
            body.decode()  # raises for anything but UTF-8; the syntax check below does not look
        _check_syntax(body)
        return Answer(None, body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise CallFailed(f"invalid JSON: {exc}") from None


def _call_fields(upstream: Upstream, scope: Scope, forward: frozenset[bytes]) -> list[Field]:
    passed = [(name, value) for name, value in scope["headers"] if name in forward or name == b"host"]
    fields = upstream_request_headers(
        passed, host=upstream.host, scheme=scope.get("scheme", "http"), client=scope.get("client"), rules=NO_RULES
    )
    fields.append(("accept", "application/json"))
    return fields


async def _fetch(
    call: FanoutCall, target: str, fields: list[Field], bound: float
) -> tuple[int, Sequence[Header], bytes]:
    """One call straight through the upstream's transport (and its tracing and metrics). `bound` is the most the
    call may take, body included, before gather gives up on it: the transport need not time each read."""
    upstream = call.upstream
    try:
        response = await upstream.transport.send(call.method, upstream.base_url + target, fields, b"", deadline=bound)
        try:
            return response.status, response.headers, await response.read()
        finally:
            await response.close()
    except UpstreamTimeout as exc:
        raise TimeoutError(str(exc) or "upstream timed out") from exc


def _call_scope(scope: Scope, call: FanoutCall, target: str, forward: frozenset[bytes]) -> Scope:
    path, _, query = target.partition("?")
    headers: RawHeaders = [(name, value) for name, value in scope["headers"] if name in forward]
    headers += [
        (b"host", next((value for name, value in scope["headers"] if name == b"host"), b"")),
        (b"accept", b"application/json"),
    ]
    return {
        "type": "http",
        "asgi": scope.get("asgi", {"version": "3.0"}),
        "http_version": "1.1",
        "method": call.method,
        "scheme": scope.get("scheme", "http"),
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": scope.get("client"),
        "server": scope.get("server"),
        "path_params": {},
        "state": {},
    }
