"""Compiles a native FlagDefinition into an evaluator: sets, thresholds and prebuilt resolutions.

Everything that can be decided when a definition is loaded is decided then; evaluating walks the rules and
returns one of the resolutions built here, allocating nothing.
"""

import json
import operator
from collections.abc import Callable, Mapping
from typing import Any

from asgi_gateway.flags.definitions import FlagDefinition, Rule
from asgi_gateway.flags.evaluator import EvaluationError
from asgi_gateway.flags.model import ORG_ATTRIBUTE, EvaluationContext, Flag, value_name
from asgi_gateway.flags.resolution import ErrorCode, Reason, Resolution
from asgi_gateway.flags.rollout import Weighted, in_rollout, rollout_weight
from asgi_gateway.flags.semver import parse_condition, version_of

Condition = Callable[[EvaluationContext], bool]
Outcome = Callable[[EvaluationContext], Resolution[Any] | None]  # None: the rule does not apply after all
Fallback = Callable[[EvaluationContext], Resolution[Any]]

_MISSING = object()
_NUMERIC = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _scalar_key(value: object) -> object:
    """Equality key for attribute comparisons: True never equals 1, and lists or dicts equal nothing."""
    if type(value) is bool:
        return ("bool", value)
    return value if isinstance(value, str | int | float) else _MISSING


class NativeEvaluator:
    """Overrides, then rules in order, then the flag-level split, then the default."""

    __slots__ = ("_fallback", "_overrides", "_rules", "flag")

    def __init__(self, definition: FlagDefinition, flag: Flag[Any]) -> None:
        self.flag = flag
        self._overrides: Mapping[str, Resolution[Any]] = {}
        self._rules: list[tuple[tuple[Condition, ...], Outcome]] = []
        disabled = Resolution(flag.default, Reason.DISABLED)
        if not definition.enabled:
            self._fallback: Fallback = lambda context: disabled
            return
        values = _Values(definition, flag)
        self._overrides = {
            key: values.resolution(raw, Reason.TARGETING_MATCH) for key, raw in definition.overrides.items()
        }
        self._rules = [_compile_rule(index, rule, values) for index, rule in enumerate(definition.rules)]
        dynamic = bool(self._overrides or self._rules or definition.split)
        default = values.default(Reason.DEFAULT if dynamic else Reason.STATIC)
        split = values.split(definition.split, Reason.SPLIT) if definition.split else None
        self._fallback = (lambda context: split(context) or default) if split else (lambda context: default)

    def evaluate(self, context: EvaluationContext) -> Resolution[Any]:
        if self._overrides and context.targeting_key is not None:
            override = self._overrides.get(context.targeting_key)
            if override is not None:
                return override
        for conditions, outcome in self._rules:
            for condition in conditions:
                if not condition(context):
                    break
            else:
                resolution = outcome(context)
                if resolution is not None:
                    return resolution
        return self._fallback(context)


class _Values:
    """Turns a definition's raw values and variant names into prebuilt resolutions of the flag's type."""

    def __init__(self, definition: FlagDefinition, flag: Flag[Any]) -> None:
        self.definition, self.flag = definition, flag

    def variant_of(self, raw: object) -> str:
        """The declared variant holding this value, or the value's own name."""
        canonical = json.dumps(raw, sort_keys=True)
        for name, value in self.definition.variants.items():
            if json.dumps(value, sort_keys=True) == canonical:
                return name
        return value_name(raw)

    def resolution(self, raw: object, reason: Reason) -> Resolution[Any]:
        return Resolution(self.flag.codec.parse(raw), reason, self.variant_of(raw))

    def variant(self, name: str, reason: Reason) -> Resolution[Any]:
        return Resolution(self.flag.codec.parse(self.definition.variants[name]), reason, name)

    def default(self, reason: Reason) -> Resolution[Any]:
        definition = self.definition
        if definition.default_variant is not None:
            return self.variant(definition.default_variant, reason)
        if "default" in definition.model_fields_set:
            return self.resolution(definition.default, reason)
        return self.resolution(self.flag.codec.dump(self.flag.default), reason)

    def split(self, weights: Mapping[str, int], reason: Reason) -> Outcome:
        choices = Weighted([(self.variant(name, reason), weight) for name, weight in weights.items()])
        flag_key = self.flag.key

        def choose(context: EvaluationContext) -> Resolution[Any] | None:
            key = context.targeting_key
            return None if key is None else choices.pick(flag_key + key)

        return choose


def _compile_rule(index: int, rule: Rule, values: _Values) -> tuple[tuple[Condition, ...], Outcome]:
    conditions: list[Condition] = []
    if rule.users is not None:
        users = frozenset(rule.users)
        conditions.append(lambda context: context.targeting_key in users)
    if rule.orgs is not None:
        orgs = frozenset(rule.orgs)
        conditions.append(lambda context: _scalar_key(context.attributes.get(ORG_ATTRIBUTE)) in orgs)
    if rule.attribute is not None:
        conditions.extend(_attribute_condition(index, rule.attribute, op, arg) for op, arg in rule.operators().items())
    if rule.rollout is not None:
        conditions.append(_rollout_condition(values.flag.key, rollout_weight(rule.rollout)))
    reason = Reason.SPLIT if rule.rollout is not None or rule.split is not None else Reason.TARGETING_MATCH
    outcome: Outcome
    if rule.split is not None:
        outcome = values.split(rule.split, reason)
    else:
        fixed = (
            values.variant(rule.variant, reason) if rule.variant is not None else values.resolution(rule.value, reason)
        )
        outcome = lambda context: fixed  # noqa: E731
    return tuple(conditions), outcome


def _rollout_condition(flag_key: str, weight: int) -> Condition:
    def condition(context: EvaluationContext) -> bool:
        key = context.targeting_key
        return key is not None and in_rollout(flag_key + key, weight)  # no targeting key, no sticky bucket

    return condition


def _attribute_condition(index: int, name: str, op: str, arg: Any) -> Condition:
    """A missing attribute never matches; one of the wrong type for a numeric or semver test is an error."""

    def broken(problem: str, value: object) -> EvaluationError:
        return EvaluationError(ErrorCode.PARSE_ERROR, f"rule {index}: attribute {name!r} {problem}: {value!r}")

    if op in ("equals", "in", "not_in"):
        expected = frozenset(map(_scalar_key, arg if op != "equals" else (arg,)))
        wanted = op != "not_in"

        def membership(context: EvaluationContext) -> bool:
            value = context.attributes.get(name, _MISSING)
            return value is not _MISSING and (_scalar_key(value) in expected) == wanted

        return membership
    if op in _NUMERIC:
        compare, bound = _NUMERIC[op], arg

        def numeric(context: EvaluationContext) -> bool:
            value = context.attributes.get(name, _MISSING)
            if value is _MISSING:
                return False
            if type(value) is str:
                try:
                    value = float(value)
                except ValueError:
                    raise broken("is not a number", value) from None
            elif type(value) is not int and type(value) is not float:
                raise broken("is not a number", value)
            return bool(compare(value, bound))

        return numeric
    condition = parse_condition(arg)
    if condition is None:
        raise ValueError(f"rule {index}: not a version condition: {arg!r}")  # the schema already refused it
    compare_versions, target = condition

    def semver(context: EvaluationContext) -> bool:
        value = context.attributes.get(name, _MISSING)
        if value is _MISSING:
            return False
        version = version_of(value)
        if version is None:
            raise broken("is not a semantic version", value)
        return compare_versions(version, target)

    return semver
