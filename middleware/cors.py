"""CORSMiddleware: Starlette's, answering preflights itself, plus `Vary: Origin` on every answer that needs it.

Starlette adds `Vary: Origin` only where it echoes an allowed origin. An answer to a request from another
origin, or with no Origin at all, carries no CORS fields; a shared cache downstream that stored it without
`Vary: Origin` would hand it to an allowed origin, whose browser would then refuse it. So every answer whose
CORS fields depend on the Origin says so.
"""

from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware

from middleware.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORSMiddleware"]


class CORSMiddleware:
    """Starlette's CORSMiddleware with the same options (preflights never reach `app`), varying by Origin
    whenever the answer depends on it: always, unless any origin is allowed without credentials."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allow_origins: Sequence[str] = (),
        allow_methods: Sequence[str] = ("GET",),
        allow_headers: Sequence[str] = (),
        expose_headers: Sequence[str] = (),
        allow_credentials: bool = False,
        max_age: int = 600,
    ) -> None:
        self.app = StarletteCORSMiddleware(
            app,
            allow_origins=allow_origins,
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            expose_headers=expose_headers,
            allow_credentials=allow_credentials,
            max_age=max_age,
        )
        self.varies = "*" not in allow_origins or allow_credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.varies:
            await self.app(scope, receive, send)
            return

        async def send_varying(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])  # MutableHeaders(scope=...) needs the key
                headers = MutableHeaders(scope=message)
                varies_by = {token.strip().lower() for token in headers.get("vary", "").split(",")}
                if not varies_by & {"origin", "*"}:
                    headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_varying)
