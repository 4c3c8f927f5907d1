"""The definition schema: what route files, flag files and Redis say about a flag (pydantic v2, frozen).

A route file embeds it under a top-level `flags:` mapping (`flags: FlagDefinitions`):

    flags:
      new-profile:
        type: bool
        default: false
        description: "Serve profiles from users-v2"
        overrides: {u-qa: true}                        # by targeting key, before any rule
        rules:                                         # first match wins
          - {users: [u-1, u-2], value: true}
          - {orgs: [acme], value: true}
          - {attribute: plan, in: [pro, enterprise], value: true}
          - {attribute: seats, gte: 10, lt: 500, value: true}
          - {attribute: app_version, semver: ">=2.1.0", value: true}
          - {rollout: 10, value: true}                 # sticky 10% of users (flagd's fractional bucketing)
      pricing:
        type: str
        default_variant: a
        variants: {a: "a", b: "b"}
        rules:
          - {orgs: [acme], variant: b}
        split: {a: 50, b: 50}                          # everyone else: sticky weighted split

Values are checked against the declared `type` inside the validators, so a wrong one is a ValidationError
whose `loc` names the flag and the field, e.g. `('new-profile', 'rules', 0, 'value')`; a loader that keeps
the YAML node tree can walk that `loc` to a line. Pass `context=validation_context(registry)` to also check
every definition for a key declared in code against that declaration (its kind, its enum members, its model).
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    RootModel,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from asgi_gateway.flags.model import FLAG_KEY_PATTERN, PLAIN_CODECS, Codec, Flag, FlagKind
from asgi_gateway.flags.rollout import MAX_TOTAL_WEIGHT
from asgi_gateway.flags.semver import COMPARISONS, parse_condition

if TYPE_CHECKING:
    from asgi_gateway.flags.registry import Registry

REGISTRY_CONTEXT = "flag_registry"

FlagKey = Annotated[str, StringConstraints(pattern=f"^{FLAG_KEY_PATTERN}$", max_length=200)]
VariantName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
Number = StrictInt | StrictFloat
Weight = Annotated[int, Field(ge=0, le=MAX_TOTAL_WEIGHT)]


def validation_context(registry: "Registry | None") -> dict[str, object]:
    """The pydantic validation context that checks definitions against the flags declared in `registry`."""
    return {REGISTRY_CONTEXT: registry}


@dataclass(frozen=True, slots=True)
class _Scope:
    """What the definition being validated declares, for the validators of its nested values.

    A rule's `value` can only be checked against its flag's `type`, which pydantic does not hand to nested
    validators; checking it in the definition's own validator would lose the error's nested loc. So the
    definition sets this scope (a ContextVar: validation is synchronous) around validating its fields.
    """

    codec: Codec[Any] | None  # the code declaration's if it has the declared kind; None if `type` is invalid
    bound: Flag[Any] | None  # the flag declared in code under the same key
    variants: frozenset[str] | None  # None when `variants` is malformed: reported there


_SCOPE: ContextVar[_Scope | None] = ContextVar("flag_definition_scope", default=None)


@contextmanager
def _scope(scope: _Scope) -> Iterator[None]:
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _bound_flag(key: object, info: ValidationInfo) -> Flag[Any] | None:
    registry = (info.context or {}).get(REGISTRY_CONTEXT)
    return registry.get(key) if registry is not None and isinstance(key, str) else None


def _typed_value(value: JsonValue) -> JsonValue:
    """Checks a value against the enclosing definition's type; the raw JSON is kept for dumping back."""
    scope = _SCOPE.get()
    codec = scope.codec if scope is not None else None
    if codec is not None:
        try:
            codec.parse(value)
        except (TypeError, ValueError) as exc:
            raise PydanticCustomError(
                "flag_value", "{flag_type} flag: {error}", {"flag_type": codec.name, "error": str(exc)}
            ) from None
    return value


def _known_variant(name: str) -> str:
    scope = _SCOPE.get()
    if scope is not None and scope.variants is not None and name not in scope.variants:
        known = ", ".join(sorted(scope.variants)) or "none declared"
        raise PydanticCustomError(
            "flag_variant", "unknown variant '{name}' (variants: {known})", {"name": name, "known": known}
        )
    return name


def _weights(split: dict[str, int]) -> dict[str, int]:
    for name in split:
        _known_variant(name)
    total = sum(split.values())
    if not 0 < total <= MAX_TOTAL_WEIGHT:
        raise PydanticCustomError("flag_split", "weights must add up to between 1 and {max}", {"max": MAX_TOTAL_WEIGHT})
    return split


def _semver_condition(text: str) -> str:
    if parse_condition(text) is None:
        raise PydanticCustomError(
            "flag_semver",
            "expected an operator ({ops}) and a semantic version, like '>=2.1.0'",
            {"ops": " ".join(COMPARISONS)},
        )
    return text


