"""From definitions to evaluators, once per load: native or flagd, and overrides from the environment."""

import json
from typing import Any

from asgi_gateway.flags.definitions import Definition, FlagDefinition, FlagdFlag
from asgi_gateway.flags.evaluator import Evaluator, Fixed
from asgi_gateway.flags.flagd import FlagdEvaluator
from asgi_gateway.flags.model import PLAIN_CODECS, Flag, FlagKind, value_name
from asgi_gateway.flags.native import NativeEvaluator
from asgi_gateway.flags.resolution import Reason, Resolution

_ZERO: dict[FlagKind, object] = {
    FlagKind.BOOL: False,
    FlagKind.INT: 0,
    FlagKind.FLOAT: 0.0,
    FlagKind.STR: "",
    FlagKind.JSON: None,
}


def flag_for_definition(definition: Definition) -> Flag[Any]:
    """The flag a definition declares by itself (no code declares its key): its kind, its default, its description."""
    default: object
    name = definition.default_variant
    if isinstance(definition, FlagDefinition):
        kind, description = definition.type, definition.description
        default = definition.variants[name] if name is not None else definition.default
    else:
        kind, description = definition.kind, str(definition.metadata.get("description", ""))
        default = definition.variants[name] if name is not None else _ZERO[kind]
    return Flag(definition.key, default, description, PLAIN_CODECS[kind])


def compile_definition(definition: Definition, flag: Flag[Any]) -> Evaluator:
    """Raises TypeError or ValueError when the definition's values do not fit the flag."""
    if isinstance(definition, FlagdFlag):
        return FlagdEvaluator(definition, flag)
    if definition.type != flag.kind:
        raise TypeError(f"defined as {definition.type.value}, declared in code as {flag.kind.value}")
    return NativeEvaluator(definition, flag)


def compile_override(flag: Flag[Any], text: str, definition: Definition | None) -> Evaluator:
    """Pins the flag to `text`: the name of one of its variants, or a value written as in the environment
    (`true`, `42`, `0.5`, `b`, JSON for json flags). Raises ValueError when it is neither."""
    variants = definition.variants if definition is not None else {}
    if text in variants:
        raw: object = variants[text]
        variant = text
    else:
        raw = _parse_text(flag.kind, text)
        variant = value_name(raw)
    try:
        value = flag.codec.parse(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"override {text!r}: {exc}") from None
    return Fixed(flag, Resolution(value, Reason.STATIC, variant))


def _parse_text(kind: FlagKind, text: str) -> object:
    try:
        if kind is FlagKind.BOOL:
            return {"true": True, "false": False}[text.strip().lower()]
        if kind is FlagKind.INT:
            return int(text)
        if kind is FlagKind.FLOAT:
            return float(text)
        if kind is FlagKind.JSON:
            return json.loads(text)
    except (KeyError, ValueError):
        raise ValueError(f"override {text!r} is not a {kind.value} value") from None
    return text
