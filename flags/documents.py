"""Reading definitions from files and JSON: native or flagd format, told apart by flagd's required `state`."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import TypeAdapter

from asgi_gateway.flags.definitions import (
    Definition,
    FlagdDocument,
    FlagDefinition,
    FlagdFlag,
    FlagFile,
    validation_context,
)

if TYPE_CHECKING:
    from asgi_gateway.flags.registry import Registry

Definitions = Mapping[str, Definition]

_FLAGD_FLAG = TypeAdapter(FlagdFlag)
_NATIVE_FLAG = TypeAdapter(FlagDefinition)


def is_flagd(flag: object) -> bool:
    """flagd requires `state` on every flag; a native definition never has one."""
    return isinstance(flag, Mapping) and "state" in flag


def parse_document(data: object, registry: "Registry | None" = None) -> dict[str, Definition]:
    """A parsed file (`{"flags": {...}}`) as definitions; raises pydantic's ValidationError with locs from
    the document root (`('flags', 'new-profile', 'rules', 0, 'value')`)."""
    context = validation_context(registry)
    flags = data.get("flags") if isinstance(data, Mapping) else None
    if isinstance(flags, Mapping) and any(is_flagd(flag) for flag in flags.values()):
        return dict(FlagdDocument.model_validate(data, context=context).definitions())
    return dict(FlagFile.model_validate(data, context=context).flags.root)


def load_file(path: Path, registry: "Registry | None" = None) -> dict[str, Definition]:
    """Reads a YAML or JSON flag file (JSON by its `.json` suffix; YAML otherwise, which reads JSON too)."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return parse_document(data, registry)


def definition_from_json(key: str, text: str | bytes, registry: "Registry | None" = None) -> Definition:
    """One definition stored on its own (in Redis): a native definition or a single flagd flag."""
    raw: Any = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"flag {key!r}: expected a JSON object")
    adapter: TypeAdapter[Any] = _FLAGD_FLAG if is_flagd(raw) else _NATIVE_FLAG
    definition: Definition = adapter.validate_python({**raw, "key": key}, context=validation_context(registry))
    return definition


def definition_to_json(definition: Definition) -> str:
    """The inverse of definition_from_json."""
    return definition.model_dump_json(by_alias=True, exclude_unset=True)