FlagValue = Annotated[JsonValue, AfterValidator(_typed_value)]
Variant = Annotated[VariantName, AfterValidator(_known_variant)]
Split = Annotated[dict[VariantName, Weight], AfterValidator(_weights)]
SemverCondition = Annotated[str, AfterValidator(_semver_condition)]


class _StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Rule(_StrictModel):
    """One targeting rule: every condition it states must hold; then it yields a value, a variant or a split.

    A rule with no condition matches everyone, which makes it an "everyone else" rule.
    """

    users: tuple[str, ...] | None = None  # targeting keys
    orgs: tuple[str, ...] | None = None  # the context's `org` attribute
    attribute: str | None = None  # with one or more of the operators below, all of which must hold
    equals: Scalar | None = None
    in_: tuple[Scalar, ...] | None = Field(default=None, alias="in")
    not_in: tuple[Scalar, ...] | None = None
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None
    semver: SemverCondition | None = None  # an operator of flagd's sem_ver and a version: ">=2.1.0", "^2", "~2.1"
    rollout: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None  # sticky % of targeting keys
    value: FlagValue = None
    variant: Variant | None = None
    split: Split | None = None  # sticky weighted choice among variants

    @model_validator(mode="after")
    def _one_outcome(self) -> Self:
        outcomes = [name for name in ("value", "variant", "split") if name in self.model_fields_set]
        if len(outcomes) != 1:
            raise PydanticCustomError("flag_rule", "a rule needs exactly one of value, variant or split")
        if (self.attribute is None) != (not self.operators()):
            raise PydanticCustomError(
                "flag_rule",
                "attribute needs at least one of equals, in, not_in, gt, gte, lt, lte, semver, and they need it",
            )
        return self

    def operators(self) -> dict[str, Any]:
        """The attribute operators this rule states, by their YAML names."""
        names = ("equals", "in_", "not_in", "gt", "gte", "lt", "lte", "semver")
        return {("in" if n == "in_" else n): getattr(self, n) for n in names if n in self.model_fields_set}


