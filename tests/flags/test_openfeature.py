"""Through the OpenFeature SDK, the resolver gives the same details as when asked directly."""

import queue
from collections.abc import Iterator
from enum import Enum
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode as OpenFeatureErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails
from pydantic import BaseModel

from asgi_gateway.flags import EvaluationContext, Flag, FlagDefinition, Reason, Registry, Resolution, Resolver
from asgi_gateway.flags.openfeature import ResolverProvider
from asgi_gateway.flags.sources import InMemorySource


class Plan(Enum):
    FREE = "free"
    PRO = "pro"


registry = Registry()
NEW_CHECKOUT = registry.bool("new-checkout", default=False)
MAX_ITEMS = registry.int("max-items", default=10)
DISCOUNT = registry.float("discount", default=0.0)
THEME = registry.str("theme", default="light")
PLAN = registry.enum("plan", Plan, default=Plan.FREE)
LIMITS = registry.json("limits", default={"rps": 10})
KILLED = registry.bool("killed", default=False)
UNDEFINED = registry.str("undefined", default="nothing")

source = InMemorySource(
    [
        FlagDefinition(key="new-checkout", type="bool", default=False, rules=[{"orgs": ["acme"], "value": True}]),
        FlagDefinition(key="max-items", type="int", default=10, rules=[{"users": ["u-1"], "value": 99}]),
        FlagDefinition(key="discount", type="float", default=0.1, variants={"big": 0.5}, split={"big": 1}),
        FlagDefinition(key="theme", type="str", default="dark"),
        FlagDefinition(
            key="plan", type="str", default="free", rules=[{"attribute": "seats", "gte": 5, "value": "pro"}]
        ),
        FlagDefinition(key="limits", type="json", default={"rps": 100}),
        FlagDefinition(key="killed", type="bool", default=True, enabled=False),
        FlagDefinition(key="broken", type="int", default=1, rules=[{"attribute": "seats", "gt": 1, "value": 2}]),
    ]
)
resolver = Resolver(registry, sources=[source])
CONTEXT = EvaluationContext("u-1", {"org": "acme", "seats": 7})
OPENFEATURE_CONTEXT = OpenFeatureContext("u-1", {"org": "acme", "seats": 7})


@pytest.fixture
def client() -> Iterator[OpenFeatureClient]:
    api.set_provider(ResolverProvider(resolver))
    yield api.get_client()
    api.clear_providers()


def same(details: FlagEvaluationDetails[Any], resolution: Resolution[Any], value: Any) -> None:
    assert (details.value, details.variant, details.reason, details.error_code, details.error_message) == (
        value,
        resolution.variant,
        resolution.reason,
        resolution.error_code,
        resolution.error_message,
    )


@pytest.mark.parametrize(
    ("method", "flag", "default", "plain"),
    [
        ("get_boolean_details", NEW_CHECKOUT, False, lambda v: v),
        ("get_integer_details", MAX_ITEMS, 0, lambda v: v),
        ("get_float_details", DISCOUNT, 0.0, lambda v: v),
        ("get_string_details", THEME, "x", lambda v: v),
        ("get_string_details", PLAN, "x", lambda v: v.value),
        ("get_object_details", LIMITS, {}, lambda v: v),
    ],
    ids=["bool", "int", "float", "str", "enum", "json"],
)
def test_the_sdk_returns_the_resolvers_details(
    client: Any, method: str, flag: Flag[Any], default: Any, plain: Any
) -> None:
    resolution = resolver.details(flag, CONTEXT)
    assert resolution.reason in (Reason.TARGETING_MATCH, Reason.SPLIT, Reason.STATIC)
    same(getattr(client, method)(flag.key, default, OPENFEATURE_CONTEXT), resolution, plain(resolution.value))


def test_the_typed_getter(client: OpenFeatureClient) -> None:
    assert client.get_boolean_value("new-checkout", False, OPENFEATURE_CONTEXT) is True


def test_a_disabled_flag_gives_the_callers_default(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details("killed", False, OPENFEATURE_CONTEXT)
    same(details, resolver.details(KILLED, CONTEXT), False)
    assert details.reason == "DISABLED"


@pytest.mark.parametrize(
    ("key", "error_code"),
    [("undefined", "FLAG_NOT_FOUND"), ("nowhere", "FLAG_NOT_FOUND")],
    ids=["declared-not-defined", "unknown"],
)
def test_a_missing_flag(client: OpenFeatureClient, key: str, error_code: str) -> None:
    details = client.get_string_details(key, "caller", OPENFEATURE_CONTEXT)
    assert (details.value, details.reason, details.error_code) == ("caller", "ERROR", error_code)


def test_a_broken_rule_is_the_same_error(client: OpenFeatureClient) -> None:
    context = EvaluationContext("u-1", {"seats": "many"})
    details = client.get_integer_details("broken", 0, OpenFeatureContext("u-1", {"seats": "many"}))
    same(details, resolver.evaluate("broken", context), 0)
    assert details.error_code == OpenFeatureErrorCode.PARSE_ERROR


@pytest.mark.parametrize(
    ("method", "key", "default"),
    [
        ("get_integer_details", "new-checkout", 1),
        ("get_float_details", "new-checkout", 0.5),
        ("get_string_details", "new-checkout", "x"),
        ("get_boolean_details", "max-items", False),
        ("get_object_details", "theme", {}),
        ("get_integer_details", "discount", 1),
    ],
    ids=["bool-as-int", "bool-as-float", "bool-as-str", "int-as-bool", "str-as-object", "float-as-int"],
)
def test_a_value_of_another_type_is_a_type_mismatch(
    client: OpenFeatureClient, method: str, key: str, default: Any
) -> None:
    details = getattr(client, method)(key, default, OPENFEATURE_CONTEXT)
    assert (details.value, details.reason, details.error_code) == (default, "ERROR", "TYPE_MISMATCH")


def test_an_integer_is_a_float(client: OpenFeatureClient) -> None:
    assert client.get_float_details("max-items", 0.0, OPENFEATURE_CONTEXT).value == 99.0


def test_definition_changes_are_announced() -> None:
    own_source = InMemorySource([FlagDefinition(key="theme", type="str", default="dark")])
    provider = ResolverProvider(Resolver(sources=[own_source]))
    api.set_provider(provider, domain="changes")
    client = api.get_client(domain="changes")
    seen: queue.Queue[EventDetails] = queue.Queue()  # the SDK runs handlers on its own threads
    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, seen.put)
    try:
        own_source.put(FlagDefinition(key="theme", type="str", default="blue"))
        assert seen.get(timeout=5).flags_changed == ["theme"]
        own_source.put(FlagDefinition(key="limit", type="int", default=3))
        assert seen.get(timeout=5).flags_changed == ["limit", "theme"]
        assert client.get_string_value("theme", "x") == "blue"
        provider.shutdown()
        own_source.put(FlagDefinition(key="theme", type="str", default="green"))
        assert client.get_string_value("theme", "x") == "green"  # still answering, no longer announcing
    finally:
        api.clear_providers()
    assert seen.empty()


class Banner(BaseModel):
    text: str


def test_model_flags_are_objects_and_a_missing_context_is_empty() -> None:
    own = Registry()
    banner = own.model("banner", Banner, default=Banner(text="hi"))
    provider = ResolverProvider(
        Resolver(own, sources=[InMemorySource([FlagDefinition(key="banner", type="json", default={"text": "sale"})])])
    )
    details = provider.resolve_object_details("banner", {})
    assert (details.value, details.reason, banner.default) == ({"text": "sale"}, "STATIC", Banner(text="hi"))
