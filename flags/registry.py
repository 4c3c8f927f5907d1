"""One declaration per flag key: the typed handles code refers to, and the list docs and admin pages show."""

import builtins
from collections.abc import Iterable, Iterator
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, JsonValue

from asgi_gateway.flags.compiler import flag_for_definition
from asgi_gateway.flags.definitions import Definition
from asgi_gateway.flags.model import BOOL, FLOAT, INT, JSON, STR, Flag, enum_codec, model_codec

T = TypeVar("T")
E = TypeVar("E", bound=Enum)
M = TypeVar("M", bound=BaseModel)


class DuplicateFlagError(ValueError):
    """A second declaration for a key: two flags sharing a key would share their definitions."""


class Registry:
    """Declares flags: `NEW_CHECKOUT = registry.bool("new-checkout", default=False, description=...)`."""

    def __init__(self) -> None:
        self._flags: dict[builtins.str, Flag[Any]] = {}

    def add(self, flag: Flag[T]) -> Flag[T]:
        if flag.key in self._flags:
            raise DuplicateFlagError(f"flag {flag.key!r} is already declared: {self._flags[flag.key]!r}")
        self._flags[flag.key] = flag
        return flag

    def bool(self, key: builtins.str, *, default: builtins.bool, description: builtins.str = "") -> Flag[builtins.bool]:
        return self.add(Flag(key, default, description, BOOL))

    def int(self, key: builtins.str, *, default: builtins.int, description: builtins.str = "") -> Flag[builtins.int]:
        return self.add(Flag(key, default, description, INT))

    def float(
        self, key: builtins.str, *, default: builtins.float, description: builtins.str = ""
    ) -> Flag[builtins.float]:
        return self.add(Flag(key, default, description, FLOAT))

    def str(self, key: builtins.str, *, default: builtins.str, description: builtins.str = "") -> Flag[builtins.str]:
        return self.add(Flag(key, default, description, STR))

    def enum(self, key: builtins.str, enum: type[E], *, default: E, description: builtins.str = "") -> Flag[E]:
        """Values travel as the members' values (all strings or all integers)."""
        return self.add(Flag(key, default, description, enum_codec(enum)))

    def json(self, key: builtins.str, *, default: JsonValue, description: builtins.str = "") -> Flag[JsonValue]:
        return self.add(Flag(key, default, description, JSON))

    def model(self, key: builtins.str, model: type[M], *, default: M, description: builtins.str = "") -> Flag[M]:
        """Values travel as JSON objects and are validated by `model` when definitions are loaded."""
        return self.add(Flag(key, default, description, model_codec(model)))

    def declare(self, definitions: Iterable[Definition]) -> builtins.list[Flag[Any]]:
        """The flags for these definitions: the ones declared in code, and new ones declared by the definitions
        themselves (how a gateway gets flags for the `flags:` of its route files)."""
        return [self._flags.get(d.key) or self.add(flag_for_definition(d)) for d in definitions]

    def get(self, key: builtins.str) -> Flag[Any] | None:
        return self._flags.get(key)

    def __getitem__(self, key: builtins.str) -> Flag[Any]:
        return self._flags[key]

    def __contains__(self, key: object) -> builtins.bool:
        return key in self._flags

    def __iter__(self) -> Iterator[Flag[Any]]:
        return iter(self._flags.values())

    def __len__(self) -> builtins.int:
        return len(self._flags)
