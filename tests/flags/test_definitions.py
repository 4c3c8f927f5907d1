"""The definition schema: the route-file shape validates, and every mistake is an error whose loc names the
flag and the field, so a loader can point at the line."""

from enum import Enum
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from asgi_gateway.flags import (
    FlagdDocument,
    FlagDefinitions,
    FlagdFlag,
    FlagFile,
    Registry,
    parse_document,
    validation_context,
)
from asgi_gateway.flags.documents import definition_from_json, definition_to_json

ROUTE_FILE_FLAGS = """
flags:
  new-profile:
    type: bool
    default: false
    description: "Serve profiles from users-v2"
    rules:
      - {users: [u-1, u-2], value: true}
      - {orgs: [acme], value: true}
      - {attribute: plan, in: [pro, enterprise], value: true}
      - {rollout: 10, value: true}          # sticky 10% of users
  pricing:
    type: str
    default: a
    variants: {a: a, b: b}
    split: {a: 50, b: 50}
"""


def errors(data: Any, registry: Registry | None = None) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        FlagFile.model_validate(data, context=validation_context(registry))
    return [(error["loc"], error["msg"]) for error in caught.value.errors()]


def flag_file(**definition: Any) -> dict[str, Any]:
    return {"flags": {"new-profile": {"type": "bool", "default": False, **definition}}}


def test_the_route_file_shape_validates() -> None:
    flags = FlagFile.model_validate(yaml.safe_load(ROUTE_FILE_FLAGS)).flags.root
    assert list(flags) == ["new-profile", "pricing"]
    profile, pricing = flags["new-profile"], flags["pricing"]
    assert (profile.key, profile.type, profile.default, profile.description) == (
        "new-profile",
        "bool",
        False,
        "Serve profiles from users-v2",
    )
    assert [rule.operators() for rule in profile.rules] == [{}, {}, {"in": ("pro", "enterprise")}, {}]
    assert (profile.rules[0].users, profile.rules[1].orgs, profile.rules[3].rollout) == (("u-1", "u-2"), ("acme",), 10)
    assert (pricing.variants, pricing.split) == ({"a": "a", "b": "b"}, {"a": 50, "b": 50})


def test_an_embedding_model_gets_the_flag_in_the_loc() -> None:
    """What config's RouteFile does: a `flags: FlagDefinitions` field."""

    class RouteFile(BaseModel):
        flags: FlagDefinitions

    with pytest.raises(ValidationError) as caught:
        RouteFile.model_validate(
            {"flags": {"new-profile": {"type": "bool", "default": False, "rules": [{"value": 1}]}}}
        )
    assert [e["loc"] for e in caught.value.errors()] == [("flags", "new-profile", "rules", 0, "value")]


