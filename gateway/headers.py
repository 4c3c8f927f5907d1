"""Header policy between client and upstream, prepared once per route as byte tuples.

Hop-by-hop fields are dropped in both directions (RFC 9110 §7.6.1), including every field the `Connection`
header names. Towards the upstream, `Host` becomes the upstream's and X-Forwarded-For/Proto/Host and
`Forwarded` (RFC 7239) describe this hop. Repeated fields and their order are kept byte for byte.

Fields towards the upstream are `str` pairs, the form the upstream clients take (latin-1, so every byte maps
to one character and back): each client field is decoded once, in the pass that filters it, and the fields
this hop adds are made as text, so no field is decoded twice.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

from asgi_gateway.middleware.hopbyhop import HOP_BY_HOP, named_by_connection
from asgi_gateway.middleware.httpdates import format_http_timestamp
from asgi_gateway.middleware.types import Header, RawHeaders

Field = tuple[str, str]  # a field as the upstream clients take it: name, value (latin-1)

# Replaced by this hop's own values, or appended to (X-Forwarded-For and Forwarded).
_REPLACED = frozenset({b"host", b"x-forwarded-proto", b"x-forwarded-host"})
_APPENDED = frozenset({b"x-forwarded-for", b"forwarded"})


@dataclass(frozen=True, slots=True)
class HeaderRules:
    """A route's own edits: drop `remove` (and what `set` replaces), then append `set` and `add`.

    The full sets of names dropped on the way up and down are prepared here, once per route."""

    upstream_drop: frozenset[bytes]
    client_drop: frozenset[bytes]
    append: tuple[tuple[bytes, bytes], ...]
    append_upstream: tuple[Field, ...]  # `append` as text, for requests

    @classmethod
    def build(cls, remove: Iterable[str], set_: dict[str, str], add: dict[str, str]) -> "HeaderRules":
        names = {name.lower().encode("latin-1") for name in remove} | {name.lower().encode("latin-1") for name in set_}
        append = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in set_.items()]
        append += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in add.items()]
        fields = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in append)
        return cls(HOP_BY_HOP | _REPLACED | _APPENDED | names, HOP_BY_HOP | frozenset(names), tuple(append), fields)


def upstream_request_headers(
    headers: RawHeaders,
    *,
    host: str,
    scheme: str,
    client: tuple[str, int] | None,
    rules: HeaderRules,
) -> list[Field]:
    """The client's header fields as the upstream should see them (one pass; fields that `Connection`
    names, rare, are taken out afterwards)."""
    drop = rules.upstream_drop
    forwarded_for: list[str] = []
    forwarded: list[str] = []
    original_host = ""
    connection: list[bytes] = []
    result: list[Field] = []
    for name, value in headers:  # ASGI servers lower-case field names
        if name not in drop:
            result.append((name.decode("latin-1"), value.decode("latin-1")))
        elif name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))
        elif name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
        elif name == b"host":
            original_host = value.decode("latin-1")
        elif name == b"connection":
            connection.append(value)
    if connection and (tokens := named_by_connection(connection, drop)):
        named = {token.decode("latin-1") for token in tokens}
        result = [(name, value) for name, value in result if name not in named]
    result.append(("host", host))
    if client is not None:
        address = client[0]
        result.append(("x-forwarded-for", ", ".join([*forwarded_for, address])))
        node = f'"[{address}]"' if ":" in address else address
        element = f"for={node};proto={scheme}"
    else:
        if forwarded_for:
            result.append(("x-forwarded-for", ", ".join(forwarded_for)))
        element = f"proto={scheme}"
    if original_host:
        element += ';host="' + original_host.replace('"', "") + '"'
        result.append(("x-forwarded-host", original_host))
    result.append(("x-forwarded-proto", scheme))
    result.append(("forwarded", ", ".join([*forwarded, element])))
    result.extend(rules.append_upstream)
    return result


def client_response_headers(headers: Iterable[Header], rules: HeaderRules) -> RawHeaders:
    """The upstream's header fields as the client should see them, names lower-cased as ASGI expects.

    A response without Date gets one (RFC 9110 §6.6.1); the server is told not to add its own, which
    would duplicate the upstream's.
    """
    drop = rules.client_drop
    result: RawHeaders = []
    dated = False
    connection: list[bytes] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name not in drop:
            result.append((name, value))
            if name == b"date":
                dated = True
        elif name == b"connection":
            connection.append(value)
    if connection and (tokens := named_by_connection(connection, drop)):
        result = [(name, value) for name, value in result if name not in tokens]
    if not dated:
        result.append((b"date", current_http_date()))
    result.extend(rules.append)
    return result


_date_cache: tuple[int, bytes] = (0, b"")


def current_http_date() -> bytes:
    """IMF-fixdate of the current second, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, format_http_timestamp(now).encode("ascii"))
    return _date_cache[1]


NO_RULES = HeaderRules.build((), {}, {})
