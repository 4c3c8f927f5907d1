"""flagd's flag-definition format gives what flagd gives: values, variants, reasons and buckets.

Expected values are flagd's own, from its testbed scenarios (open-feature/flagd-testbed, evaluator/gherkin:
fractional.feature tagged fractional-v2, string.feature, semver.feature, targeting.feature,
evaluator-refs.feature, no-default-variant.feature); flagd_flags.json restates the testbed's definitions.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
from pydantic import ValidationError

from asgi_gateway.flags import (
    ErrorCode,
    EvaluationContext,
    Flag,
    Reason,
    Registry,
    Resolution,
    Resolver,
    load_file,
    parse_document,
)
from asgi_gateway.flags.flagd import fractional, sem_ver
from asgi_gateway.flags.openfeature import ResolverProvider
from asgi_gateway.flags.sources import FileSource

DOCUMENT = Path(__file__).with_name("flagd_flags.json")


def flag(variants: dict[str, Any], default: str | None, targeting: Any = None) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": variants, "defaultVariant": default, "targeting": targeting or {}}


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    return Resolver(sources=[FileSource(DOCUMENT)])


def details(resolver: Resolver, key: str, targeting_key: str | None = None, **attributes: Any) -> Resolution[Any]:
    return resolver.evaluate(key, EvaluationContext(targeting_key, attributes))


@pytest.mark.parametrize(
    ("key", "name", "value"),
    [
        ("fractional-flag", "jack", "hearts"),
        ("fractional-flag", "queen", "spades"),
        ("fractional-flag", "ten", "clubs"),
        ("fractional-flag", "nine", "diamonds"),
        ("fractional-flag", "3", "clubs"),
        ("fractional-flag-A-shared-seed", "seven", "hearts"),
        ("fractional-flag-A-shared-seed", "eight", "diamonds"),
        ("fractional-flag-A-shared-seed", "nine", "clubs"),
        ("fractional-flag-A-shared-seed", "two", "spades"),
        ("fractional-flag-B-shared-seed", "seven", "ace-of-hearts"),
        ("fractional-flag-B-shared-seed", "eight", "ace-of-diamonds"),
        ("fractional-flag-B-shared-seed", "nine", "ace-of-clubs"),
        ("fractional-flag-B-shared-seed", "two", "ace-of-spades"),
    ],
)
def test_fractional_buckets_agree_with_flagd(resolver: Resolver, key: str, name: str, value: str) -> None:
    resolution = details(resolver, key, user={"name": name})
    assert (resolution.value, resolution.reason) == (value, Reason.TARGETING_MATCH)


@pytest.mark.parametrize(
    ("key", "targeting_key", "attributes", "value"),
    [
        ("fractional-flag-shorthand", "jon@company.com", {}, "heads"),
        ("fractional-flag-shorthand", "jane@company.com", {}, "tails"),
        ("fractional-hash-edge-flag", "ejOoVL", {}, "lower"),
        ("fractional-hash-edge-flag", "bY9fO-", {}, "lower"),
        ("fractional-hash-edge-flag", "SI7p-", {}, "lower"),
        ("fractional-hash-edge-flag", "6LvT0", {}, "upper"),
        ("fractional-hash-edge-flag", "ceQdGm", {}, "upper"),
        ("fractional-nested-if-flag", "jon@company.com", {"tier": "premium"}, "premium"),
        ("fractional-nested-if-flag", "jon@company.com", {"tier": "basic"}, "standard"),
        ("fractional-nested-if-flag", "user1", {"tier": "premium"}, "standard"),
        ("fractional-nested-weight-flag", "jon@company.com", {"tier": "premium"}, "red"),
        ("fractional-nested-weight-flag", "jon@company.com", {"tier": "basic"}, "blue"),
        ("fractional-nested-weight-flag", "user1", {"tier": "premium"}, "red"),
        ("fractional-as-condition-flag", "some-targeting-key", {}, "hundreds"),
        ("fractional-single-entry-flag", None, {}, "single"),
        ("fractional-null-bucket-key-flag", None, {}, "fallback"),
    ],
)
def test_fractional_forms(
    resolver: Resolver, key: str, targeting_key: str | None, attributes: dict[str, Any], value: str
) -> None:
    assert details(resolver, key, targeting_key, **attributes).value == value


@pytest.mark.parametrize(
    ("key", "attributes", "value", "reason"),
    [
        ("starts-ends-flag", {"id": "abcdef"}, "prefix", Reason.TARGETING_MATCH),
        ("starts-ends-flag", {"id": "uvwxyz"}, "postfix", Reason.TARGETING_MATCH),
        ("starts-ends-flag", {"id": "abcxyz"}, "prefix", Reason.TARGETING_MATCH),
        ("starts-ends-flag", {"id": "lmnopq"}, "none", Reason.TARGETING_MATCH),
        ("starts-with-non-string-flag", {"num": 123}, "fallback", Reason.DEFAULT),
        ("ends-with-wrong-args-flag", {}, "fallback", Reason.DEFAULT),
        ("equal-greater-lesser-version-flag", {"version": "2.0.0"}, "equal", Reason.TARGETING_MATCH),
        ("equal-greater-lesser-version-flag", {"version": "2.1.0"}, "greater", Reason.TARGETING_MATCH),
        ("equal-greater-lesser-version-flag", {"version": "1.9.0"}, "lesser", Reason.TARGETING_MATCH),
        ("equal-greater-lesser-version-flag", {"version": "2.0.0-alpha"}, "lesser", Reason.TARGETING_MATCH),
        ("equal-greater-lesser-version-flag", {"version": "2.0.0.0"}, "none", Reason.TARGETING_MATCH),
        ("major-minor-version-flag", {"version": "3.0.1"}, "minor", Reason.TARGETING_MATCH),
        ("major-minor-version-flag", {"version": "3.1.0"}, "major", Reason.TARGETING_MATCH),
        ("major-minor-version-flag", {"version": "4.0.0"}, "none", Reason.TARGETING_MATCH),
        ("semver-invalid-operator-flag", {"version": "1.0.0"}, "fallback", Reason.DEFAULT),
        ("semver-v-prefix-flag", {"version": "v1.0.0"}, "match", Reason.TARGETING_MATCH),
        ("semver-v-prefix-flag", {"version": "2.0.0"}, "no-match", Reason.TARGETING_MATCH),
        ("semver-partial-version-flag", {"version": "1.5.0"}, "match", Reason.TARGETING_MATCH),
        ("semver-partial-version-flag", {"version": "2.0.0"}, "no-match", Reason.TARGETING_MATCH),
        ("semver-v-prefix-flag", {"version": "V1.0.0"}, "match", Reason.TARGETING_MATCH),
        ("semver-partial-version-flag", {"version": 1}, "match", Reason.TARGETING_MATCH),
        ("semver-partial-version-flag", {"version": 1.5}, "match", Reason.TARGETING_MATCH),
        ("semver-partial-version-flag", {"version": 2}, "no-match", Reason.TARGETING_MATCH),
        ("semver-partial-version-flag", {"version": True}, "no-match", Reason.TARGETING_MATCH),
        ("semver-build-metadata-flag", {"version": "1.0.0+other"}, "match", Reason.TARGETING_MATCH),
        ("some-email-targeted-flag", {"email": "ballmer@macrosoft.com"}, "hi", Reason.TARGETING_MATCH),
        ("some-email-targeted-flag", {"email": "other@example.com"}, "bye", Reason.TARGETING_MATCH),
        ("nested-ref-targeted-flag", {"email": "ballmer@macrosoft.com"}, "privileged", Reason.TARGETING_MATCH),
        ("nested-ref-targeted-flag", {"role": "admin"}, "privileged", Reason.TARGETING_MATCH),
        ("nested-ref-targeted-flag", {"email": "other@example.com"}, "standard", Reason.TARGETING_MATCH),
        ("boolean-flag", {}, True, Reason.STATIC),
        ("disabled-flag", {}, True, Reason.DISABLED),
        ("no-default-flag-null-targeting-variant", {"email": "jobs@orange.com"}, "CEO", Reason.TARGETING_MATCH),
    ],
)
def test_operators_and_reasons(
    resolver: Resolver, key: str, attributes: dict[str, Any], value: Any, reason: Reason
) -> None:
    resolution = details(resolver, key, **attributes)
    assert (resolution.value, resolution.reason, resolution.error_code) == (value, reason, None)


@pytest.mark.parametrize(
    ("targeting_key", "expected"),
    [
        ("5c3d8535-f81a-4478-a6d3-afaa4d51199e", Resolution("hit", Reason.TARGETING_MATCH, "hit")),
        ("f20bd32d-703b-48b6-bc8e-79d53c85134a", Resolution("miss", Reason.DEFAULT, "miss")),
    ],
)
def test_targeting_key_and_null_targeting(resolver: Resolver, targeting_key: str, expected: Resolution[str]) -> None:
    assert details(resolver, "targeting-key-flag", targeting_key) == expected


def test_a_flag_without_default_variant_falls_back_to_the_code_default() -> None:
    registry = Registry()
    null_default = registry.bool("null-default-flag", default=True)
    targeted = registry.str("no-default-flag-null-targeting-variant", default="Inventor")
    resolver = Resolver(registry, sources=[FileSource(DOCUMENT, registry=registry)])
    assert resolver.details(null_default, EvaluationContext()) == Resolution(True, Reason.DEFAULT)
    assert resolver.details(targeted, EvaluationContext(None, {"email": "wozniak@orange.com"})) == Resolution(
        "Inventor", Reason.DEFAULT
    )


@pytest.mark.parametrize(
    ("key", "fallback", "email", "value", "reason"),
    [
        ("null-default-flag", True, None, True, Reason.DEFAULT),
        ("null-default-flag", False, None, False, Reason.DEFAULT),
        ("undefined-default-flag", 100, None, 100, Reason.DEFAULT),
        ("no-default-flag-null-targeting-variant", "Inventor", "wozniak@orange.com", "Inventor", Reason.DEFAULT),
        ("no-default-flag-null-targeting-variant", "CEO", "jobs@orange.com", "CEO", Reason.TARGETING_MATCH),
        ("no-default-flag-undefined-targeting-variant", "Retired", "wozniak@orange.com", "Retired", Reason.DEFAULT),
    ],
)
def test_without_default_variant_the_callers_fallback_applies(
    resolver: Resolver, key: str, fallback: Any, email: str | None, value: Any, reason: Reason
) -> None:
    """The testbed's no-default-variant.feature: whoever asks gets their own fallback, never the type's zero
    value; here an OpenFeature client, and a declaration in a registry the resolver was not given."""
    attributes = {"email": email} if email else {}
    provider = ResolverProvider(resolver)
    kind = type(fallback).__name__  # also the name of the Registry method that declares such a flag
    openfeature_kind = {"bool": "boolean", "int": "integer", "str": "string"}[kind]
    try:
        details = getattr(provider, f"resolve_{openfeature_kind}_details")(
            key, fallback, OpenFeatureContext(attributes=attributes)
        )
    finally:
        provider.shutdown()
    assert (details.value, details.reason, details.error_code) == (value, reason, None)
    declared = getattr(Registry(), kind)(key, default=fallback)
    resolution = resolver.details(declared, EvaluationContext(None, attributes))
    assert (resolution.value, resolution.reason, resolution.error_code) == (value, reason, None)


@pytest.mark.parametrize(
    ("key", "code", "message"),
    [
        ("ref-to-nonexistent-evaluator-flag", ErrorCode.PARSE_ERROR, "Unrecognized operation: '$ref'"),
        ("unknown-variant-flag", ErrorCode.GENERAL, "targeting chose 'maybe', which is not a variant"),
    ],
)
def test_broken_targeting_is_an_error(resolver: Resolver, key: str, code: ErrorCode, message: str) -> None:
    resolution = details(resolver, key)
    assert (resolution.value, resolution.reason, resolution.error_code) == ("fallback", Reason.ERROR, code)
    assert message in (resolution.error_message or "")


def test_flags_defined_only_in_flagd_get_the_kind_of_their_variants(resolver: Resolver) -> None:
    declared = resolver.flag("boolean-flag")
    assert isinstance(declared, Flag)
    assert (declared.kind, declared.default) == ("bool", True)


def test_a_native_flag_and_its_flagd_twin_bucket_alike(tmp_path: Path) -> None:
    """`{rollout: 25}` in our format picks the users flagd's `fractional` gives 25 to."""
    flagd_path, native_path = tmp_path / "flagd.json", tmp_path / "native.yaml"
    canary = flag({"on": True, "off": False}, "off", {"fractional": [["on", 25], ["off", 75]]})
    flagd_path.write_text(json.dumps({"flags": {"canary": canary}}))
    native_path.write_text("flags:\n  canary: {type: bool, default: false, rules: [{rollout: 25, value: true}]}\n")
    flagd, native = Resolver(sources=[FileSource(flagd_path)]), Resolver(sources=[FileSource(native_path)])
    users = [EvaluationContext(f"user-{n}") for n in range(5000)]
    assert [flagd.evaluate("canary", u).value for u in users] == [native.evaluate("canary", u).value for u in users]
    assert load_file(flagd_path)["canary"].key == load_file(native_path)["canary"].key == "canary"


