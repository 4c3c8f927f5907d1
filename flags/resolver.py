"""The resolver: evaluates declared flags against compiled definitions, in microseconds and without raising.

Definitions come from sources (later sources win per key) with environment overrides on top. When a source
changes, everything is recompiled off the request path and swapped in with one assignment, so an evaluation
sees either the old snapshot or the new one, never a mix.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from asgi_gateway.flags.compiler import compile_definition, compile_override, flag_for_definition
from asgi_gateway.flags.definitions import Definition
from asgi_gateway.flags.evaluator import EvaluationError, Evaluator, Fixed, error_resolution
from asgi_gateway.flags.listeners import Listeners
from asgi_gateway.flags.model import EvaluationContext, Flag
from asgi_gateway.flags.registry import Registry
from asgi_gateway.flags.resolution import ErrorCode, Reason, Resolution

T = TypeVar("T")
logger = logging.getLogger(__name__)


class EvaluationHook(Protocol):
    """Called after every evaluation (span events, metrics, audit); its exceptions are logged and dropped."""

    def __call__(self, flag_key: str, context: EvaluationContext, resolution: Resolution[Any], /) -> None: ...


class FlagSource(Protocol):
    """Where definitions come from. `definitions` is the last good set; listeners run after it changes."""

    @property
    def definitions(self) -> Mapping[str, Definition]: ...

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Calls `listener` after every change; returns a function that unsubscribes it."""
        ...


@dataclass(frozen=True, slots=True)
class _Snapshot:
    evaluators: Mapping[str, Evaluator]
    definitions: Mapping[str, Definition]
    problems: Mapping[str, str]  # key -> why its definition or override did not compile