@pytest.mark.parametrize(
    ("definition", "loc", "message"),
    [
        ({"default": 0}, ("default",), "bool flag: expected a boolean, got int 0"),
        (
            {"rules": [{"users": ["u-1"], "value": 1}]},
            ("rules", 0, "value"),
            "bool flag: expected a boolean, got int 1",
        ),
        ({"rules": [{"users": ["u-1"], "value": "true"}]}, ("rules", 0, "value"), "expected a boolean, got str 'true'"),
        ({"variants": {"on": True, "off": 0}}, ("variants", "off"), "expected a boolean, got int 0"),
        ({"overrides": {"u-1": None}}, ("overrides", "u-1"), "expected a boolean, got NoneType None"),
        ({"rules": [{"variant": "on"}]}, ("rules", 0, "variant"), "unknown variant 'on' (variants: none declared)"),
        ({"variants": {"on": True}, "split": {"on": 1, "off": 1}}, ("split",), "unknown variant 'off' (variants: on)"),
        ({"variants": {"on": True}, "split": {"on": 0}}, ("split",), "weights must add up to between 1 and 2147483647"),
        (
            {"rules": [{"attribute": "v", "semver": "=>1.0", "value": True}]},
            ("rules", 0, "semver"),
            "expected an operator",
        ),
        ({"rules": [{"users": ["u-1"]}]}, ("rules", 0), "a rule needs exactly one of value, variant or split"),
        ({"rules": [{"value": True, "variant": "x"}]}, ("rules", 0, "variant"), "unknown variant 'x'"),
        ({"rules": [{"attribute": "plan", "value": True}]}, ("rules", 0), "attribute needs at least one of equals"),
        ({"rules": [{"gt": 3, "value": True}]}, ("rules", 0), "attribute needs at least one of equals"),
        ({"rules": [{"rollout": 101, "value": True}]}, ("rules", 0, "rollout"), "less than or equal to 100"),
        ({"rules": [{"colour": "red", "value": True}]}, ("rules", 0, "colour"), "Extra inputs are not permitted"),
        ({"type": "boolean"}, ("type",), "Input should be 'bool', 'int', 'float', 'str' or 'json'"),
        ({"default_variant": "on", "variants": {"on": True}}, (), "give default or default_variant, not both"),
    ],
    ids=[
        "default",
        "rule-value",
        "rule-value-str",
        "variant",
        "override",
        "unknown-variant",
        "split-variant",
        "split-weights",
        "semver",
        "no-outcome",
        "two-outcomes",
        "attribute-without-operator",
        "operator-without-attribute",
        "rollout-range",
        "unknown-key",
        "unknown-type",
        "two-defaults",
    ],
)
def test_mistakes_are_errors_at_their_loc(definition: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    [(error_loc, error_message)] = errors(flag_file(**definition))
    assert error_loc == ("flags", "new-profile", *loc)
    assert message in error_message


def test_a_flag_defined_only_in_a_file_needs_a_default() -> None:
    assert errors({"flags": {"solo": {"type": "int"}}}) == [
        (("flags", "solo"), "needs a default (or default_variant) unless declared in code")
    ]


def test_every_mistake_is_reported_at_once() -> None:
    data = {
        "flags": {"a": {"type": "int", "default": "x"}, "b": {"type": "str", "default": "y", "rules": [{"value": 1}]}}
    }
    assert [loc for loc, _ in errors(data)] == [("flags", "a", "default"), ("flags", "b", "rules", 0, "value")]


def test_numbers_are_floats_but_bools_are_not() -> None:
    flags = FlagFile.model_validate({"flags": {"ratio": {"type": "float", "default": 1, "variants": {"half": 0.5}}}})
    assert flags.flags.root["ratio"].default == 1
    assert errors({"flags": {"ratio": {"type": "float", "default": True}}}) == [
        (("flags", "ratio", "default"), "float flag: expected a number, got bool True")
    ]


class Plan(Enum):
    FREE = "free"
    PRO = "pro"


class Banner(BaseModel):
    text: str


def code_registry() -> Registry:
    registry = Registry()
    registry.int("max-items", default=10)
    registry.enum("plan", Plan, default=Plan.FREE)
    registry.model("banner", Banner, default=Banner(text="hi"))
    return registry


@pytest.mark.parametrize(
    ("key", "definition", "loc", "message"),
    [
        ("max-items", {"type": "str", "default": "10"}, ("type",), "declared in code as int (int), not str"),
        ("plan", {"type": "str", "default": "gold"}, ("default",), "expected one of ['free', 'pro'], got 'gold'"),
        ("plan", {"type": "str", "rules": [{"value": "pro"}, {"value": "x"}]}, ("rules", 1, "value"), "Plan flag"),
        ("banner", {"type": "json", "default": {"txt": "x"}}, ("default",), "not a valid Banner: text: Field required"),
    ],
    ids=["kind", "enum-member", "enum-in-rule", "model"],
)
def test_definitions_for_flags_declared_in_code_must_fit_them(
    key: str, definition: dict[str, Any], loc: tuple[Any, ...], message: str
) -> None:
    [(error_loc, error_message)] = errors({"flags": {key: definition}}, code_registry())
    assert error_loc == ("flags", key, *loc)
    assert message in error_message


def test_a_flag_declared_in_code_needs_no_default_in_the_file() -> None:
    data = {"flags": {"plan": {"type": "str", "rules": [{"orgs": ["acme"], "value": "pro"}]}}}
    flags = FlagFile.model_validate(data, context=validation_context(code_registry())).flags.root
    assert not flags["plan"].has_default


def test_a_mapping_key_wins_over_nothing_and_must_agree_with_an_explicit_key() -> None:
    assert errors({"flags": {"a": {"key": "b", "type": "int", "default": 1}}}) == [
        (("flags",), "a: key 'b' differs from its mapping key")
    ]


def test_definitions_round_trip_through_json() -> None:
    definition = parse_document(yaml.safe_load(ROUTE_FILE_FLAGS))["new-profile"]
    text = definition_to_json(definition)
    assert '"in":["pro","enterprise"]' in text  # YAML's names, not Python's
    assert definition_from_json("new-profile", text) == definition


FLAGD = {
    "flags": {
        "welcome": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [{"$ref": "internal"}, "on", None]},
        }
    },
    "$evaluators": {
        "internal": {"and": [{"$ref": "has_email"}, {"ends_with": [{"var": "email"}, "@example.com"]}]},
        "has_email": {"!!": {"var": "email"}},
    },
}


