"""RFC 9111 shared-cache rules as pure functions: what may be stored, for how long, and how a 304
refreshes it. No I/O here; middleware.py drives these.

Decisions this cache makes where the RFC leaves room:
- `forced_lifetime` is the route overriding the upstream's freshness (including `no-cache` and
  `must-revalidate`), never its privacy: `no-store`, `private`, `Authorization`, `Set-Cookie` and
  `Vary: *` still keep a response out.
- Qualified `private="..."` and `no-cache="..."` are treated as unqualified (§5.2.2.4, §5.2.2.7 allow it).
- `must-revalidate`, `proxy-revalidate` and `no-cache` forbid serving stale (§4.2.4). `s-maxage` implies
  `proxy-revalidate` (§5.2.2.10) but an explicit `stale-while-revalidate`/`stale-if-error` on the same
  response still applies: the origin asked for both, as CDNs read it.
- With `cache_set_cookie`, a response carrying `Set-Cookie` is stored without it (§7.3 warns that the
  field does not inhibit caching): the cookie reaches the client that caused it, and nobody else.
- The route's `default_lifetime` is the heuristic lifetime (§4.2.2) for heuristically cacheable status codes.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from asgi_gateway.middleware.cache.cachecontrol import delta_seconds, parse_cache_control
from asgi_gateway.middleware.cache.keys import KeyRules, vary_fields
from asgi_gateway.middleware.cache.store import StoredResponse
from asgi_gateway.middleware.etags import parse_etag, weak_match
from asgi_gateway.middleware.hopbyhop import HOP_BY_HOP, named_by_connection
from asgi_gateway.middleware.httpdates import format_http_timestamp, http_date_seconds
from asgi_gateway.middleware.types import Header

__all__ = [
    "CacheOptions",
    "Storable",
    "assess",
    "conditional_headers",
    "refreshed_headers",
    "same_validator",
]

# RFC 9110 §15.1, minus 206: partial content needs range support this cache does not have.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})

# RFC 9111 §3.1: never stored. Age is recomputed on every answer.
_UNSTORED = HOP_BY_HOP | {
    b"proxy-authenticate",
    b"proxy-authentication-info",
    b"proxy-authorization",
    b"age",
    b"set-cookie",
}
# RFC 9111 §3.2: a 304 never changes these on the stored response.
_NOT_REFRESHED = _UNSTORED | {b"content-length", b"content-encoding", b"content-range", b"vary"}
_TAG_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """A route's cache settings. Seconds throughout; 0 turns a window off.

    default_lifetime        freshness for responses that state none but are cacheable by status (heuristic)
    forced_lifetime         freshness that overrides whatever the upstream says (None: follow the upstream)
    stale_while_revalidate  serve a stale entry while one background request refreshes it
    stale_if_error          serve a stale entry when the upstream raises, answers 5xx, or exceeds error_timeout
    keep                    keep a stale entry that has validators this long, to revalidate it with a 304
    max_object_bytes        larger bodies are streamed to the client but not stored
    keys                    query-string rules of the key
    honour_client_no_cache  let clients' no-cache / max-age / min-fresh / no-store bypass stored answers
    cache_set_cookie        store responses with Set-Cookie (the cookie itself is never stored)
    tags_header             response header listing purge tags (space or comma separated); None: no tags
    lock_timeout            longest a fill lock is held and a request waits for another replica's fill
    error_timeout           when a stale entry could be served instead, give the upstream this long
    name                    this cache's name in Cache-Status (RFC 9211)
    """

    default_lifetime: float = 0.0
    forced_lifetime: float | None = None
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    keep: float = 0.0
    max_object_bytes: int = 1 << 20
    keys: KeyRules = field(default_factory=KeyRules)
    honour_client_no_cache: bool = False
    cache_set_cookie: bool = False
    tags_header: str | None = "Surrogate-Key"
    lock_timeout: float = 5.0
    error_timeout: float | None = None
    name: str = "gateway"

    def __post_init__(self) -> None:
        for name in ("default_lifetime", "stale_while_revalidate", "stale_if_error", "keep"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be zero or more seconds, got {getattr(self, name)}")
        if self.forced_lifetime is not None and not self.forced_lifetime > 0:
            raise ValueError(f"forced_lifetime must be positive, got {self.forced_lifetime}")
        if self.error_timeout is not None and not self.error_timeout > 0:
            raise ValueError(f"error_timeout must be positive, got {self.error_timeout}")
        if not self.lock_timeout > 0:
            raise ValueError(f"lock_timeout must be positive, got {self.lock_timeout}")
        if self.max_object_bytes <= 0:
            raise ValueError(f"max_object_bytes must be positive, got {self.max_object_bytes}")
        if not self.name or any(char in self.name for char in ' ;,="'):
            raise ValueError(f"name must be a non-empty token, got {self.name!r}")


@dataclass(frozen=True, slots=True)
class Storable:
    """A response that may be stored, with everything about it that does not depend on its body."""

    status: int
    headers: tuple[Header, ...]
    initial_age: float
    lifetime: float
    stale_while_revalidate: float
    stale_if_error: float
    vary: tuple[str, ...]
    tags: tuple[str, ...]
    retention: float  # how long the store keeps it: remaining freshness plus the longest stale window
    request_time: float
    response_time: float

    def entry(self, body: bytes, vary_values: Sequence[str | None]) -> StoredResponse:
        """The stored response, its Content-Length set to the body actually kept."""
        headers = (*(h for h in self.headers if h[0] != b"content-length"), (b"content-length", b"%d" % len(body)))
        return StoredResponse(
            status=self.status,
            headers=headers,
            body=body,
            request_time=self.request_time,
            response_time=self.response_time,
            initial_age=self.initial_age,
            lifetime=self.lifetime,
            stale_while_revalidate=self.stale_while_revalidate,
            stale_if_error=self.stale_if_error,
            vary=tuple(zip(self.vary, vary_values, strict=True)),
            tags=self.tags,
        )


def _index(headers: Iterable[Header]) -> dict[bytes, list[str]]:
    """Field values by name, read once per response."""
    fields: dict[bytes, list[str]] = {}
    for key, value in headers:
        fields.setdefault(key, []).append(value.decode("latin-1"))
    return fields


def _first(headers: Iterable[Header], name: bytes) -> str | None:
    return next((value.decode("latin-1") for key, value in headers if key == name), None)


def assess(
    status: int,
    headers: Sequence[Header],
    *,
    request_time: float,
    response_time: float,
    authorized: bool,
    request_no_store: bool,
    options: CacheOptions,
) -> Storable | str:
    """Whether a response to a GET may be stored (RFC 9111 §3), and if so for how long (§4.2.1).

    Returns the storable facts, or a short reason (an RFC 9211 detail token) why not."""
    fields = _index(headers)
    directives = parse_cache_control(", ".join(fields.get(b"cache-control", ())))
    if status < 200 or status in (206, 304):
        return "status"
    if "no-store" in directives or request_no_store:
        return "no-store"
    if "private" in directives:
        return "private"
    if authorized and not ("public" in directives or "s-maxage" in directives or "must-revalidate" in directives):
        return "authorization"  # §3.5
    varied = vary_fields(fields.get(b"vary", ()))
    if varied is None:
        return "vary-star"
    if b"set-cookie" in fields and not options.cache_set_cookie:
        return "set-cookie"

    expires = next(iter(fields.get(b"expires", ())), None)
    explicit = "s-maxage" in directives or "max-age" in directives or expires is not None
    if not explicit and status not in HEURISTIC_STATUSES and "public" not in directives:
        return "no-freshness"

    date = next(iter(fields.get(b"date", ())), None)
    date_value = http_date_seconds(date) if date is not None else None
    if options.forced_lifetime is not None:
        lifetime: float = options.forced_lifetime
    elif "no-cache" in directives:
        lifetime = 0.0
    elif (max_age := _max_age(directives)) is not None:
        lifetime = max_age
    elif expires is not None:
        expires_value = http_date_seconds(expires)  # an invalid Expires means already expired (§5.3)
        base = date_value if date_value is not None else response_time
        lifetime = 0.0 if expires_value is None else max(expires_value - base, 0.0)
    else:
        lifetime = options.default_lifetime

    swr, sie = _stale_windows(directives, options)
    validated = b"etag" in fields or b"last-modified" in fields
    initial_age = _initial_age(next(iter(fields.get(b"age", ())), None), date_value, request_time, response_time)
    retention = max(lifetime - initial_age, 0.0) + max(swr, sie, options.keep if validated else 0.0)
    if retention <= 0:
        return "stale"

    connection = fields.get(b"connection")
    unstored = (
        _UNSTORED | named_by_connection(value.encode("latin-1") for value in connection) if connection else _UNSTORED
    )
    stored = [(key, value) for key, value in headers if key not in unstored]
    if date is None:  # RFC 9110 §6.6.1: a cache adds the Date a response lacks
        stored.append((b"date", format_http_timestamp(response_time).encode()))
    tags: tuple[str, ...] = ()
    if options.tags_header is not None:
        raw_tags = fields.get(options.tags_header.lower().encode("latin-1"), ())
        tags = tuple(dict.fromkeys(tag for value in raw_tags for tag in _TAG_SEPARATORS.split(value) if tag))
    return Storable(
        status=status,
        headers=tuple(stored),
        initial_age=initial_age,
        lifetime=lifetime,
        stale_while_revalidate=swr,
        stale_if_error=sie,
        vary=varied,
        tags=tags,
        retention=retention,
        request_time=request_time,
        response_time=response_time,
    )


def _max_age(directives: dict[str, str | None]) -> int | None:
    """s-maxage wins over max-age in a shared cache (§5.2.2.10)."""
    shared = delta_seconds(directives, "s-maxage")
    return shared if shared is not None else delta_seconds(directives, "max-age")


def _stale_windows(directives: dict[str, str | None], options: CacheOptions) -> tuple[float, float]:
    """stale-while-revalidate and stale-if-error (RFC 5861): the upstream's, else the route's."""
    if options.forced_lifetime is not None:
        return options.stale_while_revalidate, options.stale_if_error
    if "must-revalidate" in directives or "proxy-revalidate" in directives or "no-cache" in directives:
        return 0.0, 0.0
    implied_revalidate = "s-maxage" in directives
    windows = []
    for name, default in (
        ("stale-while-revalidate", options.stale_while_revalidate),
        ("stale-if-error", options.stale_if_error),
    ):
        explicit = delta_seconds(directives, name)
        windows.append(float(explicit) if explicit is not None else 0.0 if implied_revalidate else default)
    return windows[0], windows[1]


def _initial_age(age: str | None, date_value: float | None, request_time: float, response_time: float) -> float:
    """corrected_initial_age (RFC 9111 §4.2.3)."""
    age_value = int(age) if age is not None and age.strip().isdigit() and age.isascii() else 0
    apparent_age = max(0.0, response_time - date_value) if date_value is not None else 0.0
    corrected_age_value = age_value + max(response_time - request_time, 0.0)
    return max(apparent_age, corrected_age_value)


def conditional_headers(entry: StoredResponse) -> list[Header]:
    """The validators a revalidation request sends for a stored response (RFC 9111 §4.3.1)."""
    conditions = []
    for key, value in entry.headers:
        if key == b"etag":
            conditions.append((b"if-none-match", value))
        elif key == b"last-modified":
            conditions.append((b"if-modified-since", value))
    return conditions


def same_validator(entry: StoredResponse, not_modified: Sequence[Header]) -> bool:
    """Whether a 304 is about this stored response (RFC 9111 §4.3.4): its ETag, or else its
    Last-Modified, must match the stored one (ETags weakly)."""
    new_etag = _first(not_modified, b"etag")
    if new_etag is not None:
        old_etag = _first(entry.headers, b"etag")
        new, old = parse_etag(new_etag), None if old_etag is None else parse_etag(old_etag)
        return new is not None and old is not None and weak_match(old, new)
    new_modified = _first(not_modified, b"last-modified")
    old_modified = _first(entry.headers, b"last-modified")
    return new_modified is None or old_modified is None or new_modified.strip() == old_modified.strip()


def refreshed_headers(entry: StoredResponse, not_modified: Sequence[Header], response_time: float) -> list[Header]:
    """The stored header fields updated by a 304 (RFC 9111 §3.2): fields it carries replace stored ones.
    A 304 without Date gets one (RFC 9110 §6.6.1), so the refreshed entry's age starts again."""
    excluded = _NOT_REFRESHED | named_by_connection(value for key, value in not_modified if key == b"connection")
    updates = [(key, value) for key, value in not_modified if key not in excluded]
    if not any(key == b"date" for key, _ in updates):
        updates.append((b"date", format_http_timestamp(response_time).encode()))
    replaced = {key for key, _ in updates}
    return [(key, value) for key, value in entry.headers if key not in replaced] + updates
