"""Typed feature flags: declared once, defined in files, Redis or flagd JSON, resolved in microseconds.

    registry = Registry()
    NEW_CHECKOUT = registry.bool("new-checkout", default=False, description="The one-page checkout")
    resolver = Resolver(registry, sources=[FileSource("flags.yaml", registry=registry)],
                        overrides=env_overrides())
    if resolver.resolve(NEW_CHECKOUT, EvaluationContext(user_id, {"org": org_id})): ...

No web dependencies: usable from any app, CLI or worker. The sources (`flags.sources`: memory, watched
file, Redis, environment overrides) and the OpenFeature provider (`flags.openfeature`) are imported from
their own modules.
"""

from flags.definitions import (
    Definition,
    FlagdDocument,
    FlagDefinition,
    FlagDefinitions,
    FlagdFlag,
    FlagFile,
    Rule,
    validation_context,
)
from flags.documents import load_file, parse_document
from flags.header import format_flags_header, parse_flags_header
from flags.model import EvaluationContext, Flag, FlagKind
from flags.registry import DuplicateFlagError, Registry
from flags.resolution import ErrorCode, Reason, Resolution
from flags.resolver import EvaluationHook, FlagSource, Resolver
from flags.rollout import bucket

__all__ = [
    "Definition",
    "DuplicateFlagError",
    "ErrorCode",
    "EvaluationContext",
    "EvaluationHook",
    "Flag",
    "FlagDefinition",
    "FlagDefinitions",
    "FlagFile",
    "FlagKind",
    "FlagSource",
    "FlagdDocument",
    "FlagdFlag",
    "Reason",
    "Registry",
    "Resolution",
    "Resolver",
    "Rule",
    "bucket",
    "format_flags_header",
    "load_file",
    "parse_document",
    "parse_flags_header",
    "validation_context",
]