def test_flagd_refs_are_inlined_recursively() -> None:
    flag = FlagdDocument.model_validate(FLAGD).flags["welcome"]
    assert flag.targeting == {
        "if": [{"and": [{"!!": {"var": "email"}}, {"ends_with": [{"var": "email"}, "@example.com"]}]}, "on", None]
    }
    assert parse_document(FLAGD)["welcome"] == flag


@pytest.mark.parametrize(
    ("flag", "evaluators", "message"),
    [
        ({"variants": {"on": True}, "defaultVariant": "off"}, {}, "defaultVariant 'off' is not a variant"),
        ({"variants": {"on": True, "one": 1}}, {}, "variants must all be of one type, got bool, int"),
        ({"variants": {}}, {}, "a flag needs at least one variant"),
        (
            {"variants": {"on": True}, "targeting": {"$ref": "a"}},
            {"a": {"$ref": "b"}, "b": {"$ref": "a"}},
            "a -> b -> a",
        ),
    ],
    ids=["default-variant", "mixed-types", "no-variants", "ref-cycle"],
)
def test_flagd_mistakes(flag: dict[str, Any], evaluators: dict[str, Any], message: str) -> None:
    document = {"flags": {"f": {"state": "ENABLED", **flag}}, "$evaluators": evaluators}
    with pytest.raises(ValidationError, match=message):
        parse_document(document)


def test_flagd_variants_must_fit_a_flag_declared_in_code() -> None:
    document = {"flags": {"max-items": {"state": "ENABLED", "variants": {"few": 3, "many": "lots"}}}}
    with pytest.raises(ValidationError) as caught:
        parse_document(document, code_registry())
    [error] = caught.value.errors()
    assert error["loc"] == ("flags", "max-items", "variants")
    assert error["msg"] == "variant 'many': int flag: expected an integer, got str 'lots'"


@pytest.mark.parametrize(
    ("data", "loc", "message"),
    [
        ({"flags": []}, ("flags",), "Input should be a valid dictionary"),
        ({"flags": {"a": [1]}}, ("flags", "a"), "Input should be a valid dictionary or instance of FlagDefinition"),
        ({"flags": {"a b": {"type": "int", "default": 1}}}, ("flags", "a b", "[key]"), "String should match pattern"),
    ],
    ids=["flags-not-a-mapping", "definition-not-a-mapping", "bad-key"],
)
def test_malformed_files(data: Any, loc: tuple[Any, ...], message: str) -> None:
    [(error_loc, error_message)] = errors(data)[:1]
    assert error_loc == loc
    assert message in error_message


@pytest.mark.parametrize(
    ("variants", "kind"),
    [
        ({"a": True}, "bool"),
        ({"a": 1, "b": 2}, "int"),
        ({"a": 1, "b": 0.5}, "float"),
        ({"a": "x"}, "str"),
        ({"a": {}, "b": [1]}, "json"),
    ],
)
def test_flagd_flags_take_their_kind_from_their_variants(variants: dict[str, Any], kind: str) -> None:
    document = parse_document({"flags": {"f": {"state": "ENABLED", "variants": variants}}})
    assert isinstance(document["f"], FlagdFlag)
    assert document["f"].kind == kind


def test_a_flagd_document_needs_flags() -> None:
    with pytest.raises(ValidationError, match="flags\n  Input should be a valid dictionary"):
        FlagdDocument.model_validate({"flags": "none"})


def test_a_stored_definition_is_a_json_object() -> None:
    with pytest.raises(ValueError, match="flag 'a': expected a JSON object"):
        definition_from_json("a", "[1]")