@pytest.mark.parametrize(
    ("args", "result"),
    [
        ((), None),
        (("key",), None),
        (("key", ["a", 1.5]), None),
        (("key", ["a", True]), None),
        (("key", "a"), None),
        (("key", [{"a": 1}, 1]), None),
        (("key", ["a", 0]), None),
        (("key", ["a", -5], ["b", 1]), "b"),
        (("key", ["a", 2.0]), "a"),
        (("key", ["a", None]), "a"),
        ((["a"], ["b"]), "a"),
        ((None, ["a", 1]), None),
        ((7, ["a", 1]), None),
    ],
    ids=[
        "nothing", "no-buckets", "fractional-weight", "bool-weight", "bucket-not-a-list", "object-name",
        "no-weight", "negative-weight", "integral-float", "null-weight-is-one", "no-targeting-key-is-empty",
        "null-bucketing-key", "number-bucketing-key",
    ],
)  # fmt: skip
def test_fractional_argument_handling(args: tuple[Any, ...], result: Any) -> None:
    assert fractional({}, *args) == result


@pytest.mark.parametrize(
    ("args", "result"),
    [
        (("1.0.0", "=", "1.0.0"), True),
        (("1.0.0", "==", "1.0.0"), None),
        ((1, "=", "1.0.0"), True),
        ((1.2, "=", "1.2.0"), True),
        (("2.0.0", ">", 1), True),
        (("V1.2.3", "=", "v1.2.3"), True),
        ((True, "=", "1.0.0"), None),
        ((None, "=", "1.0.0"), None),
        (("1.0.0",), None),
    ],
    ids=["equal", "unknown-operator", "integer", "float", "number-target", "v-prefixes", "bool", "null", "too-few"],
)
def test_sem_ver_argument_handling(args: tuple[Any, ...], result: Any) -> None:
    assert sem_ver({}, *args) == result


