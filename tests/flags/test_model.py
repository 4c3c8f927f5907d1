"""Declarations, codecs, versions and the forwarded header: the small pieces, as tables."""

from enum import Enum, IntEnum
from typing import Any

import pytest
from pydantic import BaseModel

from asgi_gateway.flags import (
    DuplicateFlagError,
    Flag,
    Reason,
    Registry,
    Resolution,
    format_flags_header,
    parse_flags_header,
)
from asgi_gateway.flags.model import BOOL, FLOAT, INT, JSON, STR, Codec, enum_codec, model_codec, value_name
from asgi_gateway.flags.semver import COMPARISONS, parse_version


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Mixed(Enum):
    A = "a"
    B = 2


class Banner(BaseModel):
    text: str


@pytest.mark.parametrize(
    ("codec", "value", "parsed"),
    [
        (BOOL, True, True),
        (INT, 3, 3),
        (FLOAT, 3, 3.0),
        (FLOAT, 0.5, 0.5),
        (STR, "x", "x"),
        (JSON, {"a": [1, None]}, {"a": [1, None]}),
        (enum_codec(Color), "red", Color.RED),
        (enum_codec(Color), Color.BLUE, Color.BLUE),
        (enum_codec(Level), 2, Level.HIGH),
        (model_codec(Banner), {"text": "hi"}, Banner(text="hi")),
    ],
    ids=["bool", "int", "int-as-float", "float", "str", "json", "enum", "enum-member", "int-enum", "model"],
)
def test_codecs_accept(codec: Codec[Any], value: object, parsed: object) -> None:
    assert codec.parse(value) == parsed
    assert type(codec.parse(value)) is type(parsed)


@pytest.mark.parametrize(
    ("codec", "value", "message"),
    [
        (BOOL, 1, "expected a boolean, got int 1"),
        (BOOL, "true", "expected a boolean, got str 'true'"),
        (INT, True, "expected an integer, got bool True"),
        (INT, 1.0, "expected an integer, got float 1.0"),
        (FLOAT, False, "expected a number, got bool False"),
        (STR, 1, "expected a string, got int 1"),
        (JSON, {1, 2}, "expected a JSON value"),
        (JSON, float("nan"), "expected a JSON value"),
        (enum_codec(Color), "green", "expected one of ['red', 'blue'], got 'green'"),
        (enum_codec(Level), True, "expected an integer, got bool True"),
        (model_codec(Banner), {"txt": "hi"}, "not a valid Banner: text: Field required"),
    ],
    ids=["int-as-bool", "text-as-bool", "bool-as-int", "float-as-int", "bool-as-float", "int-as-str", "set",
         "nan", "enum", "bool-as-int-enum", "model"],
)  # fmt: skip
def test_codecs_refuse(codec: Codec[Any], value: object, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message.replace("[", r"\[").replace("]", r"\]")):
        codec.parse(value)


def test_enum_values_must_be_all_strings_or_all_integers() -> None:
    with pytest.raises(TypeError, match="Mixed: enum flag values must be all strings or all integers"):
        enum_codec(Mixed)


@pytest.mark.parametrize(
    ("value", "dumped"),
    [(Color.RED, "red"), (Level.LOW, 1), (Banner(text="x"), {"text": "x"})],
    ids=["enum", "int-enum", "model"],
)
def test_codecs_dump_to_json(value: Any, dumped: object) -> None:
    flag = Flag("f", value)
    assert flag.codec.dump(value) == dumped


@pytest.mark.parametrize("key", ["", "-leading", "has space", "a=b", "a;b", "a,b"])
def test_flag_keys_are_header_safe(key: str) -> None:
    with pytest.raises(ValueError, match="invalid flag key"):
        Flag(key, default=True)


def test_a_default_must_fit_the_declared_type() -> None:
    with pytest.raises(TypeError, match="expected a boolean, got int 1"):
        Registry().bool("f", default=1)  # type: ignore[arg-type]


def test_the_registry_refuses_duplicate_keys() -> None:
    registry = Registry()
    first = registry.bool("new-checkout", default=False)
    with pytest.raises(
        DuplicateFlagError, match="flag 'new-checkout' is already declared: Flag\\('new-checkout', bool"
    ):
        registry.str("new-checkout", default="x")
    assert list(registry) == [first]


@pytest.mark.parametrize(
    ("value", "name"),
    [(True, "true"), (False, "false"), (42, "42"), (0.5, "0.5"), ("b", "b"), (None, "null"),
     ({"b": 1, "a": [1]}, '{"a":[1],"b":1}'), (Color.RED, "red"), (Banner(text="x"), '{"text":"x"}')],
)  # fmt: skip
def test_value_names(value: object, name: str) -> None:
    assert value_name(value) == name


@pytest.mark.parametrize(
    ("left", "op", "right", "holds"),
    [
        ("1.0.0-alpha", "<", "1.0.0-alpha.1", True),
        ("1.0.0-alpha.1", "<", "1.0.0-alpha.beta", True),
        ("1.0.0-alpha.beta", "<", "1.0.0-beta", True),
        ("1.0.0-beta.2", "<", "1.0.0-beta.11", True),
        ("1.0.0-rc.1", "<", "1.0.0", True),
        ("1.2", "=", "1.2.0", True),
        ("v1", "=", "1.0.0", True),
        ("1.0.0+a", "=", "1.0.0+b", True),
        ("2.0.0", "!=", "2.0.1", True),
        ("2.5.1", "^", "2.0.0", True),
        ("2.5.1", "~", "2.5.0", True),
        ("2.6.0", "~", "2.5.0", False),
        ("10.0.0", ">", "9.0.0", True),
        ("1.0.0", ">=", "1.0.0-rc.1", True),
        ("1.0.0", "<=", "1.0.0", True),
    ],
)
def test_semver_precedence(left: str, op: str, right: str, holds: bool) -> None:
    parsed_left, parsed_right = parse_version(left), parse_version(right)
    assert parsed_left is not None
    assert parsed_right is not None
    assert COMPARISONS[op](parsed_left, parsed_right) is holds


@pytest.mark.parametrize("text", ["2.0.0.0", "01.0.0", "1.02.0", "1.0.0-01", "1.2-beta", "1.0.0-", "x", "", "1.0.0+"])
def test_not_versions(text: str) -> None:
    assert parse_version(text) is None


RESOLUTIONS: dict[str, Resolution[Any]] = {
    "new-profile": Resolution(True, Reason.TARGETING_MATCH, "true"),
    "pricing": Resolution("price-b", Reason.SPLIT, "b"),
    "limit": Resolution(5, Reason.ERROR),
    "odd": Resolution("x", Reason.STATIC, "a b;c=d,é%"),
}


def test_the_forwarded_header() -> None:
    header = format_flags_header(RESOLUTIONS)
    assert header == "new-profile=true; pricing=b; limit=5; odd=a%20b%3Bc%3Dd%2C%C3%A9%25"
    assert header.isascii()
    assert parse_flags_header(header) == {"new-profile": "true", "pricing": "b", "limit": "5", "odd": "a b;c=d,é%"}


@pytest.mark.parametrize(
    ("header", "parsed"),
    [("", {}), ("a=1", {"a": "1"}), (" a = x ;; b=", {"a": "x", "b": ""}), ("junk", {}), ("=x; a=1", {"a": "1"})],
    ids=["empty", "one", "spacing", "no-equals", "no-key"],
)
def test_parsing_a_header_is_lenient(header: str, parsed: dict[str, str]) -> None:
    assert parse_flags_header(header) == parsed
