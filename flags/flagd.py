"""flagd compatibility: evaluates flagd flag definitions with JsonLogic and flagd's custom operators.

Targeting runs on panzi-json-logic (the JsonLogic the OpenFeature flagd Python provider used) with flagd's
operators added: `fractional` (bucketing from rollout.py), `sem_ver`, `starts_with`, `ends_with`. The data
it sees is flagd's: the context's attributes, `targetingKey`, and `$flagd.flagKey` / `$flagd.timestamp`.
Outcomes follow flagd's evaluator: no targeting gives the default variant (STATIC); targeting returning null
gives it too (DEFAULT); a variant name gives that variant (TARGETING_MATCH, also for `fractional`); a name
that is not a variant, or targeting that fails, gives reason ERROR. A flag whose `defaultVariant` is null or
absent gives the code default with reason DEFAULT where flagd would use its default variant: the default
of whoever asks (the flag passed to `Resolver.details`, the default value of an OpenFeature call). Operator
misuse yields null, as in current flagd, so the default variant applies. Every resolution carries the
flag's `metadata`, the flag set's merged under it (flagd's "flag metadata").
"""

import time
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from json_logic import jsonLogic
from json_logic.builtins import BUILTINS

from asgi_gateway.flags.definitions import FlagdFlag
from asgi_gateway.flags.evaluator import EvaluationError
from asgi_gateway.flags.model import EvaluationContext, Flag
from asgi_gateway.flags.resolution import ErrorCode, Reason, Resolution
from asgi_gateway.flags.rollout import MAX_TOTAL_WEIGHT, Weighted
from asgi_gateway.flags.semver import COMPARISONS, version_of

Operation = Callable[..., Any]


def fractional(data: Any, *args: Any) -> Any:
    """`{"fractional": [bucketBy?, [variant, weight?], ...]}`: flagd's sticky weighted choice.

    A string first argument is the bucketing key; with buckets only, it is `$flagd.flagKey + targetingKey`
    (an absent targeting key counting as ""); any other first argument, such as a `var` that is missing,
    makes the result null. Weights default to 1, must be whole numbers, count as 0 when negative, and may
    add up to at most 2**31 - 1. This is flagd-evaluator's reading, which flagd's testbed checks.
    """
    if not args:
        return None
    if isinstance(args[0], str):
        bucketing_key, buckets = args[0], args[1:]
    elif isinstance(args[0], list):
        flagd = data.get("$flagd") if isinstance(data, dict) else None
        flag_key = flagd.get("flagKey") if isinstance(flagd, dict) else None
        targeting_key = data.get("targetingKey") if isinstance(data, dict) else None
        bucketing_key = (
            f"{flag_key if isinstance(flag_key, str) else ''}{targeting_key if isinstance(targeting_key, str) else ''}"
        )
        buckets = args
    else:
        return None
    entries: list[tuple[Any, int]] = []
    for entry in buckets:
        if not isinstance(entry, list) or not entry or isinstance(entry[0], list | dict):
            return None
        weight = entry[1] if len(entry) > 1 and entry[1] is not None else 1
        if type(weight) is not int and (type(weight) is not float or not weight.is_integer()):
            return None
        entries.append((entry[0], min(max(int(weight), 0), MAX_TOTAL_WEIGHT + 1)))
    try:
        return Weighted(entries).pick(bucketing_key)
    except ValueError:  # no weight at all, or too much of it
        return None


def sem_ver(data: Any, *args: Any) -> bool | None:
    """`{"sem_ver": [version, op, version]}` with op one of = != < <= > >= ^ ~ (see asgi_gateway.flags.semver).

    Versions are strings or numbers (see asgi_gateway.flags.semver.version_of), as in flagd-evaluator.
    """
    if len(args) != 3:
        return None
    compare = COMPARISONS.get(args[1]) if isinstance(args[1], str) else None
    left, right = version_of(args[0]), version_of(args[2])
    if compare is None or left is None or right is None:
        return None
    return compare(left, right)


def _string_test(test: Callable[[str, str], bool]) -> Operation:
    def operation(data: Any, *args: Any) -> bool | None:
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
            return None
        return test(args[0], args[1])

    return operation


OPERATIONS: dict[str, Any] = {
    **BUILTINS,
    "fractional": fractional,
    "sem_ver": sem_ver,
    "starts_with": _string_test(str.startswith),
    "ends_with": _string_test(str.endswith),
}


def variant_key(result: object) -> str:
    """The variant name a targeting result selects: flagd stringifies it (true -> "true", 2.0 -> "2")."""
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float) and result.is_integer():
        return str(int(result))
    return str(result)


class FlagdEvaluator:
    """Every resolution carries the flag's metadata (the flag set's merged under it when it was loaded)."""

    __slots__ = ("_default", "_disabled", "_static", "_targeting", "_variants", "flag")

    def __init__(self, definition: FlagdFlag, flag: Flag[Any]) -> None:
        self.flag = flag
        parse, metadata = flag.codec.parse, MappingProxyType(dict(definition.metadata))
        self._variants = {
            name: Resolution(parse(value), Reason.TARGETING_MATCH, name, flag_metadata=metadata)
            for name, value in definition.variants.items()
        }
        self._disabled = (
            Resolution(flag.default, Reason.DISABLED, flag_metadata=metadata)
            if definition.state == "DISABLED"
            else None
        )
        name = definition.default_variant
        # without a default variant the value is the code default, and the resolver swaps in the caller's
        self._default = Resolution(
            parse(definition.variants[name]) if name is not None else flag.default,
            Reason.DEFAULT,
            name,
            flag_metadata=metadata,
        )
        self._static = replace(self._default, reason=Reason.STATIC) if name is not None else self._default
        self._targeting = definition.targeting if definition.targeting not in ({}, None) else None

    def evaluate(self, context: EvaluationContext) -> Resolution[Any]:
        if self._disabled is not None:
            return self._disabled
        if self._targeting is None:
            return self._static
        data = {
            **context.attributes,
            "targetingKey": context.targeting_key,
            "$flagd": {"flagKey": self.flag.key, "timestamp": int(time.time())},
        }
        try:
            result = jsonLogic(self._targeting, data, OPERATIONS)
        except Exception as exc:  # any failure of the expression is the definition's, not the caller's
            raise EvaluationError(ErrorCode.PARSE_ERROR, f"targeting failed: {exc!r}") from exc
        if result is None:
            return self._default
        resolution = self._variants.get(variant_key(result))
        if resolution is None:
            raise EvaluationError(ErrorCode.GENERAL, f"targeting chose {result!r}, which is not a variant")
        return resolution
