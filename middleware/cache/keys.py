"""Cache keys (RFC 9111 §2, §4.1): a primary key per URL, variant names for route extras and Vary.

Everything one URL owns (its responses for every extra and every Vary variant) shares one `UrlKey`,
so an invalidation or a purge by URL removes them together and a Redis Cluster keeps them in one slot.
"""

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple
from urllib.parse import unquote_plus, urlsplit

import xxhash

from asgi_gateway.middleware.types import Scope

__all__ = [
    "KeyRules",
    "UrlKey",
    "UrlKeys",
    "extras_variant",
    "request_vary_values",
    "url_key",
    "url_key_for",
    "vary_fields",
    "vary_variant",
]

QueryMode = Literal["sorted", "as-is", "drop"]

# Header values whose case carries no meaning (RFC 9110 §12.5.3, §12.5.4): folded so variants share entries.
_CASELESS = frozenset({"accept-encoding", "accept-language"})


@dataclass(frozen=True, slots=True)
class KeyRules:
    """How a request's query string becomes part of its key.

    `sorted` orders the parameters, so `?a=1&b=2` and `?b=2&a=1` share an entry; `as-is` keeps the
    string untouched; `drop` ignores it. Parameters named in `ignore` (tracking ids and the like)
    never take part.
    """

    query: QueryMode = "sorted"
    ignore: frozenset[str] = field(default_factory=frozenset)

    def normalise(self, query: str) -> str:
        if self.query == "drop" or not query:
            return ""
        if not self.ignore and (self.query == "as-is" or "&" not in query):
            return query
        pairs = [pair for pair in query.split("&") if pair and not self._ignored(pair)]
        if self.query == "sorted":
            pairs.sort()
        return "&".join(pairs)

    def _ignored(self, pair: str) -> bool:
        name = pair.partition("=")[0]
        return name in self.ignore or unquote_plus(name) in self.ignore


class UrlKey(NamedTuple):
    """One URL's identity in a store: a digest of method, scheme, host, path and normalised query.
    (A NamedTuple rather than a frozen dataclass: it is built on every request, and this is cheaper.)"""

    digest: str
    path: str


def _url_key(scheme: str, host: str, path: str, query: str) -> UrlKey:
    material = f"GET {scheme}://{host}{path}?{query}"
    return UrlKey(xxhash.xxh3_128_hexdigest(material.encode("utf-8", "surrogatepass")), path)


def url_key(scope: Scope, rules: KeyRules, host_header: bytes | None = None) -> UrlKey:
    """The key of the GET a request's URL names (HEAD shares it). The raw path keeps `%2F` apart from `/`.
    A caller that has already read the Host header passes it."""
    if host_header is None:
        host_header = next((value for name, value in scope["headers"] if name == b"host"), None)
    if host_header is not None:
        host = host_header.decode("latin-1").lower()
    else:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else ""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    return _url_key(scope["scheme"], host, path, rules.normalise(scope["query_string"].decode("latin-1")))


class UrlKeys:
    """`url_key` under one set of rules, remembering the keys of the URLs seen last (the least recently used
    go first): a hot URL's key costs one lookup instead of decoding, normalising and hashing it again."""

    def __init__(self, rules: KeyRules, size: int = 4096) -> None:
        self.rules = rules
        self._of_parts = functools.lru_cache(maxsize=size)(self._key_of_parts)

    def of(self, scope: Scope, host_header: bytes | None) -> UrlKey:
        raw_path = scope.get("raw_path")
        if host_header is None or not raw_path:  # the key depends on more of the scope: not remembered
            return url_key(scope, self.rules, host_header)
        return self._of_parts(scope["scheme"], host_header, raw_path, scope["query_string"])

    def _key_of_parts(self, scheme: str, host_header: bytes, raw_path: bytes, query: bytes) -> UrlKey:
        host, path = host_header.decode("latin-1").lower(), raw_path.decode("latin-1")
        return _url_key(scheme, host, path, self.rules.normalise(query.decode("latin-1")))


def url_key_for(url: str, rules: KeyRules) -> UrlKey:
    """The key of an absolute URL (purges, Location after an unsafe request); same rules as `url_key`."""
    parts = urlsplit(url)
    return _url_key(parts.scheme, parts.netloc.lower(), parts.path or "/", rules.normalise(parts.query))


def extras_variant(extras: str | None) -> str:
    """The variant name a route's extra key parts select (`h` when there are none)."""
    return "h" if extras is None else "h" + xxhash.xxh3_64_hexdigest(extras.encode("utf-8", "surrogatepass"))


def vary_fields(vary_values: Iterable[str]) -> tuple[str, ...] | None:
    """The request header names a response varies on, lowercased and sorted; None for `Vary: *` (§4.1)."""
    fields = {name.strip().lower() for value in vary_values for name in value.split(",")}
    fields.discard("")
    return None if "*" in fields else tuple(sorted(fields))


def request_vary_values(scope: Scope, fields: Sequence[str]) -> tuple[str | None, ...]:
    """Each varied header of the request, normalised (§4.1): lines combined, spaces around commas
    dropped; None when absent, since an absent field only matches an absent one."""
    wanted: dict[bytes, list[str]] = {name.encode("latin-1"): [] for name in fields}
    for name, value in scope["headers"]:
        lines = wanted.get(name)
        if lines is not None:
            lines.append(value.decode("latin-1"))
    values: list[str | None] = []
    for name, lines in zip(fields, wanted.values(), strict=True):
        if not lines:
            values.append(None)
            continue
        combined = ",".join(part.strip() for line in lines for part in line.split(","))
        values.append(combined.lower() if name in _CASELESS else combined)
    return tuple(values)


def vary_variant(head: str, fields: Sequence[str], values: Sequence[str | None]) -> str:
    """The variant name of one set of varied request header values under a head variant."""
    material = "\x00".join(
        f"{name}\x01{'' if value is None else '=' + value}" for name, value in zip(fields, values, strict=True)
    )
    return f"{head}.{xxhash.xxh3_64_hexdigest(material.encode('utf-8', 'surrogatepass'))}"
