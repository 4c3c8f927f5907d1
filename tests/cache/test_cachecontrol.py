"""Cache-Control parsing (RFC 9111 §5.2): tables for the grammar, properties for robustness."""

import pytest
from hypothesis import given, strategies as st

from asgi_gateway.middleware.cache import delta_seconds, format_cache_control, parse_cache_control


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("max-age=60", {"max-age": "60"}),
        ("Max-Age=60, PUBLIC", {"max-age": "60", "public": None}),
        ('max-age="60"', {"max-age": "60"}),
        ('private="set-cookie, x-user", no-cache', {"private": "set-cookie, x-user", "no-cache": None}),
        ('x="a \\"quoted\\" \\\\ value"', {"x": 'a "quoted" \\ value'}),
        ("max-age=60, max-age=0", {"max-age": "60"}),
        (" , ,no-store,, ", {"no-store": None}),
        ("max-age = 5 , s-maxage=7", {"max-age": "5", "s-maxage": "7"}),
        ("max-age=60 garbage, public", {"public": None}),
        ('no-cache="unterminated', {"no-cache": "unterminated"}),
        ("=60, =, public", {"public": None}),
        ("", {}),
    ],
    ids=[
        "one",
        "case-insensitive-names",
        "quoted-delta",
        "quoted-list",
        "escapes",
        "first-wins",
        "empty-members",
        "spaces-around-equals",
        "garbage-member-dropped",
        "unterminated-quote",
        "no-name",
        "empty",
    ],
)
def test_parse(header: str, expected: dict[str, str | None]) -> None:
    assert parse_cache_control(header) == expected


@pytest.mark.parametrize(
    ("directives", "name", "expected"),
    [
        ({"max-age": "60"}, "max-age", 60),
        ({}, "max-age", None),
        ({"max-age": None}, "max-age", 0),
        ({"max-age": "-1"}, "max-age", 0),
        ({"max-age": "1.5"}, "max-age", 0),
        ({"max-age": "٣"}, "max-age", 0),
        ({"max-age": "99999999999"}, "max-age", 2**31),
    ],
    ids=["digits", "absent", "no-argument", "negative", "fraction", "non-ascii-digit", "capped"],
)
def test_delta_seconds(directives: dict[str, str | None], name: str, expected: int | None) -> None:
    """RFC 9111 §1.2.2; an unreadable value makes the response stale rather than fresh."""
    assert delta_seconds(directives, name) == expected


def test_format() -> None:
    assert format_cache_control({"public": None, "max-age": "60", "private": "a, b", "x": ""}) == (
        'public, max-age=60, private="a, b", x=""'
    )


@given(st.text())
def test_parse_never_raises(header: str) -> None:
    directives = parse_cache_control(header)
    assert all(name == name.lower() and name for name in directives)


TOKENS = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz", min_size=1)


@given(st.dictionaries(TOKENS, st.none() | st.text()))
def test_format_then_parse_round_trips(directives: dict[str, str | None]) -> None:
    assert parse_cache_control(format_cache_control(directives)) == directives


@given(st.text())
def test_parse_is_stable_under_its_inverse(header: str) -> None:
    """Whatever was read from a header is read the same way again once written back."""
    directives = parse_cache_control(header)
    assert parse_cache_control(format_cache_control(directives)) == directives
