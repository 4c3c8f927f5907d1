"""Cache keys: query rules, the raw path, Vary normalisation (RFC 9111 §4.1), extra key parts."""

import pytest

from asgi_gateway.middleware.cache import KeyRules
from asgi_gateway.middleware.cache.keys import (
    UrlKeys,
    extras_variant,
    request_vary_values,
    url_key,
    url_key_for,
    vary_fields,
    vary_variant,
)
from asgi_gateway.middleware.types import Scope


def scope(
    path: str = "/a", query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None, **extra: object
) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"host", b"Example.test")] if headers is None else headers,
    } | extra


@pytest.mark.parametrize(
    ("rules", "query", "expected"),
    [
        (KeyRules(), "b=2&a=1", "a=1&b=2"),
        (KeyRules(), "a=1", "a=1"),
        (KeyRules(), "", ""),
        (KeyRules(), "a=1&&b=2&", "a=1&b=2"),
        (KeyRules(query="as-is"), "b=2&a=1", "b=2&a=1"),
        (KeyRules(query="drop"), "b=2&a=1", ""),
        (KeyRules(ignore=frozenset({"utm_source"})), "utm_source=x&b=2&a=1", "a=1&b=2"),
        (KeyRules(ignore=frozenset({"utm source"})), "utm+source=x&a=1", "a=1"),
        (KeyRules(ignore=frozenset({"utm_source"})), "utm_source=x", ""),
        (KeyRules(query="as-is", ignore=frozenset({"t"})), "b=2&t=1&a=1", "b=2&a=1"),
        (KeyRules(), "a=%20&a=+", "a=%20&a=+"),
    ],
    ids=[
        "sorted",
        "single",
        "empty",
        "empty-pairs",
        "as-is",
        "drop",
        "ignored",
        "ignored-decoded-name",
        "only-ignored",
        "as-is-with-ignored",
        "encodings-kept",
    ],
)
def test_query_normalisation(rules: KeyRules, query: str, expected: str) -> None:
    assert rules.normalise(query) == expected


def test_scope_and_url_give_the_same_key() -> None:
    """Purges and Location invalidation name URLs; requests arrive as scopes."""
    assert url_key(scope("/a/b", b"y=2&x=1"), KeyRules()) == url_key_for("http://example.test/a/b?x=1&y=2", KeyRules())


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (scope("/a"), scope("/b")),
        (scope("/a"), scope("/a", scheme="https")),
        (scope("/a"), scope("/a", headers=[(b"host", b"other.test")])),
        (scope("/a", b"x=1"), scope("/a", b"x=2")),
        (scope("/a/b"), scope("/a/b", raw_path=b"/a%2Fb")),
    ],
    ids=["path", "scheme", "host", "query", "encoded-slash"],
)
def test_keys_differ(first: Scope, second: Scope) -> None:
    assert url_key(first, KeyRules()) != url_key(second, KeyRules())


def test_without_host_the_server_address_is_used() -> None:
    key = url_key(scope(headers=[], server=("10.0.0.1", 8080)), KeyRules())
    assert key == url_key_for("http://10.0.0.1:8080/a", KeyRules())


@pytest.mark.parametrize(
    "rules", [KeyRules(), KeyRules(query="as-is", ignore=frozenset({"t"}))], ids=["sorted", "as-is"]
)
def test_remembered_keys_are_the_keys_url_key_gives(rules: KeyRules) -> None:
    """Four remembered of nine URLs, twice over: whatever is remembered or forgotten, the key is the same."""
    scopes = [
        scope("/a"),
        scope("/b"),
        scope("/a", scheme="https"),
        scope("/a", headers=[(b"host", b"OTHER.test")]),
        scope("/a", b"y=2&x=1"),
        scope("/a", b"x=1&y=2&t=3"),
        scope("/a/b", raw_path=b"/a%2Fb"),
        scope(headers=[], server=("10.0.0.1", 8080)),
        scope("/c", raw_path=None),
    ]
    keys = UrlKeys(rules, size=4)
    for _ in range(2):
        for request in scopes:
            host = next((value for name, value in request["headers"] if name == b"host"), None)
            assert keys.of(request, host) == url_key(request, rules)


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        (["Accept-Language"], ("accept-language",)),
        (["accept, Accept-Encoding", "ACCEPT"], ("accept", "accept-encoding")),
        ([" , "], ()),
        (["accept, *"], None),
    ],
    ids=["one", "merged-lines-deduplicated", "empty", "star"],
)
def test_vary_fields(vary: list[str], expected: tuple[str, ...] | None) -> None:
    assert vary_fields(vary) == expected


def test_request_vary_values_are_normalised() -> None:
    """Lines combined, spaces around commas dropped, case folded where it carries no meaning; absent
    stays distinct from empty."""
    request = scope(
        headers=[
            (b"accept", b"text/html ,  Application/JSON"),
            (b"accept-language", b"EN-gb, fr"),
            (b"accept", b"*/*"),
            (b"x-empty", b""),
        ]
    )
    values = request_vary_values(request, ("accept", "accept-language", "x-empty", "x-absent"))
    assert values == ("text/html,Application/JSON,*/*", "en-gb,fr", "", None)


def test_variants() -> None:
    fields = ("accept",)
    assert extras_variant(None) == "h"
    assert extras_variant("b") != extras_variant("c")
    assert vary_variant("h", fields, ["a"]) != vary_variant("h", fields, ["b"])
    assert vary_variant("h", fields, [""]) != vary_variant("h", fields, [None])
    assert vary_variant("h", fields, ["a"]).startswith("h.")
