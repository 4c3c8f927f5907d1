"""The shared hop-by-hop rules (RFC 9110 §7.6.1) and the HTTP-date seconds helpers (§5.6.7)."""

import pytest

from asgi_gateway.middleware.hopbyhop import HOP_BY_HOP, named_by_connection
from asgi_gateway.middleware.httpdates import format_http_timestamp, http_date_seconds


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"keep-alive"], frozenset()),
        ([b"close"], frozenset()),
        ([b"X-Hop, keep-alive"], frozenset({b"x-hop"})),
        ([b"x-a", b" X-B ,, upgrade"], frozenset({b"x-a", b"x-b"})),
        ([b""], frozenset()),
    ],
    ids=["keep-alive", "close", "named-field", "several-lines", "empty"],
)
def test_named_by_connection(values: list[bytes], expected: frozenset[bytes]) -> None:
    assert named_by_connection(values) == expected


def test_connection_is_itself_hop_by_hop() -> None:
    assert {b"connection", b"keep-alive", b"te", b"transfer-encoding", b"upgrade"} <= HOP_BY_HOP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 14 Nov 2023 22:13:20 GMT", 1_700_000_000.0),
        ("Tuesday, 14-Nov-23 22:13:20 GMT", 1_700_000_000.0),
        ("Tue Nov 14 22:13:20 2023", 1_700_000_000.0),
        ("Tue, 14 Nov 2023 22:13:20 +0000", None),
        ("0", None),
    ],
    ids=["imf-fixdate", "rfc850", "asctime", "numeric-zone", "not-a-date"],
)
def test_http_date_seconds(value: str, expected: float | None) -> None:
    assert http_date_seconds(value) == expected


def test_format_http_timestamp_drops_the_fraction() -> None:
    assert format_http_timestamp(1_700_000_000.9) == "Tue, 14 Nov 2023 22:13:20 GMT"
