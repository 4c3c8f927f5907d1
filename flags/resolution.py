"""What one evaluation returns: the value, the variant, why, and what went wrong (errors are values)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar

from asgi_gateway.flags.model import value_name

T = TypeVar("T")

FlagMetadata = Mapping[str, bool | int | float | str]  # OpenFeature's flag metadata: scalars by key
NO_METADATA: FlagMetadata = MappingProxyType({})


class Reason(StrEnum):
    """Why a value was chosen; the names and meanings are OpenFeature's."""

    STATIC = "STATIC"  # no dynamic evaluation: the flag has no rules, or an override pins it
    DEFAULT = "DEFAULT"  # rules exist but none matched
    TARGETING_MATCH = "TARGETING_MATCH"  # a rule or a targeting-key override matched
    SPLIT = "SPLIT"  # a sticky pseudorandom assignment: percentage rollout or weighted variants
    DISABLED = "DISABLED"  # the definition says enabled: false
    ERROR = "ERROR"  # see error_code; the value is the flag's default


class ErrorCode(StrEnum):
    """OpenFeature's error codes, so the provider can hand them over unchanged."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    GENERAL = "GENERAL"


@dataclass(frozen=True, slots=True)
class Resolution(Generic[T]):
    """One evaluation of one flag. Immutable, so compiled definitions hand out shared instances.

    `variant` is None when no variant chose the value: an error, DISABLED, or a flagd flag without a default
    variant whose targeting did not pick one. The value is then the flag's default from code, and a caller
    holding a default of its own (another declaration, an OpenFeature call) gets that one instead.
    """

    value: T
    reason: Reason
    variant: str | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    flag_metadata: FlagMetadata = field(default_factory=lambda: NO_METADATA)  # dataclasses refuse it as a plain default

    @property
    def is_code_default(self) -> bool:
        """The value is the flag's default from code, not one a definition chose (see the class docstring)."""
        return self.variant is None

    @property
    def label(self) -> str:
        """What was decided, as a short string for headers and cache keys: the variant, else the value's name."""
        return self.variant if self.variant is not None else value_name(self.value)
