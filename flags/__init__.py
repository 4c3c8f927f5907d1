"""Typed feature flags: declared once, defined in files, Redis or flagd JSON, resolved in microseconds.

    registry = Registry()
    NEW_CHECKOUT = registry.bool("new-checkout", default=False, description="The one-page checkout")
    resolver = Resolver(registry, sources=[FileSource("flags.yaml", registry=registry)],
                        overrides=env_overrides())
    if resolver.resolve(NEW_CHECKOUT, EvaluationContext(user_id, {"org": org_id})): ...

No web dependencies: usable from any app, CLI or worker. The sources (`asgi_gateway.flags.sources`: memory, watched
file, Redis, environment overrides) and the OpenFeature provider (`asgi_gateway.flags.openfeature`) are imported from
their own modules.
"""

from asgi_gateway.flags.definitions import (
    Definition,
    FlagdDocument,
    FlagDefinition,
    FlagDefinitions,
    FlagdFlag,
    FlagFile,
    Rule,
    validation_context,
)
from asgi_gateway.flags.documents import load_file, parse_document
from asgi_gateway.flags.header import format_flags_header, parse_flags_header
from asgi_gateway.flags.model import EvaluationContext, Flag, FlagKind
from asgi_gateway.flags.registry import DuplicateFlagError, Registry
from asgi_gateway.flags.resolution import ErrorCode, Reason, Resolution
from asgi_gateway.flags.resolver import EvaluationHook, FlagSource, Resolver
from asgi_gateway.flags.rollout import bucket

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
