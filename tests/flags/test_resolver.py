"""Resolution: overrides, rules in order, splits, defaults; and errors as values, never exceptions."""

from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any

import pytest
import yaml

from asgi_gateway.flags import (
    ErrorCode,
    EvaluationContext,
    Flag,
    Reason,
    Registry,
    Resolution,
    Resolver,
    parse_document,
)
from asgi_gateway.flags.resolver import EvaluationHook
from asgi_gateway.flags.sources import InMemorySource, env_overrides

FLAGS = yaml.safe_load("""
flags:
  new-profile:
    type: bool
    default: false
    overrides: {u-banned: false, u-tester: true}
    rules:
      - {users: [u-1, u-2], value: true}
      - {orgs: [acme], value: true}
      - {attribute: plan, in: [pro, enterprise], value: true}
      - {attribute: seats, gte: 10, lt: 100, value: true}
      - {attribute: app_version, semver: ">=2.1.0", value: true}
      - {rollout: 10, value: true}
  pricing:
    type: str
    default_variant: a
    variants: {a: "price-a", b: "price-b", c: "price-c"}
    rules:
      - {orgs: [acme], variant: c}
      - {attribute: country, not_in: [us, ca], split: {a: 1, b: 1}}
  static-limit:
    type: int
    default: 5
  kill-switch:
    type: bool
    enabled: false
    default: true
    rules: [{value: true}]
""")


def make_resolver(data: Any = FLAGS, **kwargs: Any) -> tuple[Resolver, dict[str, Flag[Any]]]:
    definitions = parse_document(data)
    registry = Registry()
    flags = {flag.key: flag for flag in registry.declare(definitions.values())}
    return Resolver(registry, sources=[InMemorySource(definitions)], **kwargs), flags


RESOLVER, FLAGS_BY_KEY = make_resolver()


def ctx(user: str | None = None, **attributes: object) -> EvaluationContext:
    return EvaluationContext(user, attributes)


@pytest.mark.parametrize(
    ("context", "value", "reason", "variant"),
    [
        (ctx("u-1"), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", org="acme"), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", org="other"), False, Reason.DEFAULT, "false"),
        (ctx("u-3", plan="pro"), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", plan="free"), False, Reason.DEFAULT, "false"),
        (ctx("u-3", seats=10), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", seats="42"), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", seats=100), False, Reason.DEFAULT, "false"),
        (ctx("u-3", seats=9.5), False, Reason.DEFAULT, "false"),
        (ctx("u-3", app_version="2.1.0"), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", app_version="v2.10.1"), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", app_version="2.1.0-beta.1"), False, Reason.DEFAULT, "false"),
        (ctx("u-3", app_version="V2.2"), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", app_version=3), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", app_version=2.1), True, Reason.TARGETING_MATCH, "true"),
        (ctx("u-3", app_version=2), False, Reason.DEFAULT, "false"),
        (ctx("u-banned", org="acme"), False, Reason.TARGETING_MATCH, "false"),
        (ctx("u-tester"), True, Reason.TARGETING_MATCH, "true"),
        (ctx(None, org="acme"), True, Reason.TARGETING_MATCH, "true"),
        (ctx(None), False, Reason.DEFAULT, "false"),
    ],
    ids=[
        "user",
        "org",
        "other-org",
        "attribute-in",
        "attribute-not-in",
        "numeric-gte",
        "numeric-from-text",
        "numeric-lt-bound",
        "numeric-below",
        "semver",
        "semver-v-prefix",
        "semver-prerelease-is-lower",
        "semver-capital-v",
        "semver-integer",
        "semver-float",
        "semver-integer-below",
        "override-beats-rules",
        "override-true",
        "org-without-user",
        "nobody",
    ],
)
def test_targeting(context: EvaluationContext, value: bool, reason: Reason, variant: str) -> None:
    assert RESOLVER.details(FLAGS_BY_KEY["new-profile"], context) == Resolution(value, reason, variant)


def test_the_first_matching_rule_wins() -> None:
    """acme is in the org rule (variant c) and would also be split by the country rule after it."""
    pricing = FLAGS_BY_KEY["pricing"]
    assert RESOLVER.details(pricing, ctx("u-1", org="acme", country="de")) == Resolution(
        "price-c", Reason.TARGETING_MATCH, "c"
    )
    split = RESOLVER.details(pricing, ctx("u-1", org="other", country="de"))
    assert (split.reason, split.variant in ("a", "b")) == (Reason.SPLIT, True)
    assert RESOLVER.details(pricing, ctx("u-1", country="us")) == Resolution("price-a", Reason.DEFAULT, "a")


def test_a_split_needs_a_targeting_key() -> None:
    assert RESOLVER.details(FLAGS_BY_KEY["pricing"], ctx(None, country="de")) == Resolution(
        "price-a", Reason.DEFAULT, "a"
    )