@pytest.mark.parametrize(
    ("targeting", "variant"),
    [({"if": [True, True, False]}, "true"), ({"+": [1.0, 1]}, "2"), ({"+": [0.5, 1]}, "1.5")],
    ids=["bool", "integral-float", "float"],
)
def test_targeting_results_are_variant_names_as_flagd_prints_them(targeting: Any, variant: str, tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    variants = {"true": "yes", "false": "no", "2": "two", "1.5": "one and a half"}
    path.write_text(json.dumps({"flags": {"f": {"state": "ENABLED", "variants": variants, "targeting": targeting}}}))
    assert Resolver(sources=[FileSource(path)]).evaluate("f", EvaluationContext()).variant == variant


METADATA_DOCUMENT = {
    "metadata": {"team": "checkout", "flagSetId": "shop", "version": 1},
    "flags": {
        "combined": {
            **flag({"on": True, "off": False}, "off", {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", None]}),
            "metadata": {"version": 17, "owner": "ana", "ratio": 0.5, "beta": True},
        },
        "only-set": flag({"on": True, "off": False}, "on"),
        "retired": {**flag({"on": True, "off": False}, "on"), "state": "DISABLED", "metadata": {"why": "done"}},
    },
}
SET = {"team": "checkout", "flagSetId": "shop", "version": 1}
COMBINED = {"team": "checkout", "flagSetId": "shop", "version": 17, "owner": "ana", "ratio": 0.5, "beta": True}


@pytest.mark.parametrize(
    ("key", "tier", "reason", "metadata"),
    [
        ("combined", "gold", Reason.TARGETING_MATCH, COMBINED),
        ("combined", "tin", Reason.DEFAULT, COMBINED),
        ("only-set", None, Reason.STATIC, SET),
        ("retired", None, Reason.DISABLED, {**SET, "why": "done"}),
    ],
)
def test_flag_metadata_merges_over_flag_set_metadata(
    tmp_path: Path, key: str, tier: str | None, reason: Reason, metadata: dict[str, Any]
) -> None:
    """flagd's "Metadata": the flag set's and the flag's, the flag's winning on a shared key, in the details
    our resolver gives and in OpenFeature's `flag_metadata`."""
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(METADATA_DOCUMENT))
    resolver = Resolver(sources=[FileSource(path)])
    attributes = {"tier": tier} if tier else {}
    resolution = resolver.evaluate(key, EvaluationContext("u-1", attributes))
    assert (resolution.reason, dict(resolution.flag_metadata)) == (reason, metadata)
    provider = ResolverProvider(resolver)
    try:
        details = provider.resolve_boolean_details(key, False, OpenFeatureContext("u-1", attributes))
    finally:
        provider.shutdown()
    assert (details.reason, dict(details.flag_metadata)) == (reason, metadata)


def test_a_flag_without_metadata_has_none(resolver: Resolver) -> None:
    assert dict(details(resolver, "boolean-flag").flag_metadata) == {}


@pytest.mark.parametrize(
    ("document", "loc"),
    [
        ({"flags": {"f": {**flag({"on": True}, "on"), "metadata": {"bad": {"key": "value"}}}}}, "flags.f.metadata.bad"),
        ({"metadata": {"bad": [1]}, "flags": {"f": flag({"on": True}, "on")}}, "metadata.bad"),
    ],
    ids=["flag", "flag-set"],
)
def test_metadata_values_are_scalars_as_in_flagds_schema(document: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_document(document)
    assert {".".join(map(str, error["loc"][: loc.count(".") + 1])) for error in caught.value.errors()} == {loc}
