"""Header grammar of conditional requests: entity-tags (RFC 9110 §8.8.3) and HTTP-dates (§5.6.7)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from asgi_gateway.middleware.etags import (
    ANY,
    EntityTag,
    format_etag_list,
    generate_etag,
    parse_etag,
    parse_etag_list,
    strong_match,
    weak_match,
)
from asgi_gateway.middleware.httpdates import format_http_date, parse_http_date

NOV_6_1994 = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)

# etagc = %x21 / %x23-7E / obs-text (header values are latin-1 decoded, so obs-text is U+0080..U+00FF).
etagc = st.sampled_from([chr(c) for c in (0x21, *range(0x23, 0x7F), *range(0x80, 0x100))])
entity_tags = st.builds(EntityTag, st.text(etagc, max_size=20), st.booleans())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"abc"', EntityTag("abc")),
        ('W/"abc"', EntityTag("abc", weak=True)),
        ('""', EntityTag("")),
        ('  "abc"\t', EntityTag("abc")),
        ('"a,b"', EntityTag("a,b")),
        ("abc", None),
        ('w/"abc"', None),
        ('"a"b"', None),
        ('"a b"', None),
        ('"abc', None),
        ('"a", "b"', None),
        ("", None),
    ],
    ids=[
        "strong",
        "weak",
        "empty-opaque",
        "surrounding-ows",
        "comma-inside",
        "unquoted",
        "lowercase-weak-prefix",
        "quote-inside",
        "space-inside",
        "unterminated",
        "a-list",
        "empty",
    ],
)
def test_parse_etag(value: str, expected: EntityTag | None) -> None:
    assert parse_etag(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"a", W/"b"', (EntityTag("a"), EntityTag("b", weak=True))),
        ("*", ANY),
        (" * ", ANY),
        ('"a,b", "c"', (EntityTag("a,b"), EntityTag("c"))),
        ('"a,b"', (EntityTag("a,b"),)),
        (' , ,"x",,', (EntityTag("x"),)),
        ('"a",W/"b"', (EntityTag("a"), EntityTag("b", weak=True))),
        ("", None),
        (" , ", None),
        ("abc", None),
        ('"a" "b"', None),
        ('"a""b"', None),
        ('*, "a"', None),
        ('W/ "a"', None),
        ('"a", b', None),
    ],
    ids=[
        "strong-and-weak",
        "star",
        "star-with-ows",
        "comma-inside-tag",
        "one-tag-with-comma",
        "empty-elements-skipped",
        "no-space-after-comma",
        "empty",
        "only-commas",
        "unquoted",
        "missing-comma",
        "adjacent-tags",
        "star-in-a-list",
        "space-after-weak-prefix",
        "unquoted-member",
    ],
)
def test_parse_etag_list(value: str, expected: object) -> None:
    assert parse_etag_list(value) == expected


@pytest.mark.parametrize(
    ("a", "b", "strong", "weak"),
    [
        (EntityTag("1", weak=True), EntityTag("1", weak=True), False, True),
        (EntityTag("1", weak=True), EntityTag("2", weak=True), False, False),
        (EntityTag("1", weak=True), EntityTag("1"), False, True),
        (EntityTag("1"), EntityTag("1"), True, True),
        (EntityTag("1"), EntityTag("2"), False, False),
    ],
    ids=["weak-weak-same", "weak-weak-different", "weak-strong-same", "strong-strong-same", "strong-different"],
)
def test_comparison_functions_follow_rfc_table(a: EntityTag, b: EntityTag, strong: bool, weak: bool) -> None:
    """The example table of RFC 9110 §8.8.3.2, both ways round."""
    assert (strong_match(a, b), weak_match(a, b)) == (strong, weak)
    assert (strong_match(b, a), weak_match(b, a)) == (strong, weak)


@pytest.mark.parametrize(
    ("tag", "text"),
    [(EntityTag("x"), '"x"'), (EntityTag("x", weak=True), 'W/"x"'), (EntityTag(""), '""')],
    ids=["strong", "weak", "empty"],
)
def test_entity_tag_formats_as_field_value(tag: EntityTag, text: str) -> None:
    assert str(tag) == text


def test_generated_etag_depends_on_bytes_not_chunking() -> None:
    whole = generate_etag([b"hello world"])
    assert generate_etag([b"hello", b" ", b"world"]) == whole
    assert generate_etag([b"hello world!"]) != whole
    assert whole.weak is False
    assert generate_etag([b"hello world"], weak=True) == EntityTag(whole.opaque, weak=True)
    assert parse_etag(str(whole)) == whole


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994),
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994),
        ("Sun Nov  6 08:49:37 1994", NOV_6_1994),
        ("Sun Nov 06 08:49:37 1994", NOV_6_1994),
        ("  Sun, 06 Nov 1994 08:49:37 GMT ", NOV_6_1994),
        ("Thursday, 01-Jan-30 00:00:00 GMT", datetime(2030, 1, 1, tzinfo=UTC)),
        ("Wed, 31 Dec 1997 23:59:60 GMT", datetime(1997, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("Sun, 06 Nov 1994 08:49:37 +0000", None),
        ("06 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37", None),
        ("sun, 06 nov 1994 08:49:37 gmt", None),
        ("Sun, 6 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 94 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 25:49:37 GMT", None),
        ("Sun, 06 Nov 0000 08:49:37 GMT", None),
        ("Sun, \u0660\u0666 Nov 1994 08:49:37 GMT", None),
        ("784111777", None),
        ("garbage", None),
        ("", None),
    ],
    ids=[
        "imf-fixdate",
        "rfc850",
        "asctime",
        "asctime-zero-padded-day",
        "surrounding-ows",
        "rfc850-two-digit-year-ahead",
        "leap-second",
        "numeric-zone",
        "no-day-name",
        "no-zone",
        "lowercase",
        "one-digit-day",
        "two-digit-year-in-imf",
        "two-dates",
        "no-such-day",
        "no-such-hour",
        "year-zero",
        "non-ascii-digits",
        "epoch-seconds",
        "garbage",
        "empty",
    ],
)
def test_parse_http_date(value: str, expected: datetime | None) -> None:
    assert parse_http_date(value) == expected


def test_rfc850_year_more_than_50_years_ahead_is_in_the_past() -> None:
    """RFC 9110 §5.6.7: a two-digit year is never read as more than 50 years in the future."""
    this_year = datetime.now(UTC).year
    ahead = (this_year + 51) % 100
    parsed = parse_http_date(f"Monday, 01-Jan-{ahead:02d} 00:00:00 GMT")
    assert parsed is not None
    assert parsed.year == this_year - 49


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (NOV_6_1994, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (
            datetime(1994, 11, 6, 10, 49, 37, 999_999, tzinfo=timezone(timedelta(hours=2))),
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ),
    ],
    ids=["utc", "offset-and-microseconds"],
)
def test_format_http_date_is_imf_fixdate(moment: datetime, text: str) -> None:
    assert format_http_date(moment) == text


def test_format_http_date_refuses_naive_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        format_http_date(datetime(1994, 11, 6))


@given(st.text())
def test_parse_http_date_never_raises(value: str) -> None:
    parsed = parse_http_date(value)
    assert parsed is None or parsed.tzinfo is UTC


@given(st.text())
def test_parse_etag_list_never_raises(value: str) -> None:
    parsed = parse_etag_list(value)
    assert parsed is None or parsed == ANY or all(isinstance(tag, EntityTag) for tag in parsed)


@given(st.text())
def test_parse_etag_never_raises(value: str) -> None:
    parsed = parse_etag(value)
    assert parsed is None or isinstance(parsed, EntityTag)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_http_date_round_trips(moment: datetime) -> None:
    assert parse_http_date(format_http_date(moment)) == moment.replace(microsecond=0)


@given(st.lists(entity_tags, min_size=1, max_size=8).map(tuple))
def test_etag_list_round_trips(tags: tuple[EntityTag, ...]) -> None:
    assert parse_etag_list(format_etag_list(tags)) == tags


@given(entity_tags)
def test_etag_round_trips(tag: EntityTag) -> None:
    assert parse_etag(str(tag)) == tag