def test_a_rollout_match_is_a_split() -> None:
    """About a tenth of the users with no other rule matching get the rollout's value."""
    flag = FLAGS_BY_KEY["new-profile"]
    resolutions = [RESOLVER.details(flag, ctx(f"user-{n}")) for n in range(2000)]
    rolled = [r for r in resolutions if r.value]
    assert {r.reason for r in rolled} == {Reason.SPLIT}
    assert 150 < len(rolled) < 250


def test_a_flag_without_rules_is_static() -> None:
    assert RESOLVER.details(FLAGS_BY_KEY["static-limit"], ctx("u-1")) == Resolution(5, Reason.STATIC, "5")


def test_a_disabled_flag_gives_its_default() -> None:
    assert RESOLVER.details(FLAGS_BY_KEY["kill-switch"], ctx("u-1")) == Resolution(True, Reason.DISABLED)


def test_resolve_is_the_value() -> None:
    assert RESOLVER.resolve(FLAGS_BY_KEY["new-profile"], ctx("u-2")) is True


def test_a_flag_without_definition_gives_its_default_with_an_error() -> None:
    registry = Registry()
    flag = registry.bool("undefined", default=True)
    resolution = Resolver(registry).details(flag, ctx("u-1"))
    assert resolution == Resolution(
        True, Reason.ERROR, error_code=ErrorCode.FLAG_NOT_FOUND, error_message="no definition for flag 'undefined'"
    )


@pytest.mark.parametrize(
    ("rule", "context", "message"),
    [
        (
            {"attribute": "seats", "gt": 3, "value": True},
            ctx("u", seats="many"),
            "rule 0: attribute 'seats' is not a number: 'many'",
        ),
        (
            {"attribute": "seats", "gt": 3, "value": True},
            ctx("u", seats=[4]),
            "rule 0: attribute 'seats' is not a number: [4]",
        ),
        (
            {"attribute": "v", "semver": "^2", "value": True},
            ctx("u", v="two"),
            "rule 0: attribute 'v' is not a semantic version: 'two'",
        ),
        (
            {"attribute": "v", "semver": "^2", "value": True},
            ctx("u", v=True),
            "rule 0: attribute 'v' is not a semantic version: True",
        ),
    ],
    ids=["text", "list", "semver-text", "semver-bool"],
)
def test_a_broken_rule_gives_the_default_with_an_error(
    rule: dict[str, Any], context: EvaluationContext, message: str
) -> None:
    resolver, flags = make_resolver({"flags": {"broken": {"type": "bool", "default": False, "rules": [rule]}}})
    assert resolver.details(flags["broken"], context) == Resolution(
        False, Reason.ERROR, error_code=ErrorCode.PARSE_ERROR, error_message=message
    )


def test_a_missing_attribute_is_no_match_rather_than_an_error() -> None:
    data = {
        "flags": {
            "f": {
                "type": "bool",
                "default": False,
                "rules": [
                    {"attribute": "seats", "gt": 3, "value": True},
                    {"attribute": "plan", "not_in": ["x"], "value": True},
                ],
            }
        }
    }
    resolver, flags = make_resolver(data)
    assert resolver.details(flags["f"], ctx("u")) == Resolution(False, Reason.DEFAULT, "false")


@pytest.mark.parametrize(
    ("attribute", "matches"),
    [("pro", True), (True, False), (1, False), (["pro"], False), ({"plan": "pro"}, False)],
    ids=["equal", "bool-is-not-text", "int-is-not-text", "list", "dict"],
)
def test_equality_is_strict_about_types(attribute: object, matches: bool) -> None:
    data = {
        "flags": {
            "f": {
                "type": "bool",
                "default": False,
                "rules": [{"attribute": "plan", "in": ["pro", 2, False], "value": True}],
            }
        }
    }
    resolver, flags = make_resolver(data)
    assert resolver.resolve(flags["f"], ctx("u", plan=attribute)) is matches


def test_a_definition_of_another_type_is_a_type_mismatch() -> None:
    """The same key asked for as a str but defined as a bool (a flag not registered with the resolver)."""
    other = Flag("new-profile", default="no")
    resolution = RESOLVER.details(other, ctx("u-1"))
    assert (resolution.value, resolution.reason, resolution.error_code) == ("no", Reason.ERROR, ErrorCode.TYPE_MISMATCH)


def test_an_equivalent_flag_object_is_accepted() -> None:
    assert RESOLVER.details(Flag("new-profile", default=False), ctx("u-1")).value is True


def test_evaluate_by_key() -> None:
    assert RESOLVER.evaluate("pricing", ctx("u-1", org="acme")).value == "price-c"
    missing = RESOLVER.evaluate("nope", ctx("u-1"))
    assert (missing.value, missing.reason, missing.error_code) == (None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)


