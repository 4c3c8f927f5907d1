"""The resolver as an OpenFeature provider (openfeature-sdk 0.10), for apps written against OpenFeature.

    api.set_provider(ResolverProvider(resolver))
    api.get_client().get_boolean_details("new-checkout", False, EvaluationContext("u-1", {"org": "acme"}))

gives the value, variant, reason, error code and flag metadata `resolver.details(NEW_CHECKOUT, ...)` gives.
Where no variant chose the value (errors, DISABLED, a flagd flag without default variant) the caller's
default is returned, as the spec and flagd want.
A value of another type than asked for is TYPE_MISMATCH; a bool is never an integer.
"""

from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OpenFeatureErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason as OpenFeatureReason
from openfeature.provider import AbstractProvider, Metadata
from pydantic import BaseModel

from asgi_gateway.flags.model import EvaluationContext
from asgi_gateway.flags.resolution import Resolution
from asgi_gateway.flags.resolver import Resolver

T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


class ResolverProvider(AbstractProvider):
    def __init__(self, resolver: Resolver, *, name: str = "asgi-gateway flags") -> None:
        super().__init__()
        self._resolver, self._name = resolver, name
        self._unsubscribe = resolver.subscribe(self._definitions_changed)

    def get_metadata(self) -> Metadata:
        return Metadata(name=self._name)

    def shutdown(self) -> None:
        self._unsubscribe()

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: OpenFeatureContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, lambda v: type(v) is bool, _plain)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: OpenFeatureContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_str, _plain)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: OpenFeatureContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_int, _plain)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: OpenFeatureContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_number, lambda v: float(_plain(v)))

    def resolve_object_details(
        self, flag_key: str, default_value: ObjectValue, evaluation_context: OpenFeatureContext | None = None
    ) -> FlagResolutionDetails[ObjectValue]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_object, _plain)

    def _resolve(
        self,
        key: str,
        default: T,
        context: OpenFeatureContext | None,
        accepts: Callable[[object], bool],
        convert: Callable[[Any], Any],
    ) -> FlagResolutionDetails[T]:
        resolution = self._resolver.evaluate(key, _context(context))
        if resolution.is_code_default:  # errors, DISABLED, a flagd flag without default variant
            return _details(resolution, default)
        if not accepts(resolution.value):
            message = f"flag {key!r} is {type(_plain(resolution.value)).__name__}, not {type(default).__name__}"
            return FlagResolutionDetails(
                default,
                OpenFeatureErrorCode.TYPE_MISMATCH,
                message,
                OpenFeatureReason.ERROR,
                flag_metadata=resolution.flag_metadata,
            )
        return _details(resolution, convert(resolution.value))

    def _definitions_changed(self, resolver: Resolver) -> None:
        self.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=sorted(resolver.definitions())))


def _details(resolution: Resolution[Any], value: T) -> FlagResolutionDetails[T]:
    code = OpenFeatureErrorCode(resolution.error_code.value) if resolution.error_code is not None else None
    return FlagResolutionDetails(
        value,
        code,
        resolution.error_message,
        OpenFeatureReason(resolution.reason.value),
        resolution.variant,
        resolution.flag_metadata,
    )


def _context(context: OpenFeatureContext | None) -> EvaluationContext:
    if context is None:
        return EvaluationContext()
    return EvaluationContext(context.targeting_key, dict(context.attributes))


def _plain(value: Any) -> Any:
    """Enum members travel as their values, pydantic models as JSON objects."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def _is_str(value: object) -> bool:
    return type(_plain(value)) is str


def _is_int(value: object) -> bool:
    return type(_plain(value)) is int


def _is_number(value: object) -> bool:
    return type(_plain(value)) in (int, float)


def _is_object(value: object) -> bool:
    return isinstance(_plain(value), dict | list)
