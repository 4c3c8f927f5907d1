"""What one evaluation returns: the value, the variant, why, and what went wrong (errors are values)."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from flags.model import value_name

T = TypeVar("T")


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
    """One evaluation of one flag. Immutable, so compiled definitions hand out shared instances."""

    value: T
    reason: Reason
    variant: str | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None

    @property
    def label(self) -> str:
        """What was decided, as a short string for headers and cache keys: the variant, else the value's name."""
        return self.variant if self.variant is not None else value_name(self.value)