def test_hooks_see_every_evaluation_and_their_errors_are_swallowed() -> None:
    seen: list[tuple[str, EvaluationContext, Resolution[Any]]] = []

    def failing(flag_key: str, context: EvaluationContext, resolution: Resolution[Any]) -> None:
        raise RuntimeError("hook bug")

    hooks: list[EvaluationHook] = [failing, lambda key, context, resolution: seen.append((key, context, resolution))]
    resolver, flags = make_resolver(hooks=hooks)
    context = ctx("u-1")
    assert resolver.resolve(flags["new-profile"], context) is True
    assert resolver.evaluate("nope", context).error_code is ErrorCode.FLAG_NOT_FOUND
    assert [(key, c is context, r.value) for key, c, r in seen] == [("new-profile", True, True), ("nope", True, None)]


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        ("new-profile=true", "new-profile", Resolution(True, Reason.STATIC, "true")),
        ("pricing=b", "pricing", Resolution("price-b", Reason.STATIC, "b")),
        ("pricing=custom", "pricing", Resolution("custom", Reason.STATIC, "custom")),
        ("static-limit=7, kill-switch=false", "static-limit", Resolution(7, Reason.STATIC, "7")),
        ("kill-switch=false", "kill-switch", Resolution(False, Reason.STATIC, "false")),
    ],
    ids=["bool", "variant", "value", "int", "beats-disabled"],
)
def test_environment_overrides_pin_flags(overrides: str, key: str, expected: Resolution[Any]) -> None:
    resolver, flags = make_resolver(overrides=env_overrides({"FLAGS_OVERRIDE": overrides}))
    assert resolver.details(flags[key], ctx("u-1", org="acme")) == expected
    assert resolver.problems == {}


def test_a_bad_override_is_reported_and_resolves_as_an_error() -> None:
    resolver, flags = make_resolver(overrides=env_overrides({"FLAGS_OVERRIDE": "new-profile=maybe,ghost=1"}))
    resolution = resolver.details(flags["new-profile"], ctx("u-1"))
    assert (resolution.value, resolution.error_code) == (False, ErrorCode.PARSE_ERROR)
    assert resolver.problems == {
        "new-profile": "override 'maybe' is not a bool value",
        "ghost": "override for unknown flag 'ghost'",
    }


def test_an_override_needs_no_definition() -> None:
    registry = Registry()
    flag = registry.int("max-items", default=10)
    assert Resolver(registry, overrides={"max-items": "3"}).details(flag, ctx()) == Resolution(3, Reason.STATIC, "3")


@pytest.mark.parametrize(
    ("text", "bad_item"),
    [("new-profile", "'new-profile'"), ("=true", "'=true'"), ("a=1,,b", "'b'")],
    ids=["no-equals", "no-key", "empty-item-skipped"],
)
def test_override_syntax(text: str, bad_item: str) -> None:
    with pytest.raises(ValueError, match=f"FLAGS_OVERRIDE: expected key=value, got {bad_item}"):
        env_overrides({"FLAGS_OVERRIDE": text})


def test_later_sources_win_and_updates_swap_in() -> None:
    registry = Registry()
    flag = registry.int("limit", default=1)
    base = InMemorySource(parse_document({"flags": {"limit": {"type": "int", "default": 2}}}))
    live = InMemorySource()
    resolver = Resolver(registry, sources=[base, live])
    swaps: list[Resolver] = []
    resolver.subscribe(swaps.append)
    assert resolver.resolve(flag, ctx()) == 2
    live.set(parse_document({"flags": {"limit": {"type": "int", "default": 3}}}))
    assert (resolver.resolve(flag, ctx()), swaps) == (3, [resolver])
    live.delete("limit")
    assert resolver.resolve(flag, ctx()) == 2


def test_a_definition_that_does_not_fit_the_code_flag_resolves_as_an_error() -> None:
    """Definitions validated without the registry (no context) are still checked when compiled."""
    registry = Registry()
    flag = registry.int("limit", default=1)
    resolver = Resolver(
        registry, sources=[InMemorySource(parse_document({"flags": {"limit": {"type": "str", "default": "x"}}}))]
    )
    resolution = resolver.details(flag, ctx())
    assert (resolution.value, resolution.error_code) == (1, ErrorCode.TYPE_MISMATCH)
    assert resolver.problems == {"limit": "defined as str, declared in code as int"}


def test_a_failing_update_listener_does_not_stop_the_others() -> None:
    source = InMemorySource()
    resolver = Resolver(sources=[source])
    seen: list[str] = []

    def failing(resolver: Resolver) -> None:
        raise RuntimeError("listener bug")

    resolver.subscribe(failing)
    unsubscribe = resolver.subscribe(lambda r: seen.append(",".join(r.definitions())))
    source.put(parse_document({"flags": {"a": {"type": "int", "default": 1}}})["a"])
    unsubscribe()
    unsubscribe()  # twice is harmless
    source.put(parse_document({"flags": {"b": {"type": "int", "default": 1}}})["b"])
    assert seen == ["a"]


