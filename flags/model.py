"""Declared flags and the context they are evaluated for.

A `Flag[T]` is declared once (usually through a `Registry`) and code refers to that object, never to its key,
so a type checker knows that resolving it yields a `T`. Its `Codec` says how values of `T` look in definition
files and Redis (JSON) and how to check them when definitions are loaded.
"""

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from functools import cache
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T")
E = TypeVar("E", bound=Enum)
M = TypeVar("M", bound=BaseModel)

ORG_ATTRIBUTE = "org"
FLAG_KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]*"  # no '=', ';', ',' or spaces: keys go into the forwarded header
_FLAG_KEY = re.compile(FLAG_KEY_PATTERN)


class FlagKind(StrEnum):
    """The JSON shape of a flag's values: what a definition's `type:` names."""

    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STR = "str"
    JSON = "json"


@dataclass(frozen=True, slots=True, eq=False)
class Codec(Generic[T]):
    """Turns a JSON value from a definition into a `T` (raising TypeError/ValueError) and back."""

    kind: FlagKind
    parse: Callable[[object], T]
    dump: Callable[[T], object]
    name: str


def _type_error(expected: str, value: object) -> TypeError:
    return TypeError(f"expected {expected}, got {type(value).__name__} {value!r}")


def _parse_bool(value: object) -> bool:
    if type(value) is not bool:  # never isinstance: it would let 0/1 through as int and True through as int
        raise _type_error("a boolean", value)
    return value


def _parse_int(value: object) -> int:
    if type(value) is not int:
        raise _type_error("an integer", value)
    return value


def _parse_float(value: object) -> float:
    if type(value) is not int and type(value) is not float:
        raise _type_error("a number", value)
    return float(value)


def _parse_str(value: object) -> str:
    if type(value) is not str:
        raise _type_error("a string", value)
    return value


def _parse_json(value: object) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"expected a JSON value: {exc}") from exc
    return value


def _same(value: T) -> T:
    return value


BOOL: Codec[bool] = Codec(FlagKind.BOOL, _parse_bool, _same, "bool")
INT: Codec[int] = Codec(FlagKind.INT, _parse_int, _same, "int")
FLOAT: Codec[float] = Codec(FlagKind.FLOAT, _parse_float, _same, "float")
STR: Codec[str] = Codec(FlagKind.STR, _parse_str, _same, "str")
JSON: Codec[Any] = Codec(FlagKind.JSON, _parse_json, _same, "json")
PLAIN_CODECS: Mapping[FlagKind, Codec[Any]] = {c.kind: c for c in (BOOL, INT, FLOAT, STR, JSON)}


@cache
def enum_codec(enum_type: type[E]) -> Codec[E]:
    """Enum flags travel as their members' values, which must be all strings or all integers."""
    values = [member.value for member in enum_type]
    plain: Codec[Any]
    if values and all(type(v) is str for v in values):
        plain = STR
    elif values and all(type(v) is int for v in values):
        plain = INT
    else:
        raise TypeError(f"{enum_type.__name__}: enum flag values must be all strings or all integers")

    def parse(value: object) -> E:
        if isinstance(value, enum_type):
            return value
        try:
            return enum_type(plain.parse(value))
        except ValueError:
            raise ValueError(f"expected one of {values}, got {value!r}") from None

    return Codec(plain.kind, parse, lambda member: member.value, enum_type.__name__)


@cache
def model_codec(model: type[M]) -> Codec[M]:
    """Pydantic-model flags travel as JSON objects and are validated by the model itself."""

    def parse(value: object) -> M:
        if isinstance(value, model):
            return value
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"not a valid {model.__name__}: {details}") from None

    return Codec(FlagKind.JSON, parse, lambda instance: instance.model_dump(mode="json"), model.__name__)


def codec_for(default: object) -> Codec[Any]:
    """The codec a bare `Flag(key=..., default=...)` gets from its default's type."""
    if isinstance(default, Enum):
        return enum_codec(type(default))
    if isinstance(default, BaseModel):
        return model_codec(type(default))
    plain: dict[type, Codec[Any]] = {bool: BOOL, int: INT, float: FLOAT, str: STR}
    return plain.get(type(default), JSON)


@dataclass(frozen=True, slots=True, eq=False, init=False)
class Flag(Generic[T]):
    """A flag declared in code: `NEW_PROFILE = Flag("new-profile", default=False)` is a `Flag[bool]`.

    Compared by identity: a flag is declared once, and a resolver only trusts the object it was built with.
    The codec is taken from the default's type unless given (a `Registry` always gives it).
    """

    key: str
    default: T
    description: str
    codec: Codec[T]

    def __init__(self, key: str, default: T, description: str = "", codec: Codec[T] | None = None) -> None:
        if not _FLAG_KEY.fullmatch(key):
            raise ValueError(f"invalid flag key {key!r}: use letters, digits and '_.:-'")
        codec = codec or codec_for(default)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "default", codec.parse(default))
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "codec", codec)

    @property
    def kind(self) -> FlagKind:
        return self.codec.kind

    def __repr__(self) -> str:
        return f"Flag({self.key!r}, {self.codec.name}, default={self.default!r})"


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """Who a flag is evaluated for: the targeting key (a user id) and free attributes (org, plan, version...)."""

    targeting_key: str | None = None
    attributes: Mapping[str, object] = field(default_factory=dict)

    @property
    def org(self) -> str | None:
        org = self.attributes.get(ORG_ATTRIBUTE)
        return org if isinstance(org, str) else None


def value_name(value: object) -> str:
    """The name a value goes by when no variant names it: `true`, `42`, `b`, or compact JSON."""
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