class Resolver:
    """`resolve(flag, context) -> T` and `details(flag, context) -> Resolution[T]`, never raising.

    `registry` holds the flags declared in code: a definition for one of their keys is compiled for that
    declaration, any other definition declares its own flag. `overrides` (key -> variant name or value text,
    see `env_overrides`) pin flags for local work.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        sources: Sequence[FlagSource] = (),
        overrides: Mapping[str, str] | None = None,
        hooks: Sequence[EvaluationHook] = (),
    ) -> None:
        self._registry = registry or Registry()
        self._sources = tuple(sources)
        self._overrides = dict(overrides or {})
        self._hooks = tuple(hooks)
        self._failed_hooks: set[int] = set()
        self._listeners: Listeners[[Resolver]] = Listeners()
        self._compiled_from = self._source_definitions()
        self._snapshot = self._compile()
        for source in self._sources:
            source.subscribe(self.refresh)

    @property
    def registry(self) -> Registry:
        return self._registry

    def resolve(self, flag: Flag[T], context: EvaluationContext) -> T:
        return self.details(flag, context).value

    def details(self, flag: Flag[T], context: EvaluationContext) -> Resolution[T]:
        evaluator = self._snapshot.evaluators.get(flag.key)
        if evaluator is None:
            resolution = error_resolution(flag, ErrorCode.FLAG_NOT_FOUND, f"no definition for flag {flag.key!r}")
        elif evaluator.flag is not flag and evaluator.flag.codec is not flag.codec:
            message = f"flag {flag.key!r} is defined as {evaluator.flag.codec.name}, asked for as {flag.codec.name}"
            resolution = error_resolution(flag, ErrorCode.TYPE_MISMATCH, message)
        else:
            resolution = self._evaluate(evaluator, flag, context)
        if self._hooks:
            self._run_hooks(flag.key, context, resolution)
        return resolution

    def evaluate(self, key: str, context: EvaluationContext) -> Resolution[Any]:
        """By key, for callers without the declared object (admin endpoints, the OpenFeature provider)."""
        evaluator = self._snapshot.evaluators.get(key)
        flag = evaluator.flag if evaluator is not None else self._registry.get(key)
        if flag is not None:
            return self.details(flag, context)
        resolution: Resolution[Any] = Resolution(
            None, Reason.ERROR, error_code=ErrorCode.FLAG_NOT_FOUND, error_message=f"no flag {key!r}"
        )
        if self._hooks:
            self._run_hooks(key, context, resolution)
        return resolution

    def flag(self, key: str) -> Flag[Any] | None:
        """The flag a key resolves as: declared in code, or declared by its definition."""
        evaluator = self._snapshot.evaluators.get(key)
        return evaluator.flag if evaluator is not None else self._registry.get(key)

    def definitions(self) -> Mapping[str, Definition]:
        """The definitions in force, after merging the sources (overrides not included)."""
        return self._snapshot.definitions

    @property
    def problems(self) -> Mapping[str, str]:
        """Definitions or overrides that did not compile; those flags resolve with reason ERROR."""
        return self._snapshot.problems

    def add_hook(self, hook: EvaluationHook) -> None:
        self._hooks = (*self._hooks, hook)

    def subscribe(self, listener: "Callable[[Resolver], None]") -> Callable[[], None]:
        """Calls `listener(resolver)` after every swap of definitions; returns a function that unsubscribes."""
        return self._listeners.add(listener)

    def refresh(self) -> None:
        """Recompiles from the sources and swaps atomically (sources call this when they change)."""
        current = self._source_definitions()
        if all(new is old for new, old in zip(current, self._compiled_from, strict=True)):
            return  # a source only reported an error: its last good definitions still stand
        self._compiled_from = current
        self._snapshot = self._compile()
        self._listeners.notify(self)

    def _evaluate(self, evaluator: Evaluator, flag: Flag[T], context: EvaluationContext) -> Resolution[T]:
        try:
            resolution = evaluator.evaluate(context)
        except EvaluationError as exc:
            return error_resolution(flag, exc.code, str(exc))
        except Exception as exc:  # the request path never sees a definition's failure
            return error_resolution(flag, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")
        if resolution.is_code_default and evaluator.flag is not flag:
            return replace(resolution, value=flag.default)  # the code default is the caller's declaration's
        return resolution

    def _run_hooks(self, key: str, context: EvaluationContext, resolution: Resolution[Any]) -> None:
        for hook in self._hooks:
            try:
                hook(key, context, resolution)
            except Exception:
                if id(hook) not in self._failed_hooks:  # once per hook, not once per request
                    self._failed_hooks.add(id(hook))
                    logger.exception("flag evaluation hook %r failed; further failures are not logged", hook)

    def _source_definitions(self) -> tuple[Mapping[str, Definition], ...]:
        return tuple(source.definitions for source in self._sources)

    def _compile(self) -> _Snapshot:
        definitions: dict[str, Definition] = {}
        for source_definitions in self._compiled_from:
            definitions.update(source_definitions)
        evaluators: dict[str, Evaluator] = {}
        problems: dict[str, str] = {}
        for key, definition in definitions.items():
            flag = self._registry.get(key) or flag_for_definition(definition)
            try:
                evaluators[key] = compile_definition(definition, flag)
            except (TypeError, ValueError) as exc:
                problems[key] = str(exc)
                evaluators[key] = Fixed(flag, error_resolution(flag, ErrorCode.TYPE_MISMATCH, str(exc)))
        for key, text in self._overrides.items():
            pinned = evaluators[key].flag if key in evaluators else self._registry.get(key)
            if pinned is None:
                problems[key] = f"override for unknown flag {key!r}"
                continue
            try:
                evaluators[key] = compile_override(pinned, text, definitions.get(key))
            except ValueError as exc:
                problems[key] = str(exc)
                evaluators[key] = Fixed(pinned, error_resolution(pinned, ErrorCode.PARSE_ERROR, str(exc)))
        for key, problem in problems.items():
            logger.error("flag %r: %s", key, problem)
        return _Snapshot(evaluators, definitions, problems)
