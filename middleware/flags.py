"""FlagsMiddleware: resolves a route's flags once per request and tells the app and the upstream.

Evaluation context from request headers (user id -> targeting key, org id -> the `org` attribute), then
`scope["state"]["flags"] = {key: Resolution}` and `scope["state"]["flag_context"]` for everything inside
(routing by flag, cache keys, handlers via `request.state.flags`). The forward header
(`x-feature-flags: new-profile=true; pricing=b`) replaces whatever the client sent under that name, so a
client can never choose its own flags upstream.
"""

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from asgi_gateway.flags.header import format_flags_header
from asgi_gateway.flags.model import ORG_ATTRIBUTE, EvaluationContext, Flag
from asgi_gateway.flags.resolution import Resolution
from asgi_gateway.flags.resolver import Resolver
from asgi_gateway.middleware.types import ASGIApp, Receive, Scope, Send

T = TypeVar("T")

STATE_FLAGS = "flags"
STATE_CONTEXT = "flag_context"


class FlagsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        resolver: Resolver,
        flags: Sequence[Flag[Any]],
        user_header: str = "x-user-id",
        org_header: str = "x-org-id",
        forward_header: str = "x-feature-flags",
    ) -> None:
        keys = [flag.key for flag in flags]
        if len(set(keys)) != len(keys):
            raise ValueError(f"flags named twice: {sorted({k for k in keys if keys.count(k) > 1})}")
        self.app, self.resolver, self.flags = app, resolver, tuple(flags)
        self._user = user_header.lower().encode("latin-1")
        self._org = org_header.lower().encode("latin-1")
        self._forward = forward_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        user = org = None
        headers: list[tuple[bytes, bytes]] = []
        for name, value in scope["headers"]:
            if name == self._forward:
                continue  # never the client's
            if name == self._user:
                user = value.decode("latin-1").strip() or None
            elif name == self._org:
                org = value.decode("latin-1").strip() or None
            headers.append((name, value))
        context = EvaluationContext(user, {ORG_ATTRIBUTE: org} if org is not None else {})
        resolutions = {flag.key: self.resolver.details(flag, context) for flag in self.flags}
        if resolutions:
            headers.append((self._forward, format_flags_header(resolutions).encode("latin-1")))
        state = scope.setdefault("state", {})
        state[STATE_FLAGS], state[STATE_CONTEXT] = resolutions, context
        scope["headers"] = headers
        await self.app(scope, receive, send)


def flag_resolutions(scope: Scope) -> Mapping[str, Resolution[Any]]:
    """Every flag FlagsMiddleware resolved for this request, by key (empty outside one)."""
    resolutions: Mapping[str, Resolution[Any]] = scope.get("state", {}).get(STATE_FLAGS, {})
    return resolutions


def flag_resolution(scope: Scope, flag: Flag[T]) -> Resolution[T] | None:
    """The typed resolution of one declared flag, if FlagsMiddleware resolved it for this request."""
    resolution: Resolution[T] | None = flag_resolutions(scope).get(flag.key)
    return resolution


def flag_context(scope: Scope) -> EvaluationContext | None:
    """The evaluation context FlagsMiddleware built for this request."""
    context: EvaluationContext | None = scope.get("state", {}).get(STATE_CONTEXT)
    return context
