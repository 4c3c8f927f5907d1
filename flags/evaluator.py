"""The shape every compiled definition takes: a flag and a function from context to resolution."""

from typing import Any, Protocol

from asgi_gateway.flags.model import EvaluationContext, Flag
from asgi_gateway.flags.resolution import ErrorCode, Reason, Resolution


class Evaluator(Protocol):
    """A definition compiled for one flag: no I/O, no parsing, only the checks that depend on the context."""

    @property
    def flag(self) -> Flag[Any]: ...

    def evaluate(self, context: EvaluationContext) -> Resolution[Any]: ...


class EvaluationError(Exception):
    """A definition that cannot be evaluated for this context; the resolver turns it into reason ERROR."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Fixed:
    """Always the same resolution: an override from the environment, or a definition that failed to compile."""

    __slots__ = ("flag", "resolution")

    def __init__(self, flag: Flag[Any], resolution: Resolution[Any]) -> None:
        self.flag, self.resolution = flag, resolution

    def evaluate(self, context: EvaluationContext) -> Resolution[Any]:
        return self.resolution


def error_resolution(flag: Flag[Any], code: ErrorCode, message: str) -> Resolution[Any]:
    """The flag's default with reason ERROR: what every failure resolves to."""
    return Resolution(flag.default, Reason.ERROR, error_code=code, error_message=message)