def test_declare_keeps_flags_declared_in_code() -> None:
    registry = Registry()
    coded = registry.int("limit", default=1)
    definitions = parse_document(
        {"flags": {"limit": {"type": "int", "default": 2}, "theme": {"type": "str", "default": "x"}}}
    )
    limit, theme = registry.declare(definitions.values())
    assert (limit is coded, theme.key, theme.default, registry["theme"] is theme) == (True, "theme", "x", True)


@pytest.mark.parametrize(
    ("resolution", "label"),
    [
        (Resolution(True, Reason.STATIC, "on"), "on"),
        (Resolution(5, Reason.ERROR), "5"),
        (Resolution(None, Reason.ERROR), "null"),
    ],
    ids=["variant", "value", "none"],
)
def test_a_resolution_is_labelled_by_its_variant_else_its_value(resolution: Resolution[Any], label: str) -> None:
    assert resolution.label == label


def test_a_value_that_a_variant_holds_goes_by_that_variants_name() -> None:
    data = {"flags": {"f": {"type": "bool", "default": False, "variants": {"on": True, "off": False},
                            "rules": [{"users": ["u-1"], "value": True}]}}}  # fmt: skip
    resolver, flags = make_resolver(data)
    assert resolver.details(flags["f"], ctx("u-1")) == Resolution(True, Reason.TARGETING_MATCH, "on")
    assert resolver.details(flags["f"], ctx("u-2")) == Resolution(False, Reason.DEFAULT, "off")


def test_without_a_default_in_the_file_the_code_default_applies() -> None:
    registry = Registry()
    flag = registry.int("limit", default=10)
    definitions = parse_document(
        {"flags": {"limit": {"type": "int", "rules": [{"users": ["u-1"], "value": 1}]}}}, registry
    )
    resolver = Resolver(registry, sources=[InMemorySource(definitions)])
    assert resolver.details(flag, ctx("u-2")) == Resolution(10, Reason.DEFAULT, "10")


@pytest.mark.parametrize(
    ("declare", "text", "expected"),
    [
        (lambda r: r.float("f", default=0.0), "0.25", Resolution(0.25, Reason.STATIC, "0.25")),
        (lambda r: r.json("f", default={}), '{"a":1}', Resolution({"a": 1}, Reason.STATIC, '{"a":1}')),
        (lambda r: r.str("f", default="x"), "plain", Resolution("plain", Reason.STATIC, "plain")),
    ],
    ids=["float", "json", "str"],
)
def test_overrides_are_read_as_the_flags_type(declare: Any, text: str, expected: Resolution[Any]) -> None:
    registry = Registry()
    flag = declare(registry)
    assert Resolver(registry, overrides={"f": text}).details(flag, ctx()) == expected


def test_an_override_outside_an_enum_is_a_problem() -> None:
    registry = Registry()
    flag = registry.enum("plan", Plan, default=Plan.FREE)
    resolver = Resolver(registry, overrides={"plan": "gold"})
    assert resolver.details(flag, ctx()).error_code is ErrorCode.PARSE_ERROR
    assert resolver.problems == {"plan": "override 'gold': expected one of ['free', 'pro'], got 'gold'"}


class Plan(Enum):
    FREE = "free"
    PRO = "pro"


class Hostile(Mapping[str, object]):
    """Attributes that fail when read: the resolver still answers."""

    def __getitem__(self, key: str) -> object:
        raise RuntimeError("attribute store down")

    def get(self, key: str, default: object = None) -> object:
        raise RuntimeError("attribute store down")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_nothing_raises_into_the_request_path() -> None:
    resolution = RESOLVER.details(FLAGS_BY_KEY["new-profile"], EvaluationContext("u-3", Hostile()))
    assert resolution == Resolution(
        False, Reason.ERROR, error_code=ErrorCode.GENERAL, error_message="RuntimeError: attribute store down"
    )


def test_hooks_can_be_added_later_and_the_registry_is_shared() -> None:
    registry = Registry()
    flag = registry.bool("f", default=True)
    resolver = Resolver(registry, overrides={"f": "false"})
    seen: list[str] = []
    resolver.add_hook(lambda key, context, resolution: seen.append(f"{key}={resolution.label}"))
    assert (resolver.resolve(flag, ctx()), seen, resolver.registry is registry) == (False, ["f=false"], True)


def test_the_org_attribute() -> None:
    assert (ctx("u", org="acme").org, ctx("u", org=3).org, ctx("u").org) == ("acme", None, None)