class FlagDefinition(_StrictModel):
    """One flag's definition. Evaluation order: `enabled`, `overrides`, `rules` in order, `split`, default."""

    key: FlagKey  # filled in from the mapping key by FlagDefinitions
    type: FlagKind
    description: str = ""
    enabled: bool = True
    default: FlagValue = None  # a value; or name one of `variants` with default_variant
    default_variant: Variant | None = None
    variants: dict[VariantName, FlagValue] = Field(default_factory=dict)
    overrides: dict[str, FlagValue] = Field(default_factory=dict)  # targeting key -> value
    rules: tuple[Rule, ...] = ()
    split: Split | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _validate_in_scope(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return handler(data)
        variants = data.get("variants", {})
        declared = next((c for c in PLAIN_CODECS.values() if c.kind.value == data.get("type")), None)
        bound = _bound_flag(data.get("key"), info)
        scope = _Scope(
            codec=bound.codec
            if bound is not None and declared is not None and bound.kind == declared.kind
            else declared,
            bound=bound,
            variants=frozenset(variants) if isinstance(variants, Mapping) else None,
        )
        with _scope(scope):
            return handler(data)

    @field_validator("type")
    @classmethod
    def _matches_code(cls, kind: FlagKind) -> FlagKind:
        scope = _SCOPE.get()
        if scope is not None and scope.bound is not None and scope.bound.kind != kind:
            raise PydanticCustomError(
                "flag_type",
                "declared in code as {code} ({kind}), not {declared}",
                {"code": scope.bound.codec.name, "kind": scope.bound.kind.value, "declared": kind.value},
            )
        return kind

    @model_validator(mode="after")
    def _has_default(self, info: ValidationInfo) -> Self:
        has_default = "default" in self.model_fields_set
        if has_default and self.default_variant is not None:
            raise PydanticCustomError("flag_default", "give default or default_variant, not both")
        if not has_default and self.default_variant is None and _bound_flag(self.key, info) is None:
            raise PydanticCustomError("flag_default", "needs a default (or default_variant) unless declared in code")
        return self

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set or self.default_variant is not None


class FlagDefinitions(RootModel[dict[FlagKey, FlagDefinition]]):
    """The `flags:` mapping of a route file or flag file: flag key -> definition."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _keys_from_mapping(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: {"key": key, **value} if isinstance(value, Mapping) else value for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _keys_agree(self) -> Self:
        for key, definition in self.root.items():
            if definition.key != key:
                raise PydanticCustomError(
                    "flag_key",
                    "{key}: key '{other}' differs from its mapping key",
                    {"key": key, "other": definition.key},
                )
        return self


class FlagFile(_StrictModel):
    """A file of native definitions: a top-level `flags:` mapping, as in a route file."""

    flags: FlagDefinitions


# flagd's flag-definition format (https://flagd.dev/reference/flag-definitions/): read as it is, unknown keys
# ignored as flagd does; `$ref`s to shared `$evaluators` are inlined when the document is loaded.


def _flagd_variants(variants: dict[str, JsonValue], info: ValidationInfo) -> dict[str, JsonValue]:
    if not variants:
        raise PydanticCustomError("flagd_variants", "a flag needs at least one variant")
    bound = _bound_flag(info.data.get("key"), info)
    codec = bound.codec if bound is not None else PLAIN_CODECS[flagd_kind(variants)]
    for name, value in variants.items():
        try:
            codec.parse(value)
        except (TypeError, ValueError) as exc:
            raise PydanticCustomError(
                "flag_value",
                "variant '{name}': {flag_type} flag: {error}",
                {"name": name, "flag_type": codec.name, "error": str(exc)},
            ) from None
    return variants


def flagd_kind(variants: Mapping[str, object]) -> FlagKind:
    """The kind flagd's schema allows for these variants (one type per flag); mixed types are an error."""
    types = {type(v) for v in variants.values()}
    if types == {bool}:
        return FlagKind.BOOL
    if types == {int}:
        return FlagKind.INT
    if types and types <= {int, float}:
        return FlagKind.FLOAT
    if types == {str}:
        return FlagKind.STR
    if types and types <= {dict, list}:
        return FlagKind.JSON
    raise PydanticCustomError(
        "flagd_variants",
        "variants must all be of one type, got {types}",
        {"types": ", ".join(sorted(t.__name__ for t in types))},
    )


class FlagdFlag(BaseModel):
    """One flag of a flagd document, with its targeting's `$ref`s already inlined."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    key: FlagKey
    state: Literal["ENABLED", "DISABLED"]
    variants: Annotated[dict[str, JsonValue], AfterValidator(_flagd_variants)]
    default_variant: str | None = Field(default=None, alias="defaultVariant")
    targeting: JsonValue = Field(default_factory=dict)  # a JsonLogic expression evaluating to a variant name
    metadata: dict[str, Scalar] = Field(default_factory=dict)  # flagd's schema: strings, numbers, booleans

    @model_validator(mode="after")
    def _default_is_a_variant(self) -> Self:
        if self.default_variant is not None and self.default_variant not in self.variants:
            raise PydanticCustomError(
                "flagd_default", "defaultVariant '{name}' is not a variant", {"name": self.default_variant}
            )
        return self

    @property
    def kind(self) -> FlagKind:
        return flagd_kind(self.variants)


def _inline_refs(logic: Any, evaluators: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Replace `{"$ref": name}` with the named shared evaluator (itself inlined); unknown names stay, and
    fail when evaluated, as in flagd."""
    if isinstance(logic, list):
        return [_inline_refs(item, evaluators, seen) for item in logic]
    if not isinstance(logic, dict):
        return logic
    name = logic.get("$ref")
    if len(logic) == 1 and isinstance(name, str) and name in evaluators:
        if name in seen:
            raise PydanticCustomError(
                "flagd_ref",
                "$evaluators refer to each other in a cycle: {cycle}",
                {"cycle": " -> ".join((*seen, name))},
            )
        return _inline_refs(evaluators[name], evaluators, (*seen, name))
    return {key: _inline_refs(value, evaluators, seen) for key, value in logic.items()}


class FlagdDocument(BaseModel):
    """A flagd flag-definition document: `{"flags": {...}, "$evaluators": {...}, "metadata": {...}}`."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    flags: dict[FlagKey, FlagdFlag]
    evaluators: dict[str, JsonValue] = Field(default_factory=dict, alias="$evaluators")
    metadata: dict[str, Scalar] = Field(default_factory=dict)  # the flag set's, under every flag's own

    def definitions(self) -> dict[str, FlagdFlag]:
        """The flags, each with the flag set's metadata merged under its own: flagd returns that merge, the
        flag's value winning on a shared key."""
        if not self.metadata:
            return dict(self.flags)
        return {
            key: flag.model_copy(update={"metadata": {**self.metadata, **flag.metadata}})
            for key, flag in self.flags.items()
        }

    @model_validator(mode="before")
    @classmethod
    def _prepare_flags(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("flags"), Mapping):
            return data
        evaluators = data.get("$evaluators")
        evaluators = evaluators if isinstance(evaluators, Mapping) else {}
        flags = {}
        for key, flag in data["flags"].items():
            if isinstance(flag, Mapping):
                flag = {**flag, "key": key}
                if "targeting" in flag:
                    flag["targeting"] = _inline_refs(flag["targeting"], evaluators)
            flags[key] = flag
        return {**data, "flags": flags}


Definition = FlagDefinition | FlagdFlag
